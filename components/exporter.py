"""The redis_exporter sidecar that Redis pods and Sentinel pods both carry (plain dicts, no resources).

One exporter per instance, in the instance's own pod: an exporter behind a Service would answer
for a different pod on every scrape (notes §4). The sidecar is hardened and sized like the main
containers (``components.pods``).

Credentials: the exporter runs under ``start-exporter.sh`` (the pod's script ConfigMap), which
sends only the first line of its password file (a rotation lists two) through the exporter's own
environment, never argv, and restarts it when that line changes. The sidecar mounts only what it
needs from the Secrets: its own password (or the Sentinels') and, with TLS, the CA certificate;
not the other users' passwords, not the instance's private key.

TLS: the exporter (Go) verifies the server's host name, and cert-manager's certificates name the
pods' DNS names (components/tls.py), not ``localhost``; so with TLS on the exporter dials its own
pod by its DNS name (``$(POD_NAME)`` expanded by the kubelet), which resolves to the pod itself.
"""

from __future__ import annotations

from typing import Any

import pulumi

from components import acl, pods
from components import topology as t
from components.settings import Settings

# Flags every exporter runs with; the live metric check starts the Debian binary with the same ones
# so it sees the metric names the sidecar exports. Go's flag package takes one or two dashes.
# -config-command=-: no CONFIG GET, whose reply includes masterauth (the exporter ACL user is not
# granted it); maxclients, the one config value the rules need, comes from the settings instead.
EXPORTER_FLAGS = ("-redis-only-metrics", "-config-command=-")
SCRIPT = "start-exporter.sh"
TLS_CA_FILE = f"{t.TLS_DIR}/ca.crt"
# The sidecar's own volumes (one Secret key each), next to the pod's full ones.
AUTH_VOLUME = "exporter-auth"
TLS_VOLUME = "exporter-tls"


def exporter_mode(redis_port: int) -> str:
    """``start-exporter.sh``'s first argument: which password file and whether to send a user."""
    return "sentinel" if redis_port == t.SENTINEL_PORT else "redis"


def exporter_host(settings: Settings, redis_port: int, tier: t.TierName = "cache") -> str:
    """The address the exporter dials: ``localhost`` in plaintext, its own pod's DNS name with TLS
    (a data pod's under its ``tier``'s headless Service)."""
    if not settings.tls.enabled:
        return "localhost"
    topo = t.Topology.of(settings)
    headless = topo.sentinel_headless if redis_port == t.SENTINEL_PORT else topo.tier(tier).headless
    return f"$(POD_NAME).{headless}.{topo.namespace}.{t.CLUSTER_DOMAIN}"


def exporter_args(
    redis_port: int,
    *,
    tls: bool,
    host: str = "localhost",
    listen: str = f":{t.EXPORTER_PORT}",
    ca_file: str = TLS_CA_FILE,
) -> list[str]:
    """Command-line flags for one exporter: which instance to scrape, how, and where to listen.

    Nothing secret goes here: argv is visible to every process in the pod and in ``ps``. With TLS
    the exporter verifies the server against the cluster CA; the servers do not ask for client
    certificates (``tls-auth-clients no``), so none is given.
    """
    scheme = "rediss" if tls else "redis"
    args = [f"-redis.addr={scheme}://{host}:{redis_port}", f"-web.listen-address={listen}", *EXPORTER_FLAGS]
    return [*args, f"-tls-ca-cert-file={ca_file}"] if tls else args


def exporter_env(settings: Settings, redis_port: int) -> list[dict[str, Any]]:
    """The sidecar's environment: the binary, the ACL user on a data node, the pod name for TLS.

    The one place that decides the exporter's identity; the password is read by the script.
    """
    env: list[dict[str, Any]] = [{"name": "EXPORTER_BIN", "value": settings.monitoring.exporter_binary}]
    if exporter_mode(redis_port) == "redis":
        env.append({"name": "REDIS_USER", "value": acl.EXPORTER.name})
    if settings.tls.enabled:
        env.append({"name": "POD_NAME", "value_from": {"field_ref": {"field_path": "metadata.name"}}})
    return env


def exporter_password_key(redis_port: int) -> str:
    """The Secret key the sidecar reads: the exporter user's password, or the Sentinels'."""
    return acl.SENTINEL_PASSWORD_KEY if exporter_mode(redis_port) == "sentinel" else acl.EXPORTER.secret_key


def exporter_volumes(
    settings: Settings, redis_port: int, secret_name: pulumi.Input[str], tls_secret_name: pulumi.Input[str] | None
) -> list[dict[str, Any]]:
    """Pod volumes holding just the sidecar's password and, with TLS, just the CA certificate.

    Whole-key projections (``items``), not ``subPath`` mounts: the kubelet refreshes these when the
    Secret changes, which the rotation relies on.
    """
    key = exporter_password_key(redis_port)
    volumes: list[dict[str, Any]] = [
        {
            "name": AUTH_VOLUME,
            "secret": {"secret_name": secret_name, "default_mode": 0o440, "items": [{"key": key, "path": key}]},
        }
    ]
    if settings.tls.enabled:
        if tls_secret_name is None:
            raise ValueError("tls.enabled is true but no certificate Secret was given to the exporter sidecar")
        volumes.append(
            {
                "name": TLS_VOLUME,
                "secret": {
                    "secret_name": tls_secret_name,
                    "default_mode": 0o440,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                },
            }
        )
    return volumes


def exporter_container(
    settings: Settings, redis_port: int, config_dir: str, tier: t.TierName = "cache"
) -> dict[str, Any]:
    """The sidecar for the instance on ``redis_port`` (6379: Redis, 26379: Sentinel).

    ``config_dir`` is where the pod's script ConfigMap (volume ``config``) is mounted.
    """
    monitoring = settings.monitoring
    health: dict[str, Any] = {"http_get": {"path": "/health", "port": t.METRICS_PORT_NAME}}
    tls = settings.tls.enabled
    return {
        "name": t.EXPORTER_CONTAINER,
        "image": monitoring.exporter_image,
        "image_pull_policy": "IfNotPresent",
        # The image's /bin/sh (BusyBox in the alpine variant) runs the wrapper, which runs the exporter.
        "command": ["/bin/sh", f"{config_dir}/{SCRIPT}", exporter_mode(redis_port)],
        "args": exporter_args(redis_port, tls=tls, host=exporter_host(settings, redis_port, tier)),
        "env": exporter_env(settings, redis_port),
        "ports": [{"name": t.METRICS_PORT_NAME, "container_port": t.EXPORTER_PORT, "protocol": "TCP"}],
        "resources": pods.resources(monitoring.exporter_resources),
        "security_context": pods.container_security_context(),
        "volume_mounts": [
            {"name": "config", "mount_path": config_dir, "read_only": True},
            {"name": AUTH_VOLUME, "mount_path": t.AUTH_DIR, "read_only": True},
            *([{"name": TLS_VOLUME, "mount_path": t.TLS_DIR, "read_only": True}] if tls else []),
        ],
        # /health answers while the exporter runs, even when Redis is down: restarting the exporter
        # would not bring Redis back, and redis_up = 0 is what the alerts need to see. No readiness
        # probe: the pod's readiness (and so its PDB) must depend on Redis, not on its exporter.
        "liveness_probe": {**health, "period_seconds": 20, "timeout_seconds": 3, "failure_threshold": 3},
    }
