"""The redis_exporter sidecar that Redis pods and Sentinel pods both carry (plain dicts, no resources).

One exporter per instance, in the instance's own pod, scraping ``localhost``: an exporter behind a
Service would answer for a different pod on every scrape (notes §4). The sidecar is hardened and
sized like the main containers (``components.pods``).
"""

from __future__ import annotations

from typing import Any

import pulumi

from components import pods
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


def exporter_auth_env(secret_name: pulumi.Input[str]) -> list[dict[str, Any]]:
    """How the exporter authenticates: the stack password from the Secret, as ``REDIS_PASSWORD``.

    The one place that decides the exporter's credentials (an ACL user or TLS later changes only
    this). An env var from ``secretKeyRef`` rather than the mounted file because redis_exporter 1.45
    reads a password only from argv, env or a JSON password map; env keeps it off argv.
    """
    return [
        {
            "name": "REDIS_PASSWORD",
            "value_from": {"secret_key_ref": {"name": secret_name, "key": t.PASSWORD_KEY}},
        }
    ]


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
        "env": exporter_auth_env(secret_name),
        "ports": [{"name": t.METRICS_PORT_NAME, "container_port": t.EXPORTER_PORT, "protocol": "TCP"}],
        "resources": pods.resources(monitoring.exporter_resources),
        "security_context": pods.container_security_context(),
        # /health answers while the exporter runs, even when Redis is down: restarting the exporter
        # would not bring Redis back, and redis_up = 0 is what the alerts need to see. No readiness
        # probe: the pod's readiness (and so its PDB) must depend on Redis, not on its exporter.
        "liveness_probe": {**health, "period_seconds": 20, "timeout_seconds": 3, "failure_threshold": 3},
    }
