"""Typed, validated stack settings: the one place every knob of the cache layer is defined.

Stack config (``Pulumi.<stack>.yaml``) is parsed into frozen pydantic models. pydantic gives us
unknown-key and type errors; :func:`_describe` words each as "key = value: the rule, with its
limits" (every pattern field registers its rule in words with :func:`_pattern`, so no message shows
a regular expression). The rules that span several keys (quorum is a majority, maxmemory leaves
room for the fork, ...) live in :func:`_cross_checks`. Every problem is reported at once (a wrong
type does not hide a cross-key problem elsewhere), and all of it happens before the program
registers a single resource.

A block given in part (``resources: {limits: {memory: 8Gi}}``) is merged over that block's
defaults, so the settings table's single keys can be set one at a time.

:func:`read_stack_file` is the one reader of stack files: it refuses YAML syntax errors, duplicate
keys at any depth and a file whose top level or ``config:`` is not a mapping, each as one line.
:func:`config_key_problems` refuses keys outside the ``dict-redis:`` namespace (a typo there would
otherwise be ignored and the stack would render with the defaults).

The model defaults are the production numbers from the seed (TSP-003) with its defects fixed;
``Pulumi.dev.yaml`` overrides them with a smaller copy.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
import typing
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from croniter import CroniterBadDateError, croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from components.server_lines import DEFAULT_IMAGE

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


# The default min-replicas-max-lag (seconds): see RedisSettings.min_replicas_max_lag.
MIN_REPLICAS_MAX_LAG_S = 2

# Sentinel's down-after has a floor that Sentinel itself sets (sentinel.c, measured here):
# - Sentinel reconnects a link at most once a second (SENTINEL_PING_PERIOD) and checks its
#   instances on a timer that ticks 10 to 20 times a second.
# - On a switch it keeps the link it had to the old master, with that link's last reconnect time
#   (every second, to the dead master), and starts counting the new master's silence at once. So
#   it reaches the new master up to 1 s + one tick after the switch, and only then sends a PING.
# - A new master not answered within down-after is down in that Sentinel's eyes, and the other
#   Sentinels' "master down" replies about the old master, still fresh (kept 5 s), make it
#   objectively down at once: a second failover, on a healthy master, 1 s after the first.
# At 1000 ms the rehearsal's failover drill saw that in 1 run of 7 (two masters, writes refused
# for seconds). The floor leaves the new master NEW_MASTER_ANSWER_MS to answer that first PING.
SENTINEL_RECONNECT_MS = 1000
SENTINEL_TICK_MS = 100
NEW_MASTER_ANSWER_MS = 400
DOWN_AFTER_FLOOR_MS = SENTINEL_RECONNECT_MS + SENTINEL_TICK_MS + NEW_MASTER_ANSWER_MS


# Backups are a full dump of up to maxmemory plus its upload: runs closer together than this would
# fork the replica again and again (and, with the CronJob's concurrencyPolicy Forbid, skip runs).
MIN_BACKUP_INTERVAL_SECONDS = 3600

# Config namespaces other than this project's that a stack may use: the engine's own settings
# (pulumi:tags, ...) and the default Kubernetes provider the program uses (kubernetes:context,
# kubernetes:kubeconfig). The AWS provider is explicit (region from dict-redis:backup.region), so
# aws:* keys would have no effect and are refused like any other namespace.
OTHER_NAMESPACES = {"pulumi": "the engine's own settings", "kubernetes": "the default Kubernetes provider"}


class SettingsError(ValueError):
    """Stack config that cannot make a working cluster; one line per problem."""

    header = "invalid stack configuration"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{self.header}:\n" + "\n".join(f"  - {p}" for p in problems))


class StackFileError(SettingsError):
    """A stack file that cannot be read as stack config at all (missing, not YAML, wrong shape)."""

    header = "unusable stack file"

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems)
        if len(problems) == 1:
            self.args = (f"{self.header}: {problems[0]}",)


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
    if memory_bytes(value) <= 0:
        raise ValueError(f"{value!r} is no memory at all; use a quantity above 0 with a unit (e.g. 512Mi, 4Gi)")
    return value


def _valid_memory_or_zero(value: str) -> str:
    memory_bytes(value)
    return value


def _valid_cpu(value: str) -> str:
    if cpu_millicores(value) <= 0:
        raise ValueError(f"{value!r} is no CPU at all; use at least 1m (millicores such as 100m, or cores such as 0.5)")
    return value


# Every pattern with its rule in words: what an error message says instead of the expression
# (tests/test_settings.py checks that every pattern of Settings is one of these).
PATTERN_RULES: list[tuple[str, str]] = []


def _pattern(regex: str, rule: str, **field: Any) -> Any:
    """``Field(pattern=regex, ...)`` whose errors say ``rule`` (a noun phrase with the limits)."""
    PATTERN_RULES.append((regex, rule))
    return Field(pattern=regex, description=rule, **field)


def _master_name(whose: str, default: str) -> Any:
    """A name the Sentinels monitor a master by (``masterName``, ``state.masterName``)."""
    rule = f"1-64 letters, digits, '.', '_' or '-' (Sentinel's name for {whose})"
    return _pattern(r"^[A-Za-z0-9._-]{1,64}$", rule, default=default)


def _number_as_text(value: Any) -> Any:
    """A quantity written as a plain YAML number (``cpu: 1``, ``size: 0``) is the same quantity."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


MemoryQuantity = Annotated[str, BeforeValidator(_number_as_text), AfterValidator(_valid_memory)]
CpuQuantity = Annotated[str, BeforeValidator(_number_as_text), AfterValidator(_valid_cpu)]
DnsLabel = Annotated[
    str,
    _pattern(
        r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        "a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
    ),
]

BUCKET_NAME_RULE = (
    "an S3 bucket name: 3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or "
    "digit, no '..', not an IP address, not starting with xn--, sthree- or amzn-s3-demo- and not ending "
    "with -s3alias, --ol-s3, .mrap, --x-s3 or --table-s3"
)


