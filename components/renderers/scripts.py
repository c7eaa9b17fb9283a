"""The pods' shell scripts: templates in ``scripts/`` with this stack's Kubernetes defaults filled in.

The scripts stay real ``.sh`` files (readable, shellcheck-able, runnable here under
``busybox sh``); rendering only substitutes ``@@NAME@@`` placeholders with names and paths from
:mod:`components.topology`. Nothing secret is ever substituted: credentials are read at run time
from the mounted Secret.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from components import acl
from components import topology as t
from components.settings import Settings

TEMPLATE_DIR = Path(__file__).with_name("scripts")

# Which scripts each workload's ConfigMap carries (common.sh is sourced by all of them).
REDIS_SCRIPTS = (
    "common.sh", "start-redis.sh", "probe-redis.sh", "prestop-redis.sh", "sync-acl.sh", "start-exporter.sh",
)  # fmt: skip
SENTINEL_SCRIPTS = ("common.sh", "start-sentinel.sh", "probe-sentinel.sh", "start-exporter.sh")
SCRIPT_NAMES = tuple(dict.fromkeys(REDIS_SCRIPTS + SENTINEL_SCRIPTS))
# The backup pod's ConfigMap (restore.sh rides along: the runbooks run it from the same files).
BACKUP_SCRIPTS = ("common.sh", "backup-common.sh", "backup.sh", "restore.sh")

_PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")


def script_defaults(settings: Settings, tier: t.TierName = "cache") -> dict[str, str]:
    """The placeholders' values; the data-tier ones (master name, pods) are those of ``tier``."""
    topo = t.Topology.of(settings)
    data = topo.tier(tier)
    return {
        "MASTER_NAME": data.master_name,
        "REDIS_PORT": str(t.REDIS_PORT),
        "SENTINEL_PORT": str(t.SENTINEL_PORT),
        "SENTINEL_ADDRS": " ".join(topo.sentinel_addrs),
        "REDIS_ADDRS": " ".join(data.addrs),
        "REDIS_SEED_HOST": data.pod_host(0),
        # What the Sentinels monitor: one name=<pod>,<pod>,... per tier (the first pod is ordinal 0).
        "SENTINEL_MONITORS": " ".join(f"{d.master_name}={','.join(d.addrs)}" for d in topo.tiers),
        "AUTH_DIR": t.AUTH_DIR,
        "SCRIPT_USER": acl.PROBE.name,
        "BACKUP_USER": acl.BACKUP.name,
        "REPLICATION_USER": acl.REPLICATION.name,
        "SENTINEL_ACL_USER": acl.SENTINEL.name,
        "ADMIN_USER": acl.ADMIN.name,
        "EXPORTER_USER": acl.EXPORTER.name,
        "SENTINEL_PASSWORD_KEY": acl.SENTINEL_PASSWORD_KEY,
        "TLS": "yes" if settings.tls.enabled else "no",
        "TLS_DIR": t.TLS_DIR,
        "REDIS_HEADLESS_DOMAIN": data.headless_domain,
        "SENTINEL_HEADLESS_DOMAIN": f"{topo.sentinel_headless}.{topo.namespace}.{t.CLUSTER_DOMAIN}",
        "REDIS_CONFIG_DIR": t.REDIS_CONFIG_DIR,
        "SENTINEL_CONFIG_DIR": t.SENTINEL_CONFIG_DIR,
        "RUN_DIR": t.RUN_DIR,
        "DATA_DIR": t.DATA_DIR,
        "PRESTOP_TIMEOUT": str(settings.sentinel.prestop_timeout_seconds()),
        # Long enough for a failover Sentinel has started to end: twice its timeout.
        "FAILOVER_WAIT": str(2 * math.ceil(settings.sentinel.failover_timeout_milliseconds / 1000)),
        "BACKUP_BUCKET": settings.backup.bucket_name or "",
        "BACKUP_PREFIX": settings.backup.prefix,
        "BACKUP_REGION": settings.backup.region,
        "BACKUP_DIR": t.BACKUP_DIR,
    }


def render_scripts(
    settings: Settings, names: tuple[str, ...] = SCRIPT_NAMES, tier: t.TierName = "cache"
) -> dict[str, str]:
    """The named scripts (by default the Redis and Sentinel ones) by file name, for a ConfigMap;
    a data tier's pods get theirs rendered for their ``tier``."""
    defaults = script_defaults(settings, tier)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in defaults:
            raise KeyError(f"script placeholder @@{name}@@ has no value in script_defaults()")
        return defaults[name]

    return {name: _PLACEHOLDER.sub(fill, (TEMPLATE_DIR / name).read_text()) for name in names}
