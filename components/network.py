"""The NetworkPolicy: who may reach the cache layer, and where its pods may connect.

Ingress to 6379/26379 only from the layer's own pods (replication, Sentinel checks, the backup Job) and from pods
carrying the client labels configured in ``clientSelector``, in the namespaces listed in
``clientNamespaces`` (any namespace when empty). With monitoring on, pods in the monitoring
namespace (Prometheus) may reach the exporters' metrics port, and nothing else. Egress only to the
layer's own pods and to DNS, which the scripts and Sentinel need to resolve pod names.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import topology as t
from components.settings import Settings

# Set by Kubernetes on every namespace (1.22+), so namespaces can be selected by name.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class CacheNetworkPolicyArgs:
    settings: Settings
    namespace: pulumi.Input[str]


class CacheNetworkPolicy(pulumi.ComponentResource):
    """Default-deny for the layer's pods, with the few flows Redis, Sentinel and clients need."""

    policy_name: pulumi.Output[str]

    def __init__(self, name: str, args: CacheNetworkPolicyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dict-redis:index:CacheNetworkPolicy", name, None, opts)
        topo = t.Topology.of(args.settings)
        ports = [{"protocol": "TCP", "port": t.REDIS_PORT}, {"protocol": "TCP", "port": t.SENTINEL_PORT}]
        own_pods = {"pod_selector": {"match_labels": topo.part_of}}
        namespaces = args.settings.client_namespaces
        namespace_selector: dict[str, object] = (
            {"match_expressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(namespaces)}]}
            if namespaces
            else {}
        )
        clients = {
            "namespace_selector": namespace_selector,
            "pod_selector": {"match_labels": dict(args.settings.client_selector)},
        }
        ingress = [
            {"from": [own_pods], "ports": ports},
            {"from": [clients], "ports": ports},
        ]
        monitoring = args.settings.monitoring
        if monitoring.enabled:
            prometheus = {
                "namespace_selector": {"match_labels": {NAMESPACE_NAME_LABEL: monitoring.namespace}},
            }
            ingress.append({"from": [prometheus], "ports": [{"protocol": "TCP", "port": t.EXPORTER_PORT}]})
        policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-policy",
            metadata={
                "name": topo.network_policy,
                "namespace": args.namespace,
                "labels": topo.common_labels,
            },
            spec={
                "pod_selector": {"match_labels": topo.part_of},
                "policy_types": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": [
                    {"to": [own_pods], "ports": ports},
                    {
                        "to": [{"namespace_selector": {}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    },
                ],
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        if args.settings.backup.enabled:
            # The backup pod carries the layer's labels, so the policy above already lets it reach
            # Redis and the Sentinels; this one adds HTTPS out for S3 and STS (IRSA), whose
            # addresses are not fixed. NetworkPolicies add up: nothing else is opened.
            k8s.networking.v1.NetworkPolicy(
                f"{name}-backup-egress",
                metadata={"name": topo.backup_cronjob, "namespace": args.namespace, "labels": topo.common_labels},
                spec={
                    "pod_selector": {"match_labels": topo.labels("backup")},
                    "policy_types": ["Egress"],
                    "egress": [{"ports": [{"protocol": "TCP", "port": 443}]}],
                },
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.policy_name = policy.metadata.apply(lambda m: m["name"])
        self.register_outputs({"policy_name": self.policy_name})