def _valid_bucket_name(name: str) -> str:
    """The bucket naming rules S3 enforces (general purpose buckets), each refused in words."""
    why = None
    if not 3 <= len(name) <= 63:
        why = f"is {len(name)} characters long"
    elif not re.fullmatch(r"[a-z0-9.-]+", name):
        why = "has characters other than lowercase letters, digits, '.' and '-'"
    elif not (name[0].isalnum() and name[-1].isalnum()):
        why = "does not start and end with a letter or digit"
    elif ".." in name:
        why = "has two adjacent periods"
    elif re.fullmatch(r"[0-9]+(\.[0-9]+){3}", name) or _is_ip(name):
        why = "is formatted as an IP address"
    elif name.startswith(("xn--", "sthree-", "amzn-s3-demo-")):
        why = "starts with a prefix S3 reserves"
    elif name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")):
        why = "ends with a suffix S3 reserves"
    if why:
        raise ValueError(f"{why}; must be {BUCKET_NAME_RULE}")
    return name


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- models -----------------------------------------------------------------------------------


class _Rule(str):
    """A rule in words carried in an ``Annotated`` type's metadata (from its Field description)."""


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """``(type, metadata)`` of an annotation without ``Optional``/``Annotated``."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = typing.get_args(annotation)
            for item in extra:
                if isinstance(item, FieldInfo):
                    metadata.extend([_Rule(item.description)] if item.description else [])
                    metadata.extend(item.metadata)
                else:
                    metadata.append(item)
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation, metadata
            annotation = members[0]
        else:
            return annotation, metadata


# Kubernetes keeps most counts and durations as 32-bit numbers; nothing here needs more.
MAX_WHOLE_NUMBER = 2**31 - 1


class _Model(BaseModel):
    """camelCase keys in YAML, snake_case in Python, no unknown keys, immutable. A number field
    refuses true/false (pydantic would take them as 1 and 0) and numbers beyond 32 bits."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        base = _unwrap(cls.model_fields[info.field_name or ""].annotation)[0]
        if base in (int, float) and isinstance(value, bool):
            raise PydanticCustomError("int_type" if base is int else "float_type", "not true or false")
        if base is int and isinstance(value, (int, float)) and abs(value) > MAX_WHOLE_NUMBER:
            raise PydanticCustomError("value_error", f"{value} is beyond {MAX_WHOLE_NUMBER}, the largest number here")
        return value


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
    class_name: str | None = _pattern(
        r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        "a StorageClass name (1-253 lowercase letters, digits, '-' or '.', starting and ending with a letter or "
        "digit), or null for the cluster's default StorageClass",
        default="standard",
    )


class Persistence(_Model):
    # RDB snapshot points as [seconds, changes]; an empty list turns RDB snapshots off.
    save_points: list[tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]] = Field(
        default=[(900, 1), (300, 10), (60, 10000)],
        description="a list of [seconds, changes] pairs of whole numbers above 0 (e.g. [[900, 1], [300, 10]]); "
        "[] turns RDB snapshots off",
    )
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
    maxmemory: Annotated[str, BeforeValidator(_number_as_text), AfterValidator(_valid_memory_or_zero)] | None = None
    maxmemory_policy: EvictionPolicy = "allkeys-lru"
    maxmemory_samples: int = Field(default=5, ge=1, le=64)
    persistence: Persistence = Persistence()
    # A master stops accepting writes when fewer replicas than this are connected with at most
    # minReplicasMaxLag seconds of lag: it bounds what a partitioned master can acknowledge and
    # then lose (0 turns it off).
    min_replicas_to_write: int = Field(default=1, ge=0)
    # Replicas acknowledge once a second and the server counts the lag in whole seconds, so 2 is
    # the least that does not refuse writes whenever one acknowledgement is a moment late; a
    # master cut off from its replicas stops acknowledging within this + 2 s (docs/architecture.md,
    # "Partitions": 10 let an isolated master acknowledge ~11 s of writes that were then lost).
    min_replicas_max_lag: int = Field(
        default=MIN_REPLICAS_MAX_LAG_S,
        ge=2,
        le=60,
        description="a whole number of seconds from 2 to 60: replicas acknowledge once a second and the lag "
        "counts whole seconds, so 1 refuses writes whenever an acknowledgement is a moment late; above 60 "
        "(repl-timeout) a silent replica is dropped anyway; a master cut off from its replicas keeps "
        "acknowledging writes for up to this + 2 s",
    )
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


class StateSettings(RedisSettings):
    """The state tier: the decisions (idempotency records, rate-limit counters, workflow status and
    versions) on a Redis of their own that never evicts (issue 13). Same keys as ``redis``; the
    defaults differ: ``noeviction`` (a full tier refuses writes, which the strategies turn into a
    retryable error, instead of silently forgetting a decision), AOF ``everysec``, and sized small
    (the decisions of a few minutes to a day, not the whole directory)."""

    master_name: str = _master_name("the state tier's master", "dictstate")
    resources: Resources = Resources(
        requests=ResourceAmounts(cpu="250m", memory="512Mi"),
        limits=ResourceAmounts(cpu="500m", memory="1Gi"),
    )
    storage: Storage = Storage(size="5Gi")
    maxmemory_policy: EvictionPolicy = "noeviction"
    io_threads: int = Field(default=1, ge=1, le=128)


