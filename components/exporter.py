"""The redis_exporter sidecar that Redis pods and Sentinel pods both carry (plain dicts, no resources).

One exporter per instance, in the instance's own pod, scraping ``localhost``: an exporter behind a
Service would answer for a different pod on every scrape (notes §4). The sidecar is hardened and
sized like the main containers (``components.pods``).
"""

from __future__ import annotations

from typing import Any

import pulumi

from components import acl, pods
from components import topology as t
from components.settings import MonitoringSettings

# Flags every exporter runs with; the live metric check starts the Debian binary with the same ones
# so it sees the metric names the sidecar exports. Go's flag package takes one or two dashes.
EXPORTER_FLAGS = ("-redis-only-metrics",)


def exporter_args(redis_port: int, *, host: str = "localhost", listen: str = f":{t.EXPORTER_PORT}") -> list[str]:
    """Command-line flags for one exporter: which local instance to scrape and where to listen.

    Nothing secret goes here: argv is visible to every process in the pod and in ``ps``.
    """
    return [f"-redis.addr=redis://{host}:{redis_port}", f"-web.listen-address={listen}", *EXPORTER_FLAGS]


def exporter_auth_env(secret_name: pulumi.Input[str], redis_port: int) -> list[dict[str, Any]]:
    """How the exporter authenticates: its ACL user on a data node, the Sentinels' password on a Sentinel.

    The one place that decides the exporter's credentials. An env var from ``secretKeyRef`` rather
    than the mounted file because redis_exporter 1.45 reads a password only from argv, env or a JSON
    password map; env keeps it off argv.
    """
    def password_from(key: str) -> dict[str, Any]:
        return {"name": "REDIS_PASSWORD", "value_from": {"secret_key_ref": {"name": secret_name, "key": key}}}

    if redis_port == t.SENTINEL_PORT:
        return [password_from(acl.SENTINEL_PASSWORD_KEY)]
    return [{"name": "REDIS_USER", "value": acl.EXPORTER.name}, password_from(acl.EXPORTER.secret_key)]


def exporter_container(
    monitoring: MonitoringSettings, redis_port: int, secret_name: pulumi.Input[str]
) -> dict[str, Any]:
    """The sidecar for the instance on ``redis_port`` (6379: Redis, 26379: Sentinel)."""
    health: dict[str, Any] = {"http_get": {"path": "/health", "port": t.METRICS_PORT_NAME}}
    return {
        "name": t.EXPORTER_CONTAINER,
        "image": monitoring.exporter_image,
        "image_pull_policy": "IfNotPresent",
        "args": exporter_args(redis_port),
        "env": exporter_auth_env(secret_name, redis_port),
        "ports": [{"name": t.METRICS_PORT_NAME, "container_port": t.EXPORTER_PORT, "protocol": "TCP"}],
        "resources": pods.resources(monitoring.exporter_resources),
        "security_context": pods.container_security_context(),
        # /health answers while the exporter runs, even when Redis is down: restarting the exporter
        # would not bring Redis back, and redis_up = 0 is what the alerts need to see. No readiness
        # probe: the pod's readiness (and so its PDB) must depend on Redis, not on its exporter.
        "liveness_probe": {**health, "period_seconds": 20, "timeout_seconds": 3, "failure_threshold": 3},
    }
