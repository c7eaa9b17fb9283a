"""Typed, validated stack settings: the one place every knob of the cache layer is defined.

Stack config (``Pulumi.<stack>.yaml``) is parsed into frozen pydantic models. pydantic gives us
unknown-key and type errors for free; the rules that span several keys (quorum is a majority,
maxmemory leaves room for the fork, ...) live in :func:`_cross_checks`. Every problem is reported
at once, each line naming the config key, the value and what would be valid, and all of it happens
before the program registers a single resource.

The model defaults are the production numbers from the seed (TSP-003) with its defects fixed;
``Pulumi.dev.yaml`` overrides them with a smaller copy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

PROJECT = "dict-redis"

# Redis forks for RDB saves and AOF rewrites; copy-on-write can double the resident set of a
# write-heavy instance, and replica output buffers come on top (admin.md, notes §5). Above this
# share of the container memory limit a persistent instance risks the OOM killer.
MAX_PERSISTENT_MEMORY_SHARE = 0.6

# Seconds the pod keeps after the preStop hook for the shutdown itself (SIGTERM makes Redis fsync
# the AOF and write a final RDB snapshot).
SHUTDOWN_BUDGET_SECONDS = 10

# The password is written unquoted into redis.conf / sentinel.conf by the start scripts, so it
# may only hold characters that need no quoting there or in the shell.
PASSWORD_PATTERN = re.compile(r"^[A-Za-z0-9._~+=-]{16,128}$")


class SettingsError(ValueError):
    """Stack config that cannot make a working cluster; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


# --- quantities -------------------------------------------------------------------------------
# Kubernetes quantities are parsed by hand: the only library that does it is the full Kubernetes
# API client, a large dependency for ten lines of arithmetic.

_MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_MEMORY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(k|M|G|T|Ki|Mi|Gi|Ti)?$")
_CPU_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m)?$")


def memory_bytes(quantity: str) -> int:
    """Bytes in a Kubernetes memory quantity such as ``4Gi`` or ``512M``."""
    match = _MEMORY_RE.match(quantity)
    if not match:
        raise ValueError(
            f"{quantity!r} is not a memory quantity; use a number with an optional unit "
            "k, M, G, T, Ki, Mi, Gi or Ti (e.g. 4Gi)"
        )
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""])


def cpu_millicores(quantity: str) -> int:
    """Millicores in a Kubernetes CPU quantity such as ``500m`` or ``1``."""
    match = _CPU_RE.match(quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not a CPU quantity; use cores (1, 0.5) or millicores (500m)")
    value = float(match.group(1))
    return int(value if match.group(2) else value * 1000)


def _valid_memory(value: str) -> str:
    memory_bytes(value)
    return value


def _valid_cpu(value: str) -> str:
    cpu_millicores(value)
    return value


MemoryQuantity = Annotated[str, AfterValidator(_valid_memory)]
CpuQuantity = Annotated[str, AfterValidator(_valid_cpu)]
DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]

# --- models -----------------------------------------------------------------------------------


