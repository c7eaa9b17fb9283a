"""TLS certificates for the data nodes and the Sentinels, issued by cert-manager.

One cert-manager ``Certificate`` per workload: its Secret (``tls.crt``, ``tls.key``, ``ca.crt``)
is mounted in every pod of that StatefulSet, so the certificate names every pod's stable DNS name
plus the Services in front of them. cert-manager renews it before expiry and the kubelet updates
the mounted files; Redis reads them again only at start, so a renewal takes effect at the next
roll (the certificate lives ``tls.durationHours`` and is renewed ``tls.renewBeforeHours`` early).

Why cert-manager rather than a stack-managed CA (pulumi-tls): the private keys never enter the
Pulumi state, and renewal needs no ``pulumi up``. The issuer (``tls.issuerName``) is the cluster's.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import topology as t
from components.settings import Settings


def redis_dns_names(topo: t.Topology) -> list[str]:
    """Every Redis pod's name (what Sentinel hands out and replicas dial) and the headless Service."""
    domain = f"{topo.redis_headless}.{topo.namespace}"
    pods = [topo.redis_pod_host(i) for i in range(topo.redis_replicas)]
    return [*pods, f"{domain}.{t.CLUSTER_DOMAIN}", f"{domain}.svc", domain]


def sentinel_dns_names(topo: t.Topology) -> list[str]:
    """Every Sentinel pod's name, the headless Service and the client Service."""
    headless = f"{topo.sentinel_headless}.{topo.namespace}"
    service = f"{topo.sentinel}.{topo.namespace}"
    pods = [topo.sentinel_pod_host(i) for i in range(topo.sentinel_replicas)]
    return [*pods, f"{headless}.{t.CLUSTER_DOMAIN}", f"{service}.{t.CLUSTER_DOMAIN}", f"{service}.svc", service]


def certificate_spec(settings: Settings, secret_name: str, dns_names: list[str]) -> dict[str, object]:
    tls = settings.tls
    return {
        "secretName": secret_name,
        "duration": f"{tls.duration_hours}h",
        "renewBefore": f"{tls.renew_before_hours}h",
        "commonName": dns_names[0],
        "dnsNames": dns_names,
        # Servers for clients, and clients of each other (replication, Sentinel to Redis).
        "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "issuerRef": {"name": tls.issuer_name, "kind": tls.issuer_kind, "group": "cert-manager.io"},
    }


@dataclass(frozen=True)
class ClusterCertificatesArgs:
    settings: Settings
    namespace: pulumi.Input[str]


class ClusterCertificates(pulumi.ComponentResource):
    """The Redis and Sentinel certificates; their Secrets are named by the topology."""

    redis_secret_name: pulumi.Output[str]
    sentinel_secret_name: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterCertificatesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dict-redis:index:ClusterCertificates", name, None, opts)
        s = args.settings
        topo = t.Topology.of(s)
        made: dict[str, pulumi.Output[str]] = {}
        for role, secret, names in (
            ("redis", topo.redis_tls_secret, redis_dns_names(topo)),
            ("sentinel", topo.sentinel_tls_secret, sentinel_dns_names(topo)),
        ):
            cert = k8s.apiextensions.CustomResource(
                f"{name}-{role}",
                api_version="cert-manager.io/v1",
                kind="Certificate",
                metadata={"name": secret, "namespace": args.namespace, "labels": topo.common_labels},
                spec=certificate_spec(s, secret, names),
                opts=pulumi.ResourceOptions(parent=self),
            )
            made[role] = cert.metadata.apply(lambda _m, secret=secret: secret)
        self.redis_secret_name = made["redis"]
        self.sentinel_secret_name = made["sentinel"]
        self.register_outputs(
            {"redis_secret_name": self.redis_secret_name, "sentinel_secret_name": self.sentinel_secret_name}
        )