class SentinelSettings(_Model):
    replicas: int = Field(default=3, ge=1, description="an odd whole number of at least 3 (3, 5, 7)")
    quorum: int = Field(
        default=2, ge=1, description="a whole number: a majority of sentinel.replicas (2 or 3 of 3 Sentinels)"
    )
    # See DOWN_AFTER_FLOOR_MS: below it a failover can be followed by a second one.
    down_after_milliseconds: int = Field(
        default=5000,
        ge=DOWN_AFTER_FLOOR_MS,
        description=f"a whole number of milliseconds of at least {DOWN_AFTER_FLOOR_MS}: after a failover a "
        f"Sentinel first asks the new master up to {SENTINEL_RECONNECT_MS + SENTINEL_TICK_MS} ms later "
        "(it reconnects once a second), and a shorter down-after sees the new master down and fails it "
        "over again",
    )
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
    run_id: str = _pattern(r"^[a-z0-9-]{0,20}$", "up to 20 lowercase letters, digits or '-' (may be empty)", default="")
    resources: Resources = Resources(
        requests=ResourceAmounts(cpu="50m", memory="64Mi"),
        limits=ResourceAmounts(cpu="500m", memory="256Mi"),
    )


_PROM_DURATION = re.compile(r"^(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$")


def duration_seconds(duration: str) -> float:
    """Seconds in a Prometheus duration such as ``1m30s`` (already validated by PromDuration)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", duration))


def _valid_duration(value: str) -> str:
    if not value or not _PROM_DURATION.match(value):
        raise ValueError(
            "not a Prometheus duration: whole numbers with the units h, m, s or ms in that order, without "
            "spaces (e.g. 15s, 1m, 1m30s)"
        )
    if duration_seconds(value) <= 0:
        raise ValueError("is no time at all; use a duration above zero (e.g. 15s, 1m, 1m30s)")
    return value


# Prometheus durations as prometheus-operator accepts them (e.g. 30s, 1m30s), above zero.
PromDuration = Annotated[str, AfterValidator(_valid_duration)]


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
    exporter_binary: str = _pattern(
        r"^/[A-Za-z0-9._/-]+$",
        "an absolute path inside the image: '/' then letters, digits, '.', '_', '-' or '/'",
        default="/redis_exporter",
    )
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
    runbook_base_url: str = _pattern(
        r"^https?://\S+[^/]$",
        "an http:// or https:// URL without spaces and without a trailing '/'",
        default="https://github.com/lbpay/dict-redis/blob/main/docs/runbooks",
    )


class BackupSettings(_Model):
    """The backup CronJob and its S3 bucket (components/backup.py); see docs/backup.md."""

    enabled: bool = False
    # Cron in the cluster's time zone; the seed's every 6 hours is the RPO of a full loss.
    schedule: str = "0 */6 * * *"
    # Created by the stack; a globally unique name S3 accepts (see _valid_bucket_name).
    bucket_name: Annotated[str, AfterValidator(_valid_bucket_name)] | None = None
    region: str = _pattern(
        r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$",
        "an AWS region name such as sa-east-1 or us-gov-west-1 (lowercase, no spaces)",
        default="sa-east-1",
    )
    # Keys are <prefix>/YYYY/MM/DD/<timestamp>-<source>.rdb; the role may only touch <prefix>/.
    prefix: str = _pattern(
        r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$",
        "an S3 key prefix: '/'-separated parts of lowercase letters, digits, '.', '_' or '-', each starting "
        "with a letter or digit, no leading or trailing '/' (e.g. redis/prod)",
        default="redis",
    )
    retention_days: int = Field(default=30, ge=1, le=3650)
    # The EKS cluster's IAM OIDC provider; the issuer (trust condition keys) is derived from it.
    oidc_provider_arn: str | None = _pattern(
        r"^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/\S+$",
        "an IAM OIDC provider ARN: arn:aws:iam::<12-digit account>:oidc-provider/<issuer>, e.g. "
        "arn:aws:iam::123456789012:oidc-provider/oidc.eks.sa-east-1.amazonaws.com/id/EXAMPLE",
        default=None,
    )
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
        return int(max(self._gaps()))

    def shortest_gap_seconds(self, stop_below: float = 0) -> int:
        """The shortest gap between two scheduled runs over four weeks (the first gap below
        ``stop_below`` is returned at once: an every-minute schedule need not be walked)."""
        shortest = math.inf
        for gap in self._gaps():
            shortest = min(shortest, gap)
            if shortest < stop_below:
                break
        return int(shortest)

    def _gaps(self) -> Iterator[float]:
        start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; four whole weeks cover any weekly pattern
        end = start + timedelta(days=28)
        runs = croniter(self.schedule, start)
        previous = runs.get_next(datetime)
        first = True
        while previous < end or first:  # a yearly schedule has its first gap after the four weeks
            following = runs.get_next(datetime)
            yield (following - previous).total_seconds()
            previous, first = following, False

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
    issuer_name: str = _pattern(
        r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        "a cert-manager issuer name: 1-253 lowercase letters, digits, '-' or '.', starting and ending with a "
        "letter or digit",
        default="dict-redis-ca",
    )
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
    # The default server image is a version the rehearsal runs (components/server_lines.py).
    image: str = DEFAULT_IMAGE
    master_name: str = _master_name("the master", "mymaster")
    # Pods carrying all of these labels (in any namespace) may reach Redis and Sentinel.
    client_selector: dict[str, str] = {"dict.lbpay.com.br/redis-client": "true"}
    # Namespaces those client pods may run in; empty means any namespace.
    client_namespaces: list[DnsLabel] = []
    redis: RedisSettings = RedisSettings()
    state: StateSettings = StateSettings()
    sentinel: SentinelSettings = SentinelSettings()
    smoke: SmokeSettings = SmokeSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    backup: BackupSettings = BackupSettings()
    tls: TlsSettings = TlsSettings()
    # The Sentinels' password (``requirepass``); the ACL users' passwords are always generated
    # (components/acl.py). Taken from secret config when set, else generated. Never printed.
    redis_password: str | None = Field(default=None, repr=False)


# --- loading ----------------------------------------------------------------------------------

_OBJECT_KEYS = {
    "redis", "state", "sentinel", "smoke", "monitoring", "backup", "tls", "clientSelector", "clientNamespaces",
}  # fmt: skip
_SECRET_KEYS = {"redisPassword"}
_SCALAR_KEYS = {"namespace", "image", "masterName", "redisPassword"}
_IMAGE_PINNED = re.compile(r"^[^@]+@sha256:[0-9a-f]{64}$|^[^@]+:[^:/@]*\d+\.\d+\.\d+[^:/@]*$")
_SECRET_NAME = re.compile(r"password|secret|token", re.IGNORECASE)

# A loc part is a key of the stack config (a model field or a mapping key) or a list index.
Loc = list[str | int]


def settings_from_config(config: Mapping[str, Any], stack: str) -> Settings:
    """Parse ``{key: value}`` stack config (keys with or without the ``dict-redis:`` prefix).

    Object-valued keys may be JSON strings (as the Pulumi engine passes them) or already-decoded
    objects; a block given in part is merged over its defaults. Raises :class:`SettingsError`
    listing every problem found: wrong values are reported and replaced by their defaults, so the
    checks across keys still run, except those that read a key already reported.
    """
    problems: list[str] = []
    invalid: set[str] = set()
    values: dict[str, Any] = {}
    for raw_key, raw_value in config.items():
        key = str(raw_key).removeprefix(f"{PROJECT}:")
        value = raw_value
        if key == "stack":  # the stack's name comes from the engine, not from its config
            problems.append(f"{PROJECT}:stack: unknown key; valid keys here: {', '.join(_valid_keys([]))}")
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            problems.append(_empty(key))
            invalid.add(key)
            continue
        if isinstance(value, str) and (key in _OBJECT_KEYS or value.lstrip()[:1] in ("{", "[")):
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError:
                decoded = value
            if key in _OBJECT_KEYS and decoded is value:
                problems.append(f"{PROJECT}:{key} = {_show(value)}: must be {_rule([key])}, not a single value")
                invalid.add(key)
                continue
            if key in _OBJECT_KEYS or isinstance(decoded, (dict, list)):
                value = decoded
        if key in _SCALAR_KEYS and isinstance(value, (dict, list)):
            kind = "a list" if isinstance(value, list) else "a block of keys"
            shown = f"{PROJECT}:{key}" if key in _SECRET_KEYS else f"{PROJECT}:{key} = {_show(value)}"
            problems.append(f"{shown}: must be {_rule([key])}, not {kind}")
            invalid.add(key)
            continue
        values[key] = value

    candidate = _merge_defaults(Settings, _defaults(), values)
    settings = None
    for _ in range(20):  # each round replaces the values pydantic refused by their defaults
        try:
            settings = Settings.model_validate({**candidate, "stack": stack})
            break
        except ValidationError as exc:
            before = candidate
            for error in exc.errors():
                loc = _clean_loc(error["loc"])
                problems.append(_describe(error, loc))
                invalid.add(_dotted(loc))
                candidate = _restore_default(candidate, loc, error["type"] == "extra_forbidden")
            if candidate == before:
                break
    if settings is None:  # every round replaces what it reported, so this is not expected
        raise SettingsError(list(dict.fromkeys(problems)))

    for keys, text in _cross_checks(settings, values):
        if not any(_overlaps(key, bad) for key in keys for bad in invalid):
            problems.append(text)
    if problems:
        raise SettingsError(list(dict.fromkeys(problems)))
    return settings


def load_settings() -> Settings:
    """Read this stack's config from the Pulumi runtime (the engine or the mock runtime)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret = set(runtime_config.get_config_secret_keys_env()) | {
        k for k in merged if runtime_config.is_config_secret(k)
    }
    problems = config_key_problems(merged, secret)
    own = {k: v for k, v in merged.items() if k.startswith(f"{PROJECT}:")}
    try:
        settings = settings_from_config(own, pulumi.get_stack())
    except SettingsError as exc:
        raise SettingsError(problems + exc.problems) from None
    if problems:
        raise SettingsError(problems)
    return settings


