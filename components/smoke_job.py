"""The post-deploy smoke Job: the smoke suite run inside the cluster, through the Sentinels.

It has to run in the cluster: Sentinel hands out the pods' in-cluster DNS names, which nothing
outside resolves. The Job's name carries a hash of everything it tests (the stack's settings and
``smoke.runId``), so a deploy that changes the cluster replaces the Job and the suite runs again;
its pod carries the layer's own label, so the NetworkPolicy lets it reach Redis and Sentinel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import acl, pods
from components import topology as t
from components.settings import Settings

COMPONENT = "smoke"


def smoke_args(settings: Settings) -> list[str]:
    """The runner's command line (``python -m smoke ...``); the password comes from a file."""
    topo = t.Topology.of(settings)
    args = ["--report", "-", "cluster", "--master-name", settings.master_name]
    args += ["--state-master-name", settings.state.master_name]
    args += ["--replicas", str(settings.redis.replicas - 1), "--state-replicas", str(settings.state.replicas - 1)]
    for address in topo.sentinel_addrs:
        args += ["--sentinel", address]
    if settings.smoke.failover:
        args.append("--failover")
    return args


def job_name(settings: Settings) -> str:
    """``redis-smoke-<hash>``: a new name (a new run) whenever what it tests changes."""
    tested = settings.model_dump_json(exclude={"redis_password"})
    return f"redis-smoke-{hashlib.sha256(tested.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class SmokeJobArgs:
    settings: Settings
    namespace: pulumi.Input[str]
    secret_name: pulumi.Input[str]
    # The Redis certificate's Secret: only its ca.crt is mounted, to verify the servers.
    tls_secret_name: pulumi.Input[str] | None = None


def smoke_env(settings: Settings) -> list[dict[str, str]]:
    """Who the suite authenticates as (the application user) and where its secrets are mounted."""
    env = [
        {"name": "REDIS_USERNAME", "value": acl.APPLICATION.name},
        {"name": "REDIS_PASSWORD_FILE", "value": f"{t.AUTH_DIR}/{acl.APPLICATION.secret_key}"},
        {"name": "SENTINEL_PASSWORD_FILE", "value": f"{t.AUTH_DIR}/{acl.SENTINEL_PASSWORD_KEY}"},
    ]
    if settings.tls.enabled:
        env.append({"name": "REDIS_TLS_CA_FILE", "value": f"{t.TLS_DIR}/ca.crt"})
    return env


class SmokeJob(pulumi.ComponentResource):
    """One run of the smoke suite per change of the stack; its result is the Job's status and log."""

    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: SmokeJobArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dict-redis:index:SmokeJob", name, None, opts)
        s = args.settings
        topo = t.Topology.of(s)
        labels = {**topo.labels(COMPONENT), **topo.common_labels}
        container = {
            "name": "smoke",
            "image": s.smoke.image,
            "image_pull_policy": "IfNotPresent",
            "args": smoke_args(s),
            "env": smoke_env(s),
            "resources": pods.resources(s.smoke.resources),
            "security_context": pods.container_security_context(),
            "volume_mounts": [
                {"name": "auth", "mount_path": t.AUTH_DIR, "read_only": True},
                *([{"name": "tls", "mount_path": t.TLS_DIR, "read_only": True}] if s.tls.enabled else []),
                {"name": "tmp", "mount_path": "/tmp"},
            ],
        }
        job = k8s.batch.v1.Job(
            f"{name}-job",
            metadata={"name": job_name(s), "namespace": args.namespace, "labels": labels},
            spec={
                # A failed smoke run is a result to read, not something to retry blindly.
                "backoff_limit": 0,
                "active_deadline_seconds": 900,
                "ttl_seconds_after_finished": 7 * 24 * 3600,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restart_policy": "Never",
                        "automount_service_account_token": False,
                        "enable_service_links": False,
                        "security_context": pods.pod_security_context(),
                        "containers": [container],
                        "volumes": [
                            {
                                "name": "auth",
                                "secret": {
                                    "secret_name": args.secret_name,
                                    "default_mode": 0o440,
                                    # Only the application user's and the Sentinels' passwords.
                                    "items": [
                                        {"key": k, "path": k}
                                        for k in (acl.APPLICATION.secret_key, acl.SENTINEL_PASSWORD_KEY)
                                    ],
                                },
                            },
                            *(
                                [
                                    {
                                        "name": "tls",
                                        "secret": {
                                            "secret_name": args.tls_secret_name,
                                            "default_mode": 0o440,
                                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                        },
                                    }
                                ]
                                if s.tls.enabled
                                else []
                            ),
                            {"name": "tmp", "empty_dir": {"size_limit": "64Mi"}},
                        ],
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.job_name = job.metadata.apply(lambda m: m["name"])
        self.register_outputs({"job_name": self.job_name})