class _Model(BaseModel):
    """camelCase keys in YAML, snake_case in Python, no unknown keys, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)


class ResourceAmounts(_Model):
    cpu: CpuQuantity
    memory: MemoryQuantity


class Resources(_Model):
    requests: ResourceAmounts
    limits: ResourceAmounts


class Probe(_Model):
    initial_delay_seconds: int = Field(ge=0)
    period_seconds: int = Field(ge=1)
    timeout_seconds: int = Field(ge=1)
    failure_threshold: int = Field(ge=1)


class Probes(_Model):
    # Defaults are built with the camelCase keys because only those are accepted (see _Model).
    # The seed's liveness/readiness timings; the startup probe gives a large AOF up to
    # 10 s x 60 = 10 minutes to load before liveness may restart the pod.
    startup: Probe = Probe(initialDelaySeconds=5, periodSeconds=10, timeoutSeconds=5, failureThreshold=60)
    liveness: Probe = Probe(initialDelaySeconds=30, periodSeconds=10, timeoutSeconds=5, failureThreshold=3)
    readiness: Probe = Probe(initialDelaySeconds=10, periodSeconds=5, timeoutSeconds=3, failureThreshold=3)


class SentinelProbes(_Model):
    # The startup probe covers start-sentinel.sh waiting up to 60 s for the master on a first boot
    # (10 s x 12 = 2 minutes); after that a Sentinel is quick to answer.
    startup: Probe = Probe(initialDelaySeconds=5, periodSeconds=10, timeoutSeconds=5, failureThreshold=12)
    liveness: Probe = Probe(initialDelaySeconds=0, periodSeconds=10, timeoutSeconds=5, failureThreshold=3)
    readiness: Probe = Probe(initialDelaySeconds=0, periodSeconds=5, timeoutSeconds=3, failureThreshold=3)


class Storage(_Model):
    size: MemoryQuantity = "20Gi"
    # None: the cluster's default StorageClass.
    class_name: str | None = "standard"


class Persistence(_Model):
    # RDB snapshot points as [seconds, changes]; an empty list turns RDB snapshots off.
    save_points: list[tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]] = [
        (900, 1),
        (300, 10),
        (60, 10000),
    ]
    appendonly: bool = True
    appendfsync: Literal["always", "everysec", "no"] = "everysec"

    @property
    def enabled(self) -> bool:
        return self.appendonly or bool(self.save_points)


EvictionPolicy = Literal[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]
AntiAffinity = Literal["required", "preferred"]


class RedisSettings(_Model):
    # Pods in the StatefulSet: one master, the rest replicas.
    replicas: int = Field(default=3, ge=2, le=9)
    resources: Resources = Resources(
        requests=ResourceAmounts(cpu="500m", memory="2Gi"),
        limits=ResourceAmounts(cpu="1000m", memory="4Gi"),
    )
    storage: Storage = Storage()
    # maxmemory as a share of the memory limit, or an explicit quantity; not both.
    maxmemory_fraction: float | None = Field(default=None, gt=0, le=1)
    maxmemory: MemoryQuantity | None = None
    maxmemory_policy: EvictionPolicy = "allkeys-lru"
    maxmemory_samples: int = Field(default=5, ge=1, le=64)
    persistence: Persistence = Persistence()
    # A master stops accepting writes when fewer replicas than this are connected with at most
    # minReplicasMaxLag seconds of lag: it bounds what a partitioned master can acknowledge and
    # then lose (0 turns it off).
    min_replicas_to_write: int = Field(default=1, ge=0)
    min_replicas_max_lag: int = Field(default=10, ge=1)
    io_threads: int = Field(default=4, ge=1, le=128)
    io_threads_do_reads: bool = True
    timeout_seconds: int = Field(default=0, ge=0)
    tcp_keepalive_seconds: int = Field(default=300, ge=0)
    # Written into redis.conf, so the connections alert can use it without CONFIG GET (which would
    # let the exporter read masterauth).
    maxclients: int = Field(default=10000, ge=100, le=1_000_000)
    termination_grace_period_seconds: int = Field(default=30, ge=1)
    anti_affinity: AntiAffinity = "required"
    probes: Probes = Probes()

    def maxmemory_bytes(self) -> int:
        """The effective maxmemory; half the memory limit unless configured."""
        if self.maxmemory is not None:
            return memory_bytes(self.maxmemory)
        fraction = 0.5 if self.maxmemory_fraction is None else self.maxmemory_fraction
        return int(memory_bytes(self.resources.limits.memory) * fraction)


class SentinelSettings(_Model):
    replicas: int = Field(default=3, ge=1)
    quorum: int = Field(default=2, ge=1)
    down_after_milliseconds: int = Field(default=5000, ge=100)
    failover_timeout_milliseconds: int = Field(default=10000, ge=1000)
    parallel_syncs: int = Field(default=1, ge=1)
    resources: Resources = Resources(
        requests=ResourceAmounts(cpu="100m", memory="256Mi"),
        limits=ResourceAmounts(cpu="200m", memory="512Mi"),
    )
    anti_affinity: AntiAffinity = "required"
    probes: SentinelProbes = SentinelProbes()

    def prestop_timeout_seconds(self) -> int:
        """How long the master's preStop hook may wait for its handover: one failover plus 2 s."""
        return math.ceil(self.failover_timeout_milliseconds / 1000) + 2


class SmokeSettings(_Model):
    """The post-deploy smoke Job (``python -m smoke cluster`` inside the cluster)."""

    enabled: bool = False
    image: str = "ghcr.io/lbpay/dict-redis-smoke:0.1.0"
    # Also force a failover (SENTINEL FAILOVER) and measure it: for dev, not for production.
    failover: bool = False
    # Part of the Job's name: change it to run the smoke Job again without any other change.
    run_id: str = Field(default="", pattern=r"^[a-z0-9-]{0,20}$")
    resources: Resources = Resources(
        requests=ResourceAmounts(cpu="50m", memory="64Mi"),
        limits=ResourceAmounts(cpu="500m", memory="256Mi"),
    )


