"""Names, ports, labels and paths of the cluster: the facts that manifests and scripts share.

Every object name, DNS name, port and mount path is derived here from the settings, so the
StatefulSets, the Services, the rendered scripts' Kubernetes defaults and the local rehearsal all
agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from components.settings import RedisSettings, Settings

REDIS_PORT = 6379
SENTINEL_PORT = 26379
CLUSTER_DOMAIN = "svc.cluster.local"

# UID/GID the containers run as: non-root and above the range images use for their own users.
RUN_AS_USER = 10001

# Mount paths inside the pods (the scripts' Kubernetes defaults). Each config directory is one
# ConfigMap holding the config file and the scripts that pod runs.
REDIS_CONFIG_DIR = "/etc/redis"
SENTINEL_CONFIG_DIR = "/etc/redis-sentinel"
AUTH_DIR = "/etc/redis-auth"
# Certificate, key and CA (cert-manager's tls.crt, tls.key, ca.crt) when TLS is on.
TLS_DIR = "/etc/redis-tls"
RUN_DIR = "/run/redis"
DATA_DIR = "/data"
# The backup pod: its scripts (one ConfigMap) and the scratch volume the dump and upload share.
BACKUP_CONFIG_DIR = "/etc/redis-backup"
BACKUP_DIR = "/backup"

# redis_exporter sidecars (one per Redis pod and per Sentinel pod) listen here; Prometheus finds
# them by the port's name.
EXPORTER_PORT = 9121
METRICS_PORT_NAME = "metrics"
EXPORTER_CONTAINER = "exporter"

# The two data tiers (issue 13): what losing a key costs decides where it lives.
# cache: entry values and pointers, claim objects, status and index: evictable (allkeys-lru),
#        reloadable from the directory.
# state: idempotency records, rate-limit counters, workflow status and metadata: decisions,
#        never evicted (noeviction, AOF everysec); a full state tier refuses writes.
TierName = Literal["cache", "state"]
TIERS: tuple[TierName, ...] = ("cache", "state")
TIER_LABEL = "dict.lbpay.com.br/tier"
# The state tier's objects: StatefulSet (and PDB), headless Service, ConfigMap.
STATE_STATEFULSET = "redis-state"
STATE_HEADLESS = f"{STATE_STATEFULSET}-headless"
STATE_CONFIG = f"{STATE_STATEFULSET}-config"


@dataclass(frozen=True)
class DataTier:
    """One data tier's objects: its StatefulSet, headless Service, ConfigMap, pods and the name
    the Sentinels monitor its master by. ``Topology.tier(name)`` builds them."""

    tier: TierName
    namespace: str
    master_name: str
    replicas: int
    # app.kubernetes.io/name of its pods: "redis" for the cache (the selector it has always had),
    # "redis-state" for the state tier, so neither StatefulSet's selector matches the other's pods.
    app_name: str
    statefulset: str
    headless: str
    config: str

    def pod_host(self, ordinal: int) -> str:
        return f"{self.statefulset}-{ordinal}.{self.headless}.{self.namespace}.{CLUSTER_DOMAIN}"

    @property
    def addrs(self) -> list[str]:
        """Every pod of the tier as host:port, asked for ROLE when the Sentinels cannot say."""
        return [f"{self.pod_host(i)}:{REDIS_PORT}" for i in range(self.replicas)]

    @property
    def headless_domain(self) -> str:
        return f"{self.headless}.{self.namespace}.{CLUSTER_DOMAIN}"

    @property
    def selector(self) -> dict[str, str]:
        """The StatefulSet's selector: stable across updates (the cache's is what it always was)."""
        labels = {"app.kubernetes.io/name": self.app_name, "app.kubernetes.io/part-of": "dict-redis"}
        labels["app.kubernetes.io/component"] = "server"
        if self.tier != "cache":
            labels[TIER_LABEL] = self.tier
        return labels

    @property
    def pod_labels(self) -> dict[str, str]:
        """Selector labels plus the tier (the metrics and the policies tell the tiers apart by it)."""
        return {**self.selector, TIER_LABEL: self.tier}

    def settings_of(self, settings: Settings) -> RedisSettings:
        """The settings block of this tier: ``redis`` for the cache, ``state`` for the state tier."""
        return settings.redis if self.tier == "cache" else settings.state


@dataclass(frozen=True)
class Topology:
    """Object names of one stack; ``Topology.of(settings)`` is the only constructor used."""

    stack: str
    namespace: str
    master_name: str
    redis_replicas: int
    sentinel_replicas: int
    redis: str = "redis"
    redis_headless: str = "redis-headless"
    sentinel: str = "redis-sentinel"
    sentinel_headless: str = "redis-sentinel-headless"
    secret: str = "redis-auth"
    redis_tls_secret: str = "redis-tls"
    sentinel_tls_secret: str = "redis-sentinel-tls"
    redis_config: str = "redis-config"
    sentinel_config: str = "redis-sentinel-config"
    network_policy: str = "redis"
    pod_monitor: str = "redis"
    prometheus_rule: str = "redis"
    dashboard: str = "redis-dashboard"
    backup_cronjob: str = "redis-backup"
    backup_config: str = "redis-backup-scripts"

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        return cls(
            stack=settings.stack,
            namespace=settings.namespace,
            master_name=settings.master_name,
            redis_replicas=settings.redis.replicas,
            sentinel_replicas=settings.sentinel.replicas,
            state_master_name=settings.state.master_name,
            state_replicas=settings.state.replicas,
        )

    # --- data tiers ---------------------------------------------------------------------------
    state_master_name: str = "dictstate"
    state_replicas: int = 3

    def tier(self, name: TierName) -> DataTier:
        if name == "cache":
            return DataTier(
                "cache", self.namespace, self.master_name, self.redis_replicas, "redis",
                self.redis, self.redis_headless, self.redis_config,
            )  # fmt: skip
        if name == "state":
            return DataTier(
                "state", self.namespace, self.state_master_name, self.state_replicas, STATE_STATEFULSET,
                STATE_STATEFULSET, STATE_HEADLESS, STATE_CONFIG,
            )  # fmt: skip
        raise ValueError(f"tier {name!r}: must be one of {', '.join(TIERS)}")

    @property
    def tiers(self) -> list[DataTier]:
        return [self.tier(name) for name in TIERS]

    # --- labels -------------------------------------------------------------------------------
    def labels(self, component: str) -> dict[str, str]:
        """Selector labels of one component (``server`` or ``sentinel``); stable across updates."""
        return {
            "app.kubernetes.io/name": "redis",
            "app.kubernetes.io/part-of": "dict-redis",
            "app.kubernetes.io/component": component,
        }

    def object_labels(self, component: str) -> dict[str, str]:
        """Labels on objects and pods: the selector labels plus who manages them and which stack."""
        return {**self.labels(component), **self.common_labels}

    @property
    def common_labels(self) -> dict[str, str]:
        """Labels on every object of the stack, including those of no one component."""
        return {**self.part_of, "app.kubernetes.io/managed-by": "pulumi", "dict.lbpay.com.br/stack": self.stack}

    @property
    def part_of(self) -> dict[str, str]:
        """Labels every pod of the cache layer carries (Redis and Sentinel alike)."""
        return {"app.kubernetes.io/part-of": "dict-redis"}

    # --- DNS ----------------------------------------------------------------------------------
    def sentinel_pod_host(self, ordinal: int) -> str:
        return f"{self.sentinel}-{ordinal}.{self.sentinel_headless}.{self.namespace}.{CLUSTER_DOMAIN}"

    @property
    def sentinel_addrs(self) -> list[str]:
        """Every Sentinel pod as host:port, the list scripts ask for the current master."""
        return [f"{self.sentinel_pod_host(i)}:{SENTINEL_PORT}" for i in range(self.sentinel_replicas)]

    @property
    def sentinel_service_address(self) -> str:
        return f"{self.sentinel}.{self.namespace}.{CLUSTER_DOMAIN}:{SENTINEL_PORT}"
