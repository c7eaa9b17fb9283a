"""A Redis data tier: config, headless Service, StatefulSet (1 master + replicas) and its PDB.

The stack has two (``components.topology.TIERS``): the LRU **cache** and the **state** tier that
never evicts (the decisions: idempotency records, rate-limit counters, workflow versions). Both
are built here from their own settings block (``redis``, ``state``) with the same hardening,
probes, preStop and spreading; the Sentinels monitor each master under its own name.

There is deliberately no Service that load-balances over the data pods: writes sent to a random
pod hit a replica and fail with READONLY. Clients find the master through Sentinel.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import acl, pods
from components import topology as t
from components.exporter import exporter_container, exporter_volumes
from components.renderers.redis_conf import render_redis_conf
from components.renderers.scripts import REDIS_SCRIPTS, render_scripts
from components.settings import Settings


@dataclass(frozen=True)
class RedisDataPlaneArgs:
    settings: Settings
    namespace: pulumi.Input[str]
    secret_name: pulumi.Input[str]
    # The cert-manager Secret with this workload's certificate; required when settings.tls.enabled.
    tls_secret_name: pulumi.Input[str] | None = None
    # Which data tier: "cache" (settings.redis) or "state" (settings.state).
    tier: t.TierName = "cache"


class RedisDataPlane(pulumi.ComponentResource):
    """Redis pods that elect nothing themselves: each asks Sentinel whom to follow at start."""

    statefulset_name: pulumi.Output[str]
    headless_service_name: pulumi.Output[str]
    master_name: str

    def __init__(self, name: str, args: RedisDataPlaneArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dict-redis:index:RedisDataPlane", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        topo = t.Topology.of(s)
        tier = topo.tier(args.tier)
        selector = tier.selector
        labels = {**tier.pod_labels, **topo.common_labels}

        scripts = render_scripts(s, REDIS_SCRIPTS, args.tier)
        config_data = {
            "redis.conf": render_redis_conf(s, args.tier),
            # Users and rules only; start-redis.sh adds the password hashes from the Secret.
            "users.acl": acl.render_acl_template(tier=args.tier),
            **{n: scripts[n] for n in REDIS_SCRIPTS},
        }
        tls_volumes = pods.tls_volumes(s, args.tls_secret_name)
        config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"name": tier.config, "namespace": args.namespace, "labels": labels},
            data=config_data,
            opts=child,
        )

        headless = k8s.core.v1.Service(
            f"{name}-headless",
            metadata={"name": tier.headless, "namespace": args.namespace, "labels": labels},
            spec={
                "cluster_ip": "None",
                # DNS names must resolve before a pod is ready: replicas and Sentinels reach a
                # starting master by its name, and readiness waits for replication.
                "publish_not_ready_addresses": True,
                "selector": selector,
                "ports": [{"name": "redis", "port": t.REDIS_PORT, "target_port": "redis"}],
            },
            opts=child,
        )

        r = tier.settings_of(s)
        probe = f"{t.REDIS_CONFIG_DIR}/probe-redis.sh"
        container = {
            "name": "redis",
            "image": s.image,
            "image_pull_policy": "IfNotPresent",
            "command": ["sh", f"{t.REDIS_CONFIG_DIR}/start-redis.sh"],
            "env": [
                {"name": "POD_NAME", "value_from": {"field_ref": {"field_path": "metadata.name"}}},
            ],
            "ports": [{"name": "redis", "container_port": t.REDIS_PORT, "protocol": "TCP"}],
            "resources": pods.resources(r.resources),
            "security_context": pods.container_security_context(),
            "startup_probe": pods.exec_probe(probe, "startup", r.probes.startup),
            "liveness_probe": pods.exec_probe(probe, "liveness", r.probes.liveness),
            "readiness_probe": pods.exec_probe(probe, "readiness", r.probes.readiness),
            "lifecycle": {"pre_stop": {"exec": {"command": ["sh", f"{t.REDIS_CONFIG_DIR}/prestop-redis.sh"]}}},
            "volume_mounts": [
                {"name": "config", "mount_path": t.REDIS_CONFIG_DIR, "read_only": True},
                {"name": "auth", "mount_path": t.AUTH_DIR, "read_only": True},
                *([{"name": "tls", "mount_path": t.TLS_DIR, "read_only": True}] if s.tls.enabled else []),
                {"name": "run", "mount_path": t.RUN_DIR},
                {"name": "tmp", "mount_path": "/tmp"},
                {"name": "data", "mount_path": t.DATA_DIR},
            ],
        }
        sidecars = [exporter_container(s, t.REDIS_PORT, t.REDIS_CONFIG_DIR, args.tier)] if s.monitoring.enabled else []
        sidecar_volumes = (
            exporter_volumes(s, t.REDIS_PORT, args.secret_name, args.tls_secret_name) if s.monitoring.enabled else []
        )
        statefulset = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata={"name": tier.statefulset, "namespace": args.namespace, "labels": labels},
            spec={
                "service_name": tier.headless,
                "replicas": r.replicas,
                # Parallel is safe because only ordinal 0 may elect itself (start-redis.sh), and it
                # avoids OrderedReady's deadlock: after a full restart, a replica waiting for a dead
                # master never gets ready, so the pods after it would never start.
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
                        # Service env vars (REDIS_PORT=tcp://...) would shadow the scripts' settings.
                        "enable_service_links": False,
                        "termination_grace_period_seconds": r.termination_grace_period_seconds,
                        "security_context": pods.pod_security_context(),
                        **pods.spread(selector, r.anti_affinity),
                        "containers": [container, *sidecars],
                        "volumes": [
                            {"name": "config", "config_map": {"name": tier.config, "default_mode": 0o444}},
                            {"name": "auth", "secret": {"secret_name": args.secret_name, "default_mode": 0o440}},
                            *tls_volumes,
                            *sidecar_volumes,
                            # The effective redis.conf holds the password: memory only, never on disk.
                            {"name": "run", "empty_dir": {"medium": "Memory", "size_limit": "8Mi"}},
                            {"name": "tmp", "empty_dir": {"size_limit": "64Mi"}},
                        ],
                    },
                },
                "volume_claim_templates": [
                    {
                        # Without the tier label: a claim template cannot change on a live StatefulSet.
                        "metadata": {"name": "data", "labels": {**selector, **topo.common_labels}},
                        "spec": {
                            "access_modes": ["ReadWriteOnce"],
                            **({"storage_class_name": r.storage.class_name} if r.storage.class_name else {}),
                            "resources": {"requests": {"storage": r.storage.size}},
                        },
                    }
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[config, headless]),
        )

        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={"name": tier.statefulset, "namespace": args.namespace, "labels": labels},
            spec={"max_unavailable": 1, "selector": {"match_labels": selector}},
            opts=child,
        )

        self.master_name = tier.master_name
        self.statefulset_name = statefulset.metadata.apply(lambda m: m["name"])
        self.headless_service_name = headless.metadata.apply(lambda m: m["name"])
        self.register_outputs(
            {"statefulset_name": self.statefulset_name, "headless_service_name": self.headless_service_name}
        )