# Prometheus durations as prometheus-operator accepts them (e.g. 30s, 1m30s).
PromDuration = Annotated[str, Field(pattern=r"^(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$", min_length=2)]


def duration_seconds(duration: str) -> float:
    """Seconds in a Prometheus duration such as ``1m30s`` (already validated by PromDuration)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", duration))


class MonitoringSettings(_Model):
    """Exporter sidecars, the PodMonitor, the PrometheusRule and the Grafana dashboard.

    The PodMonitor and PrometheusRule are prometheus-operator custom resources: a cluster without
    its CRDs refuses them, so the whole section is off unless a stack turns it on.
    """

    enabled: bool = False
    # Same release as the Debian package the live metric check runs (prometheus-redis-exporter 1.45),
    # so the metric names the rules use are the ones this image exports.
    exporter_image: str = "oliver006/redis_exporter:v1.45.0-alpine"
    # The exporter binary inside that image (its Dockerfile's ENTRYPOINT): start-exporter.sh runs
    # it after reading the password file, so the image's own entrypoint is bypassed.
    exporter_binary: str = Field(default="/redis_exporter", pattern=r"^/[A-Za-z0-9._/-]+$")
    exporter_resources: Resources = Resources(
        requests=ResourceAmounts(cpu="10m", memory="32Mi"),
        limits=ResourceAmounts(cpu="100m", memory="64Mi"),
    )
    scrape_interval: PromDuration = "30s"
    scrape_timeout: PromDuration = "10s"
    # Labels on the PodMonitor and PrometheusRule that the Prometheus installation selects on
    # (kube-prometheus-stack: podMonitorSelector / ruleSelector match its release label).
    monitor_labels: dict[str, str] = {"release": "kube-prometheus-stack"}
    # Namespace of the Prometheus pods: the NetworkPolicy admits it to the metrics port only.
    namespace: DnsLabel = "monitoring"
    # Labels the Grafana dashboard sidecar looks for, and where the dashboard ConfigMap goes
    # (null: the stack's namespace; set Grafana's namespace if its sidecar searches only there).
    dashboard_labels: dict[str, str] = {"grafana_dashboard": "1"}
    dashboard_namespace: DnsLabel | None = None
    # Where the alerts' runbook_url points: docs/runbooks/ of this repository.
    runbook_base_url: str = Field(
        default="https://github.com/lbpay/dict-redis/blob/main/docs/runbooks", pattern=r"^https?://\S+[^/]$"
    )


class BackupSettings(_Model):
    """The backup CronJob and its S3 bucket (components/backup.py); see docs/backup.md."""

    enabled: bool = False
    # Cron in the cluster's time zone; the seed's every 6 hours is the RPO of a full loss.
    schedule: str = "0 */6 * * *"
    # Created by the stack; globally unique S3 name (3-63 lowercase letters, digits, '-', '.').
    bucket_name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    region: str = Field(default="sa-east-1", pattern=r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$")
    # Keys are <prefix>/YYYY/MM/DD/<timestamp>-<source>.rdb; the role may only touch <prefix>/.
    prefix: str = Field(default="redis", pattern=r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")
    retention_days: int = Field(default=30, ge=1, le=3650)
    # The EKS cluster's IAM OIDC provider; the issuer (trust condition keys) is derived from it.
    oidc_provider_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/\S+$")
    service_account: DnsLabel = "redis-backup"
    # Uploads run in the AWS CLI image; the dump runs in the Redis image (``image``).
    aws_cli_image: str = "amazon/aws-cli:2.15.30"
    resources: Resources = Resources(
        requests=ResourceAmounts(cpu="100m", memory="128Mi"),
        limits=ResourceAmounts(cpu="500m", memory="512Mi"),
    )
    # emptyDir the dump is written to; must hold one RDB (at most maxmemory).
    scratch_size: MemoryQuantity = "4Gi"
    starting_deadline_seconds: int = Field(default=600, ge=10)
    # A run may not outlive the RPO it serves (6 h).
    active_deadline_seconds: int = Field(default=1800, ge=60, le=21600)
    backoff_limit: int = Field(default=2, ge=0, le=10)

    def interval_seconds(self) -> int:
        """The longest gap between two scheduled runs over four weeks: the RPO the schedule promises.

        RedisBackupMissing fires after twice this. croniter computes the runs, since cron's
        day-of-month/day-of-week and step rules are easy to get wrong by hand.
        """
        start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; four whole weeks cover any weekly pattern
        end = start + timedelta(days=28)
        runs = croniter(self.schedule, start)
        previous = runs.get_next(datetime)
        longest = 0.0
        while previous < end:
            following = runs.get_next(datetime)
            longest = max(longest, (following - previous).total_seconds())
            previous = following
        return int(longest)

    @property
    def oidc_issuer(self) -> str:
        """``oidc.eks.<region>.amazonaws.com/id/<id>``: the provider ARN's resource part."""
        return (self.oidc_provider_arn or "").split(":oidc-provider/", 1)[-1]

    @property
    def account_id(self) -> str:
        return (self.oidc_provider_arn or "::::").split(":")[4]