def config_key_problems(config: Mapping[str, Any], secret_keys: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Keys outside this project's namespace: a key without one, or one in a namespace nothing reads
    (a typo such as ``dict-rediss:namespace`` would otherwise be ignored)."""
    problems = []
    allowed = " and ".join(f"{ns}:<key> ({why})" for ns, why in OTHER_NAMESPACES.items())
    for raw_key, value in config.items():
        key = str(raw_key)
        namespace, colon, name = key.partition(":")
        if colon and (namespace == PROJECT or namespace in OTHER_NAMESPACES):
            continue
        secret = key in secret_keys or bool(_SECRET_NAME.search(key))
        head = f"{key}: " if secret else f"{key} = {_show(value)}: "
        tail = " (value not shown: it is a secret)" if secret else ""
        if not colon:
            problems.append(
                f"{head}a key without a namespace; stack config keys are written {PROJECT}:<key>, "
                f"here {PROJECT}:{key}{tail}"
            )
            continue
        close = difflib.get_close_matches(namespace, [PROJECT, *OTHER_NAMESPACES], n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}:{name}?)" if close else ""
        problems.append(
            f"{head}unknown config namespace '{namespace}'{hint}; this program reads only {PROJECT}:<key>, "
            f"and besides it allows {allowed}{tail}"
        )
    return problems


# --- stack files ------------------------------------------------------------------------------


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue  # an unhashable key: the base class refuses it with its own message
            if first != key_node.start_mark.line + 1:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, first)
        return super().construct_mapping(node, deep=deep)


def strict_yaml(text: str) -> Any:
    """YAML as the Pulumi CLI reads it: safe types only, and no key given twice in one mapping."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_stack_file(path: Path, shown: str | None = None) -> dict[str, Any]:
    """The ``config:`` mapping of a stack file (``{}`` when it has none), or :class:`StackFileError`
    with one line saying what is wrong and where."""
    name = shown or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StackFileError([f"{name}: cannot read the stack file ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise StackFileError([f"{name}: not a text file (UTF-8 YAML expected)"]) from None
    try:
        document = strict_yaml(text)
    except _DuplicateKey as dup:
        key = dup.key if isinstance(dup.key, str) else repr(dup.key)
        raise StackFileError(
            [
                f"{name} line {dup.line}: key {key!r} is given twice in the same block (first on line "
                f"{dup.first}); YAML would silently keep only the second: merge them into one"
            ]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark, context = exc.problem_mark or exc.context_mark, exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        started = f" started on line {context.line + 1}" if context and mark and context.line != mark.line else ""
        during = f" ({exc.context}{started})" if exc.context else ""
        raise StackFileError([f"{name}{where}: not valid YAML: {exc.problem or exc}{during}"]) from None
    except yaml.YAMLError as exc:
        raise StackFileError([f"{name}: not valid YAML ({exc})"]) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise StackFileError([f"{name}: the top level must be a mapping with a 'config:' key, not {_kind(document)}"])
    config = document.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise StackFileError(
            [f"{name}: 'config' must be a mapping of {PROJECT}:<key>: <value> lines, not {_kind(config)}"]
        )
    return config


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {value!r}"
    return f"the value {value!r}"


# --- describing problems ----------------------------------------------------------------------


def _defaults() -> dict[str, Any]:
    """Every setting's default, keyed as in the stack file (camelCase)."""
    return Settings(stack="-").model_dump(by_alias=True, exclude={"stack"})


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _field_by_alias(model: type[BaseModel], alias: str | int) -> FieldInfo | None:
    return next((f for n, f in model.model_fields.items() if (f.alias or n) == alias and n != "stack"), None)


def _merge_defaults(model: type[BaseModel], defaults: Any, given: Any) -> Any:
    """``given`` over ``defaults`` wherever both are blocks of a model: a partial block keeps the
    defaults of the keys it leaves out. Mappings of labels and lists are replaced, not merged."""
    if not isinstance(given, dict) or not isinstance(defaults, dict):
        return given
    merged = {**defaults, **given}
    for key, value in given.items():
        field = _field_by_alias(model, key)
        sub = _model_of(field.annotation) if field else None
        if sub is not None and isinstance(value, dict):
            merged[key] = _merge_defaults(sub, defaults.get(key), value)
    return merged


def _clean_loc(raw: tuple[Any, ...]) -> Loc:
    """A pydantic loc as stack-config keys: union member tags (``function-after[...]``) dropped."""
    loc: Loc = []
    model: type[BaseModel] | None = Settings
    container = False  # inside a mapping or list field: every further part is a key or an index
    for part in raw:
        if container:
            loc.append(part)
        elif model is not None:
            loc.append(part)
            field = _field_by_alias(model, part)
            annotation = _unwrap(field.annotation)[0] if field else None
            model = _model_of(annotation)
            container = model is None and typing.get_origin(annotation) in (dict, list, tuple)
        # else: past a scalar field, a union member's tag
    return loc


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _overlaps(key: str, bad: str) -> bool:
    """Whether a check reading ``key`` reads a value reported as ``bad`` (or a block holding it)."""
    return key == bad or key.startswith((bad + ".", bad + "[")) or bad.startswith((key + ".", key + "["))


def _restore_default(values: dict[str, Any], loc: Loc, unknown: bool) -> dict[str, Any]:
    """``values`` with the value at ``loc`` replaced by its default (an unknown key removed; a list
    item's whole list replaced)."""
    path: Loc = []
    for part in loc:
        if isinstance(part, int):
            break
        path.append(part)
    result = json.loads(json.dumps(values, default=list))  # a deep copy of plain data
    defaults: Any = _defaults()
    node: Any = result
    for part in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return result
        node = node[part]
        defaults = defaults.get(part) if isinstance(defaults, dict) else None
    last = path[-1] if path else None
    if not isinstance(node, dict) or last not in node:
        return result
    if unknown or not isinstance(defaults, dict) or last not in defaults:
        del node[last]
    else:
        node[last] = defaults[last]
    return result


_VALIDATOR_RULES = {
    _valid_memory: "a memory quantity above 0: a number with an optional unit k, M, G, T, Ki, Mi, Gi or Ti "
    "(e.g. 512Mi, 4Gi)",
    _valid_memory_or_zero: "a memory quantity: a number with an optional unit k, M, G, T, Ki, Mi, Gi or Ti (e.g. 2Gi)",
    _valid_cpu: "a CPU quantity above 0: cores (1, 0.5) or millicores (500m)",
    _valid_duration: "a Prometheus duration above zero (e.g. 15s, 1m, 1m30s)",
    _valid_bucket_name: BUCKET_NAME_RULE,
}


def _bounds(metadata: list[Any]) -> str:
    limits = {name: getattr(m, name) for m in metadata for name in ("ge", "gt", "le") if hasattr(m, name)}
    ge, gt, le = limits.get("ge"), limits.get("gt"), limits.get("le")
    low = f"from {ge}" if ge is not None else (f"above {gt}" if gt is not None else "")
    if low and le is not None:
        return f" {low} to {le}" if ge is not None else f" {low} and at most {le}"
    if ge is not None:
        return f" of at least {ge}"
    if gt is not None:
        return f" above {gt}"
    return f" of at most {le}" if le is not None else ""


def _type_rule(annotation: Any, metadata: list[Any]) -> str:
    base, extra = _unwrap(annotation)
    metadata = [*metadata, *extra]
    for item in metadata:
        rule = item if isinstance(item, _Rule) else _VALIDATOR_RULES.get(getattr(item, "func", None))  # type: ignore[arg-type]
        if rule:
            return rule
    origin = typing.get_origin(base)
    if base is bool:
        return "true or false"
    if base is int:
        return "a whole number" + _bounds(metadata)
    if base is float:
        return "a number" + _bounds(metadata)
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(base))
    if _model_of(base) is not None:
        return "a block of keys (" + ", ".join(_model_keys(base)) + ")"
    if origin is dict:
        return "a mapping of names to text values (quote numbers and true/false)"
    if origin in (list, tuple):
        items = typing.get_args(base)
        return f"a list, each item {_type_rule(items[0], [])}" if origin is list and items else "a list"
    if base is str:
        return "text"
    return ""


def _rule(loc: Loc) -> str:
    """What a value at ``loc`` may be, in words with its limits."""
    model: type[BaseModel] | None = Settings
    annotation: Any = None
    field: FieldInfo | None = None
    for part in loc:
        if model is not None:
            field = _field_by_alias(model, part)
            if field is None:
                return ""
            annotation = field.annotation
            model = _model_of(_unwrap(annotation)[0])
            continue
        field = None  # inside a container: the item's type
        base = _unwrap(annotation)[0]
        args = typing.get_args(base)
        origin = typing.get_origin(base)
        if origin is dict and len(args) == 2:
            annotation = args[1]
        elif origin is list and args:
            annotation = args[0]
        elif origin is tuple and isinstance(part, int) and part < len(args):
            annotation = args[part]
        else:
            return ""
        model = _model_of(_unwrap(annotation)[0])
    if field is not None and field.description:
        return field.description
    return _type_rule(annotation, list(field.metadata) if field is not None else [])


def _model_keys(model: type[BaseModel]) -> list[str]:
    return sorted(f.alias or name for name, f in model.model_fields.items() if name != "stack")


def _show(value: Any) -> str:
    """A value as written in the stack file: strings quoted, the rest as YAML/JSON spells it."""
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _empty(key: str) -> str:
    default = _defaults().get(key)
    if key in _SECRET_KEYS:
        return f"{PROJECT}:{key}: empty; must be {_rule([key])} (or leave the key out)"
    scalar = default is not None and not isinstance(default, (dict, list))
    keep = f"leave the key out for the default {_show(default)}" if scalar else "leave the key out for the defaults"
    return f"{PROJECT}:{key} = (empty): must be {_rule([key])}; {keep}"


def _describe(error: Mapping[str, Any], loc: Loc | None = None) -> str:
    """One pydantic error as 'key = value: what is allowed, in words'."""
    loc = _clean_loc(error["loc"]) if loc is None else loc
    key = f"{PROJECT}:{_dotted(loc)}"
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key(loc, error.get("input"))
    value = error.get("input")
    ctx = error.get("ctx") or {}
    rule = _rule(loc)
    if kind in ("value_error", "assertion_error"):
        words = str(ctx.get("error") or error["msg"]).removeprefix("Value error, ")
    elif kind == "string_pattern_mismatch":
        words = f"must be {rule or error['msg']}"
    elif kind == "literal_error":
        words = f"must be one of {ctx.get('expected')}"
    elif kind == "string_type" and isinstance(value, (bool, int, float)):
        words = f'must be text: quote it in the YAML file ("{json.dumps(value)}")'
    elif kind == "missing" and loc and isinstance(loc[-1], int):
        # a short item of a fixed-length list (a save point with one number): the list's own rule
        key = f"{PROJECT}:{_dotted(loc[:-1])}"
        words = f"too short; must be {_rule([part for part in loc if not isinstance(part, int)])}"
    elif kind == "missing":
        words = f"required: {rule}" if rule else "required"
    elif rule:
        words = f"must be {rule}"
    else:
        words = str(error["msg"])
    if value is None and kind != "missing":
        words = f"empty; {words}"
    if loc and loc[0] in _SECRET_KEYS:
        return f"{key}: {words} (value not shown: it is a secret)"
    return f"{key} = {_show(value)}: {words}"


def _unknown_key(loc: Loc, value: Any) -> str:
    key = f"{PROJECT}:{_dotted(loc)}"
    name = str(loc[-1])
    valid = _valid_keys([str(p) for p in loc[:-1]])
    text = f"{key}: unknown key; valid keys here: {', '.join(valid)}"
    block, dot, rest = name.partition(".")
    if len(loc) == 1 and dot and block in _OBJECT_KEYS:
        nested: Any = "<value>" if _SECRET_NAME.search(name) else _plain_value(value)
        for part in reversed(rest.split(".")):
            nested = {part: nested}
        written = yaml.safe_dump(nested, default_flow_style=True, width=1000).strip()[1:-1]
        return (
            f"{text}; a dotted name as in docs/settings.md is a path into a block: write {written} "
            f"under {PROJECT}:{block}:"
        )
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.75)
    return f"{text} (did you mean {close[0]}?)" if close else text


def _plain_value(value: Any) -> Any:
    """A config value as it was written (the engine passes numbers and objects as JSON text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _valid_keys(path: list[str]) -> list[str]:
    model: Any = Settings
    for part in path:
        field = next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return sorted(f.alias or name for name, f in model.model_fields.items() if name != "stack")


class _Found(list[tuple[tuple[str, ...], str]]):
    """Cross-key problems, each with the keys its rule reads (a rule reading a key already
    reported as wrong is left out: its verdict would be about the default standing in for it)."""

    def add(self, keys: str | tuple[str, ...], text: str) -> None:
        self.append(((keys,) if isinstance(keys, str) else keys, text))


def _given(values: Mapping[str, Any], dotted: str) -> bool:
    """Whether the stack config itself sets ``dotted`` (rather than the defaults)."""
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _cross_checks(s: Settings, given: Mapping[str, Any] | None = None) -> _Found:
    """Rules that span several keys; each message names the key, its value and the valid range."""
    p = f"{PROJECT}:"
    found = _Found()
    given = given or {}

    def default_note(key: str) -> str:
        return "" if _given(given, key) else " (the default: set it too)"

    images = [("image", s.image)] + ([("smoke.image", s.smoke.image)] if s.smoke.enabled else [])
    images += [("monitoring.exporterImage", s.monitoring.exporter_image)] if s.monitoring.enabled else []
    images += [("backup.awsCliImage", s.backup.aws_cli_image)] if s.backup.enabled else []
    for key, image in images:
        if not _IMAGE_PINNED.match(image) or re.search(r"\s", image):
            found.add(
                key,
                f"{p}{key} = {image!r}: pin the image to a full version tag (e.g. valkey/valkey:8.0.1-alpine) "
                "or a digest (name@sha256:<64 hex>); 'latest' and floating tags are not allowed",
            )

    n, q = s.sentinel.replicas, s.sentinel.quorum
    if n < 3 or n % 2 == 0:
        found.add(
            "sentinel.replicas",
            f"{p}sentinel.replicas = {n}: use an odd number of at least 3 Sentinels (3, 5, 7) so a "
            "majority survives the loss of one",
        )
    majority = n // 2 + 1
    if not majority <= q <= n:
        found.add(
            ("sentinel.quorum", "sentinel.replicas"),
            f"{p}sentinel.quorum = {q}: must be a majority of the {n} Sentinels, between {majority} and {n}",
        )

    for block, r in (("redis", s.redis), ("state", s.state)):
        found.extend(_memory_checks(block, r))
    r = s.redis
    st = s.state
    if st.maxmemory_policy != "noeviction":
        found.add(
            "state.maxmemoryPolicy",
            f"{p}state.maxmemoryPolicy = {st.maxmemory_policy!r}: must be 'noeviction': the state tier holds "
            "the decisions (idempotency records, rate-limit counters, workflow versions), and an evicted decision "
            "is a payment executed twice; a full state tier refuses writes instead (a retryable error)",
        )
    if not st.persistence.appendonly:
        found.add(
            "state.persistence.appendonly",
            f"{p}state.persistence.appendonly = false: must be true: without the AOF a full restart of the state "
            "tier loses every decision since the last RDB save",
        )
    if st.persistence.appendfsync == "no":
        found.add(
            "state.persistence.appendfsync",
            f"{p}state.persistence.appendfsync = 'no': must be 'everysec' (the default) or 'always': with 'no' the "
            "kernel decides when the AOF reaches the disk, and a node restart loses the decisions written since",
        )
    if st.master_name == s.master_name:
        found.add(
            ("state.masterName", "masterName"),
            f"{p}state.masterName = {st.master_name!r}: must differ from masterName ({s.master_name!r}): the "
            "Sentinels monitor the cache and the state tier under one name each",
        )

    all_resources = (
        ("redis.resources", r.resources),
        ("state.resources", st.resources),
        ("sentinel.resources", s.sentinel.resources),
        ("smoke.resources", s.smoke.resources),
        ("monitoring.exporterResources", s.monitoring.exporter_resources),
        ("backup.resources", s.backup.resources),
    )
    for name, res in all_resources:
        for unit, measure in (("memory", memory_bytes), ("cpu", cpu_millicores)):
            request, limit_value = getattr(res.requests, unit), getattr(res.limits, unit)
            if measure(request) > measure(limit_value):
                found.add(
                    (f"{name}.requests.{unit}", f"{name}.limits.{unit}"),
                    f"{p}{name}.requests.{unit} = {request!r}{default_note(f'{name}.requests.{unit}')}: must not "
                    f"exceed limits.{unit} {limit_value!r}{default_note(f'{name}.limits.{unit}')}",
                )

    mon = s.monitoring
    if duration_seconds(mon.scrape_timeout) > duration_seconds(mon.scrape_interval):
        found.add(
            ("monitoring.scrapeTimeout", "monitoring.scrapeInterval"),
            f"{p}monitoring.scrapeTimeout = {mon.scrape_timeout!r}: must not exceed "
            f"monitoring.scrapeInterval {mon.scrape_interval!r} (Prometheus refuses such a scrape config)",
        )

    needed = s.sentinel.prestop_timeout_seconds() + SHUTDOWN_BUDGET_SECONDS
    for block, tier in (("redis", r), ("state", st)):
        if tier.termination_grace_period_seconds < needed:
            found.add(
                (f"{block}.terminationGracePeriodSeconds", "sentinel.failoverTimeoutMilliseconds"),
                f"{p}{block}.terminationGracePeriodSeconds = {tier.termination_grace_period_seconds}: must be at "
                f"least {needed}: the preStop handover may take {s.sentinel.prestop_timeout_seconds()} s "
                f"(sentinel.failoverTimeoutMilliseconds + 2 s) and the shutdown {SHUTDOWN_BUDGET_SECONDS} s",
            )
        if tier.min_replicas_to_write > tier.replicas - 1:
            found.add(
                (f"{block}.minReplicasToWrite", f"{block}.replicas"),
                f"{p}{block}.minReplicasToWrite = {tier.min_replicas_to_write}: must be at most the number of "
                f"replicas ({tier.replicas - 1}), or the master refuses every write",
            )

    if s.tls.renew_before_hours >= s.tls.duration_hours:
        found.add(
            ("tls.renewBeforeHours", "tls.durationHours"),
            f"{p}tls.renewBeforeHours = {s.tls.renew_before_hours}: must be below tls.durationHours "
            f"({s.tls.duration_hours}), or cert-manager renews the certificate continuously",
        )

    if s.tls.source == "stack-ca" and s.tls.ca_duration_hours < 2 * s.tls.duration_hours:
        found.add(
            ("tls.caDurationHours", "tls.durationHours", "tls.source"),
            f"{p}tls.caDurationHours = {s.tls.ca_duration_hours}: must be at least twice tls.durationHours "
            f"({2 * s.tls.duration_hours}): the CA is re-issued tls.durationHours before it expires, so a "
            "certificate it signs never outlives it",
        )

    if s.redis_password is not None and not PASSWORD_PATTERN.match(s.redis_password):
        found.add(
            "redisPassword",
            f"{p}redisPassword: must be 16-128 characters from A-Z a-z 0-9 . _ ~ + = - "
            "(value not shown: it is a secret)",
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
                found.add(
                    label_setting,
                    f"{p}{label_setting} = {json.dumps({label_key: label_value})}: not a valid Kubernetes label "
                    "(key: an optional DNS-subdomain prefix and '/', then a name of 1-63 letters, digits, '-', "
                    "'_' or '.' starting and ending with a letter or digit; value: up to 63 of the same, may be "
                    "empty)",
                )
    if not s.client_selector:
        found.add("clientSelector", f"{p}clientSelector = {{}}: name at least one label that client pods carry")
    found.extend(_backup_checks(s))
    return found


def _memory_checks(block: str, r: RedisSettings) -> _Found:
    """maxmemory of one data tier (``redis`` or ``state``): above 0, one way of setting it, and room
    under the container limit for a save's copy-on-write."""
    p = f"{PROJECT}:"
    found = _Found()
    if r.maxmemory is not None and r.maxmemory_fraction is not None:
        found.add(
            (f"{block}.maxmemory", f"{block}.maxmemoryFraction"),
            f"{p}{block}.maxmemory = {r.maxmemory!r} and {block}.maxmemoryFraction = {r.maxmemory_fraction}: "
            "set only one of them",
        )
    limit = memory_bytes(r.resources.limits.memory)
    maxmemory = r.maxmemory_bytes()
    share = maxmemory / limit
    key = f"{block}.maxmemory" if r.maxmemory is not None else f"{block}.maxmemoryFraction"
    shown = repr(r.maxmemory) if r.maxmemory is not None else str(r.maxmemory_fraction or 0.5)
    memory_keys = (f"{block}.maxmemory", f"{block}.maxmemoryFraction", f"{block}.resources.limits.memory")
    if maxmemory <= 0:
        found.add(memory_keys, f"{p}{key} = {shown}: must be above 0 (an unbounded Redis grows until it is OOM-killed)")
    elif r.persistence.enabled and share > MAX_PERSISTENT_MEMORY_SHARE:
        found.add(
            (*memory_keys, f"{block}.persistence"),
            f"{p}{key} = {shown}: is {share:.0%} of the memory limit {r.resources.limits.memory}; with "
            f"RDB or AOF on it must be at most {MAX_PERSISTENT_MEMORY_SHARE:.0%} "
            f"({int(limit * MAX_PERSISTENT_MEMORY_SHARE)} bytes) because a save forks and copy-on-write "
            "can double memory",
        )
    elif share > 1:
        found.add(memory_keys, f"{p}{key} = {shown}: exceeds the memory limit {r.resources.limits.memory}")

    return found


# Five cron fields of digits, '*', ',', '-' and '/' (or a macro such as @daily).
_CRON = re.compile(r"^(@(yearly|annually|monthly|weekly|daily|hourly)|([0-9*,/-]+ ){4}[0-9*,/-]+)$")


def _backup_checks(s: Settings) -> _Found:
    """The backup section: the schedule always (the alerts read it), the rest only when backups are
    on (a disabled section may be partial)."""
    p = f"{PROJECT}:backup."
    b = s.backup
    found = _Found()
    if b.enabled and b.bucket_name is None:
        found.add(
            "backup.bucketName",
            f"{p}bucketName: required when backup.enabled is true (an S3 bucket name the stack creates)",
        )
    if b.enabled and b.oidc_provider_arn is None:
        found.add(
            "backup.oidcProviderArn",
            f"{p}oidcProviderArn: required when backup.enabled is true: the EKS cluster's IAM OIDC provider, "
            "e.g. arn:aws:iam::123456789012:oidc-provider/oidc.eks.sa-east-1.amazonaws.com/id/EXAMPLE",
        )
    if not _CRON.match(b.schedule) or not croniter.is_valid(b.schedule):
        found.add(
            "backup.schedule",
            f"{p}schedule = {b.schedule!r}: a five-field cron expression (e.g. '0 */6 * * *', every 6 hours)",
        )
    else:
        floor = max(MIN_BACKUP_INTERVAL_SECONDS, b.active_deadline_seconds)
        try:
            gap: float | None = b.shortest_gap_seconds(stop_below=floor)
        except CroniterBadDateError:
            gap = None
            found.add(
                "backup.schedule",
                f"{p}schedule = {b.schedule!r}: never runs (no date matches it, like 30 February); use a "
                "five-field cron expression that matches (e.g. '0 */6 * * *', every 6 hours)",
            )
        if gap is not None and gap < floor:
            found.add(
                ("backup.schedule", "backup.activeDeadlineSeconds"),
                f"{p}schedule = {b.schedule!r}: runs only {_span(gap)} apart; backups must be at least "
                f"{_span(MIN_BACKUP_INTERVAL_SECONDS)} apart and at least backup.activeDeadlineSeconds "
                f"({b.active_deadline_seconds} s): each run dumps up to maxmemory and uploads it, and a run "
                "still going makes the next one be skipped (e.g. '0 */6 * * *', every 6 hours)",
            )
    # One dump at a time (the tiers are backed up one after the other): the larger tier's.
    block, maxmemory = max(
        (("redis", s.redis.maxmemory_bytes()), ("state", s.state.maxmemory_bytes())), key=lambda x: x[1]
    )
    if b.enabled and memory_bytes(b.scratch_size) < maxmemory:
        found.add(
            (
                "backup.scratchSize",
                f"{block}.maxmemory",
                f"{block}.maxmemoryFraction",
                f"{block}.resources.limits.memory",
            ),
            f"{p}scratchSize = {b.scratch_size!r}: must hold one dump, at least {block} maxmemory ({maxmemory} bytes, "
            "the larger tier's)",
        )
    return found


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{int(seconds)} s"
