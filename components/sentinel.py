"""Sentinel: a StatefulSet (stable identity per pod), its headless and client Services, and a PDB.

A StatefulSet rather than a Deployment: each Sentinel keeps its name, hence its DNS name and
its ``myid`` (start-sentinel.sh), across restarts. A Sentinel that came back with a new identity
would be counted twice by its peers and could block the majority a failover needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import acl, pods
from components import topology as t
from components.exporter import exporter_container, exporter_volumes
from components.renderers.scripts import SENTINEL_SCRIPTS, render_scripts
from components.renderers.sentinel_conf import render_sentinel_conf
from components.settings import Settings

COMPONENT = "sentinel"


# The only passwords a Sentinel pod reads: its own requirepass, the ACL user it monitors the data
# nodes as, and the probe user its scripts check pods with. Not the others (admin, app, ...): a
# compromised Sentinel must not hand out the keys to the data.
SENTINEL_SECRET_KEYS = (acl.SENTINEL_PASSWORD_KEY, acl.SENTINEL.secret_key, acl.PROBE.secret_key)

@dataclass(frozen=True)
class SentinelArgs:
    settings: Settings
    namespace: pulumi.Input[str]
    secret_name: pulumi.Input[str]
    # The cert-manager Secret with this workload's certificate; required when settings.tls.enabled.
    tls_secret_name: pulumi.Input[str] | None = None


class Sentinel(pulumi.ComponentResource):
    """The Sentinels that watch the data plane and tell clients where the master is."""

    service_address: pulumi.Output[str]

    def __init__(self, name: str, args: SentinelArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dict-redis:index:Sentinel", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        topo = t.Topology.of(s)
        selector = topo.labels(COMPONENT)
        labels = topo.object_labels(COMPONENT)
        port = {"name": "sentinel", "port": t.SENTINEL_PORT, "target_port": "sentinel"}

        scripts = render_scripts(s)
        config_data = {"sentinel.conf": render_sentinel_conf(s), **{n: scripts[n] for n in SENTINEL_SCRIPTS}}
        tls_volumes = pods.tls_volumes(s, args.tls_secret_name)
        config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"name": topo.sentinel_config, "namespace": args.namespace, "labels": labels},
            data=config_data,
            opts=child,
        )

        headless = k8s.core.v1.Service(
            f"{name}-headless",
            metadata={"name": topo.sentinel_headless, "namespace": args.namespace, "labels": labels},
            spec={
                "cluster_ip": "None",
                # Peers must find each other by name while they are still starting.
                "publish_not_ready_addresses": True,
                "selector": selector,
                "ports": [port],
            },
            opts=child,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": topo.sentinel, "namespace": args.namespace, "labels": labels},
            spec={"type": "ClusterIP", "selector": selector, "ports": [port]},
            opts=child,
        )

        sen = s.sentinel
        probe = f"{t.SENTINEL_CONFIG_DIR}/probe-sentinel.sh"
        container = {
            "name": "sentinel",
            "image": s.image,
            "image_pull_policy": "IfNotPresent",
            "command": ["sh", f"{t.SENTINEL_CONFIG_DIR}/start-sentinel.sh"],
            "env": [
                {"name": "POD_NAME", "value_from": {"field_ref": {"field_path": "metadata.name"}}},
            ],
            "ports": [{"name": "sentinel", "container_port": t.SENTINEL_PORT, "protocol": "TCP"}],
            "resources": pods.resources(sen.resources),
            "security_context": pods.container_security_context(),
            "startup_probe": pods.exec_probe(probe, "startup", sen.probes.startup),
            "liveness_probe": pods.exec_probe(probe, "liveness", sen.probes.liveness),
            "readiness_probe": pods.exec_probe(probe, "readiness", sen.probes.readiness),
            "volume_mounts": [
                {"name": "config", "mount_path": t.SENTINEL_CONFIG_DIR, "read_only": True},
                {"name": "auth", "mount_path": t.AUTH_DIR, "read_only": True},
                *([{"name": "tls", "mount_path": t.TLS_DIR, "read_only": True}] if s.tls.enabled else []),
                {"name": "data", "mount_path": t.DATA_DIR},
                {"name": "tmp", "mount_path": "/tmp"},
            ],
        }
        sidecars = [exporter_container(s, t.SENTINEL_PORT, t.SENTINEL_CONFIG_DIR)] if s.monitoring.enabled else []
        sidecar_volumes = (
            exporter_volumes(s, t.SENTINEL_PORT, args.secret_name, args.tls_secret_name) if s.monitoring.enabled else []
        )
        k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata={"name": topo.sentinel, "namespace": args.namespace, "labels": labels},
            spec={
                "service_name": topo.sentinel_headless,
                "replicas": sen.replicas,
                "pod_management_policy": "Parallel",
                "update_strategy": {"type": "RollingUpdate"},
                "selector": {"match_labels": selector},
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {"checksum/config": pods.config_checksum(config_data)},
                    },
                    "spec": {
                        "automount_service_account_token": False,
                        "enable_service_links": False,
                        "security_context": pods.pod_security_context(),
                        **pods.spread(selector, sen.anti_affinity),
                        "containers": [container, *sidecars],
                        "volumes": [
                            {"name": "config", "config_map": {"name": topo.sentinel_config, "default_mode": 0o444}},
                            {
                                "name": "auth",
                                "secret": {
                                    "secret_name": args.secret_name,
                                    "default_mode": 0o440,
                                    "items": [{"key": k, "path": k} for k in SENTINEL_SECRET_KEYS],
                                },
                            },
                            *tls_volumes,
                            *sidecar_volumes,
                            # Sentinel's own rewritten config (holds the password): memory only. A
                            # restarted container reuses it (start-sentinel.sh); a new pod starts
                            # over from its peers.
                            {"name": "data", "empty_dir": {"medium": "Memory", "size_limit": "8Mi"}},
                            {"name": "tmp", "empty_dir": {"size_limit": "16Mi"}},
                        ],
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[config, headless]),
        )

        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={"name": topo.sentinel, "namespace": args.namespace, "labels": labels},
            spec={"max_unavailable": 1, "selector": {"match_labels": selector}},
            opts=child,
        )

        # Resolved once the Service exists, so a consumer of the output depends on it.
        self.service_address = service.metadata.apply(lambda _: topo.sentinel_service_address)
        self.register_outputs({"service_address": self.service_address})