class TlsSettings(_Model):
    """Encryption in transit: every data node and Sentinel serves TLS only, on the usual ports.

    Certificates come from cert-manager (``source: cert-manager``: Certificate resources for the
    Redis and Sentinel pods' DNS names, signed by ``issuerName``, an issuer that belongs to the
    cluster, not to this stack) or from a CA the stack itself keeps (``source: stack-ca``:
    pulumi-tls; the keys live in the Pulumi state and renew only on ``pulumi up``).
    """

    enabled: bool = True
    source: Literal["cert-manager", "stack-ca"] = "cert-manager"
    issuer_name: str = Field(default="dict-redis-ca", pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    issuer_kind: Literal["Issuer", "ClusterIssuer"] = "ClusterIssuer"
    # Certificate lifetime and how long before expiry it is renewed (hours): by cert-manager itself,
    # or with stack-ca by the first ``pulumi up`` in that window.
    duration_hours: int = Field(default=2160, ge=24)
    renew_before_hours: int = Field(default=360, ge=1)
    # stack-ca only: the CA's lifetime (hours); it is re-issued durationHours before it expires.
    ca_duration_hours: int = Field(default=87600, ge=48)


class Settings(_Model):
    """Everything one stack needs; built by :func:`load_settings` or :func:`settings_from_config`."""

    stack: str
    namespace: DnsLabel = "redis"
    image: str = "redis:7.2.4-alpine"
    master_name: str = Field(default="mymaster", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    # Pods carrying all of these labels (in any namespace) may reach Redis and Sentinel.
    client_selector: dict[str, str] = {"dict.lbpay.com.br/redis-client": "true"}
    # Namespaces those client pods may run in; empty means any namespace.
    client_namespaces: list[DnsLabel] = []
    redis: RedisSettings = RedisSettings()
    sentinel: SentinelSettings = SentinelSettings()
    smoke: SmokeSettings = SmokeSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    backup: BackupSettings = BackupSettings()
    tls: TlsSettings = TlsSettings()
    # The Sentinels' password (``requirepass``); the ACL users' passwords are always generated
    # (components/acl.py). Taken from secret config when set, else generated. Never printed.
    redis_password: str | None = Field(default=None, repr=False)


# --- loading ----------------------------------------------------------------------------------

_OBJECT_KEYS = {"redis", "sentinel", "smoke", "monitoring", "backup", "tls", "clientSelector", "clientNamespaces"}
_SECRET_KEYS = {"redisPassword"}
_IMAGE_PINNED = re.compile(r"^[^@]+@sha256:[0-9a-f]{64}$|^[^@]+:[^:/@]*\d+\.\d+\.\d+[^:/@]*$")


def settings_from_config(config: Mapping[str, Any], stack: str) -> Settings:
    """Parse ``{key: value}`` stack config (keys with or without the ``dict-redis:`` prefix).

    Object-valued keys may be JSON strings (as the Pulumi engine passes them) or already-decoded
    objects. Raises :class:`SettingsError` listing every problem found.
    """
    problems: list[str] = []
    values: dict[str, Any] = {"stack": stack}
    for raw_key, raw_value in config.items():
        key = raw_key.removeprefix(f"{PROJECT}:")
        value = raw_value
        if key in _OBJECT_KEYS and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                problems.append(f"{PROJECT}:{key} = {raw_value!r}: not a valid object ({exc.msg})")
                continue
        values[key] = value

    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        problems.extend(_describe(error) for error in exc.errors())
        raise SettingsError(problems) from None
    if problems:
        raise SettingsError(problems)

    problems.extend(_cross_checks(settings))
    if problems:
        raise SettingsError(problems)
    return settings


def load_settings() -> Settings:
    """Read this stack's config from the Pulumi runtime (the engine or the mock runtime)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    own = {k: v for k, v in merged.items() if k.startswith(f"{PROJECT}:")}
    return settings_from_config(own, pulumi.get_stack())


def _describe(error: Mapping[str, Any]) -> str:
    """One pydantic error as 'key = value: what is allowed'."""
    loc = [str(part) for part in error["loc"]]
    key = f"{PROJECT}:" + ".".join(loc)
    if loc and loc[0] in _SECRET_KEYS:
        return f"{key}: {error['msg']} (value not shown: it is a secret)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key; valid keys here: {', '.join(_valid_keys(loc[:-1]))}"
    value = error.get("input")
    shown = json.dumps(value) if isinstance(value, (dict, list)) else repr(value)
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key} = {shown}: {message}"


def _valid_keys(path: list[str]) -> list[str]:
    model: Any = Settings
    for part in path:
        field = next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return sorted(f.alias or name for name, f in model.model_fields.items() if name != "stack")


def _cross_checks(s: Settings) -> list[str]:
    """Rules that span several keys; each message names the key, its value and the valid range."""
    p = f"{PROJECT}:"
    problems: list[str] = []

    images = [("image", s.image)] + ([("smoke.image", s.smoke.image)] if s.smoke.enabled else [])
    images += [("monitoring.exporterImage", s.monitoring.exporter_image)] if s.monitoring.enabled else []
    images += [("backup.awsCliImage", s.backup.aws_cli_image)] if s.backup.enabled else []
    for key, image in images:
        if not _IMAGE_PINNED.match(image):
            problems.append(
                f"{p}{key} = {image!r}: pin the image to a full version tag (e.g. redis:7.2.4-alpine) "
                "or a digest (name@sha256:<64 hex>); 'latest' and floating tags are not allowed"
            )

    n, q = s.sentinel.replicas, s.sentinel.quorum
    if n < 3 or n % 2 == 0:
        problems.append(
            f"{p}sentinel.replicas = {n}: use an odd number of at least 3 Sentinels (3, 5, 7) so a "
            "majority survives the loss of one"
        )
    majority = n // 2 + 1
    if not majority <= q <= n:
        problems.append(
            f"{p}sentinel.quorum = {q}: must be a majority of the {n} Sentinels, between {majority} and {n}"
        )

    r = s.redis
    if r.maxmemory is not None and r.maxmemory_fraction is not None:
        problems.append(
            f"{p}redis.maxmemory = {r.maxmemory!r} and redis.maxmemoryFraction = {r.maxmemory_fraction}: "
            "set only one of them"
        )
    limit = memory_bytes(r.resources.limits.memory)
    maxmemory = r.maxmemory_bytes()
    share = maxmemory / limit
    key = "redis.maxmemory" if r.maxmemory is not None else "redis.maxmemoryFraction"
    shown = repr(r.maxmemory) if r.maxmemory is not None else str(r.maxmemory_fraction or 0.5)
    if maxmemory <= 0:
        problems.append(f"{p}{key} = {shown}: must be above 0 (an unbounded cache grows until it is OOM-killed)")
    elif r.persistence.enabled and share > MAX_PERSISTENT_MEMORY_SHARE:
        problems.append(
            f"{p}{key} = {shown}: is {share:.0%} of the memory limit {r.resources.limits.memory}; with "
            f"RDB or AOF on it must be at most {MAX_PERSISTENT_MEMORY_SHARE:.0%} "
            f"({int(limit * MAX_PERSISTENT_MEMORY_SHARE)} bytes) because a save forks and copy-on-write "
            "can double memory"
        )
    elif share > 1:
        problems.append(f"{p}{key} = {shown}: exceeds the memory limit {r.resources.limits.memory}")

    all_resources = (
        ("redis.resources", r.resources),
        ("sentinel.resources", s.sentinel.resources),
        ("smoke.resources", s.smoke.resources),
        ("monitoring.exporterResources", s.monitoring.exporter_resources),
        ("backup.resources", s.backup.resources),
    )
    for name, res in all_resources:
        if memory_bytes(res.requests.memory) > memory_bytes(res.limits.memory):
            problems.append(
                f"{p}{name}.requests.memory = {res.requests.memory!r}: must not exceed "
                f"limits.memory {res.limits.memory!r}"
            )
        if cpu_millicores(res.requests.cpu) > cpu_millicores(res.limits.cpu):
            problems.append(
                f"{p}{name}.requests.cpu = {res.requests.cpu!r}: must not exceed limits.cpu {res.limits.cpu!r}"
            )

    mon = s.monitoring
    if duration_seconds(mon.scrape_timeout) > duration_seconds(mon.scrape_interval):
        problems.append(
            f"{p}monitoring.scrapeTimeout = {mon.scrape_timeout!r}: must not exceed "
            f"monitoring.scrapeInterval {mon.scrape_interval!r} (Prometheus refuses such a scrape config)"
        )

    needed = s.sentinel.prestop_timeout_seconds() + SHUTDOWN_BUDGET_SECONDS
    if r.termination_grace_period_seconds < needed:
        problems.append(
            f"{p}redis.terminationGracePeriodSeconds = {r.termination_grace_period_seconds}: must be at "
            f"least {needed}: the preStop handover may take {s.sentinel.prestop_timeout_seconds()} s "
            f"(sentinel.failoverTimeoutMilliseconds + 2 s) and the shutdown {SHUTDOWN_BUDGET_SECONDS} s"
        )
    if r.min_replicas_to_write > r.replicas - 1:
        problems.append(
            f"{p}redis.minReplicasToWrite = {r.min_replicas_to_write}: must be at most the number of "
            f"replicas ({r.replicas - 1}), or the master refuses every write"
        )

    if s.tls.renew_before_hours >= s.tls.duration_hours:
        problems.append(
            f"{p}tls.renewBeforeHours = {s.tls.renew_before_hours}: must be below tls.durationHours "
            f"({s.tls.duration_hours}), or cert-manager renews the certificate continuously"
        )

    if s.tls.source == "stack-ca" and s.tls.ca_duration_hours < 2 * s.tls.duration_hours:
        problems.append(
            f"{p}tls.caDurationHours = {s.tls.ca_duration_hours}: must be at least twice tls.durationHours "
            f"({2 * s.tls.duration_hours}): the CA is re-issued tls.durationHours before it expires, so a "
            "certificate it signs never outlives it"
        )

    if s.redis_password is not None and not PASSWORD_PATTERN.match(s.redis_password):
        problems.append(
            f"{p}redisPassword: must be 16-128 characters from A-Z a-z 0-9 . _ ~ + = - "
            "(value not shown: it is a secret)"
        )

    label_maps = (
        ("clientSelector", s.client_selector),
        ("monitoring.monitorLabels", s.monitoring.monitor_labels),
        ("monitoring.dashboardLabels", s.monitoring.dashboard_labels),
    )
    for label_setting, label_map in label_maps:
        for label_key, label_value in label_map.items():
            if not re.match(
                r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", label_key
            ) or not re.match(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$", label_value):
                problems.append(
                    f"{p}{label_setting} = {json.dumps({label_key: label_value})}: not a valid Kubernetes label "
                    "(key [prefix/]name, value up to 63 alphanumerics, '-', '_' or '.')"
                )
    if not s.client_selector:
        problems.append(f"{p}clientSelector = {{}}: name at least one label that client pods carry")
    problems.extend(_backup_checks(s))
    return problems


# Five cron fields of digits, '*', ',', '-' and '/' (or a macro such as @daily).
_CRON = re.compile(r"^(@(yearly|annually|monthly|weekly|daily|hourly)|([0-9*,/-]+ ){4}[0-9*,/-]+)$")


def _backup_checks(s: Settings) -> list[str]:
    """The backup section: only checked when backups are on (a disabled section may be partial)."""
    p = f"{PROJECT}:backup."
    b = s.backup
    if not b.enabled:
        return []
    problems: list[str] = []
    if b.bucket_name is None:
        problems.append(f"{p}bucketName: required when backup.enabled is true (an S3 bucket name the stack creates)")
    if b.oidc_provider_arn is None:
        problems.append(
            f"{p}oidcProviderArn: required when backup.enabled is true: the EKS cluster's IAM OIDC provider, "
            "e.g. arn:aws:iam::123456789012:oidc-provider/oidc.eks.sa-east-1.amazonaws.com/id/EXAMPLE"
        )
    if not _CRON.match(b.schedule) or not croniter.is_valid(b.schedule):
        problems.append(
            f"{p}schedule = {b.schedule!r}: a five-field cron expression (e.g. '0 */6 * * *', every 6 hours)"
        )
    maxmemory = s.redis.maxmemory_bytes()
    if memory_bytes(b.scratch_size) < maxmemory:
        problems.append(
            f"{p}scratchSize = {b.scratch_size!r}: must hold one dump, at least redis maxmemory ({maxmemory} bytes)"
        )
    return problems
