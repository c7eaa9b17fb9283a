"""The alert rules of the cache layer, as data: one list rendered into the PrometheusRule and into
the plain rules file that promtool checks and unit-tests.

Every expression is scoped to one stack: ``$server`` and ``$sentinel`` expand to the namespace and
component labels the PodMonitor attaches to each target (``components.monitoring``), so two stacks
in one Prometheus never mix into one count. Metric names are those redis_exporter 1.45 really
exports (proven by tests/test_exporter_live.py against real Redis and Sentinel processes), plus a
few from kube-state-metrics and cAdvisor (``KUBERNETES_METRICS``), which kube-prometheus-stack
scrapes itself.

The seed's five rules are corrected here: RedisDown reads ``redis_up`` (``up`` only says the
exporter answered), the hit rate uses ``rate()`` with a zero-traffic guard, memory is compared with
maxmemory only where maxmemory is set, replication uses the link state, lag in seconds and
offsets (``redis_replication_lag_bytes`` does not exist), and connections are a share of
``maxclients``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import Template
from typing import Any

from components import topology as t
from components.settings import Settings

# Thresholds (the seed's numbers where it had one).
HIT_RATE_MIN = 0.7  # seed: hit rate > 70 %
MIN_LOOKUPS_PER_SECOND = 1.0  # below this the hit rate says nothing (zero-traffic guard)
MEMORY_USED_MAX_SHARE = 0.9  # seed: 90 % of maxmemory
CLIENTS_MAX_SHARE = 0.8  # of maxclients
OFFSET_LAG_MAX_BYTES = 10 * 1024 * 1024  # seed: 10 MB behind the master
CONTAINER_MEMORY_MAX_SHARE = 0.9  # of the container memory limit, before the OOM killer

# Metrics that come from kube-state-metrics or cAdvisor, not from redis_exporter.
KUBERNETES_METRICS = frozenset(
    {
        "container_memory_working_set_bytes",
        "kube_pod_container_resource_limits",
        "kube_pod_container_status_last_terminated_reason",
        "kube_pod_container_status_restarts_total",
        "kube_cronjob_status_last_successful_time",
        "kube_cronjob_created",
    }
)


@dataclass(frozen=True)
class Alert:
    """One alerting rule. ``expr`` may use ``$server``, ``$sentinel``, ``$ns`` and the numbers in
    :func:`placeholders`; ``description`` is a Prometheus template (``$labels``, ``$value``)."""

    name: str
    expr: str
    for_: str
    severity: str  # critical: page someone now; warning: look at it during the day
    summary: str
    description: str

    @property
    def runbook(self) -> str:
        """The runbook's file name under docs/runbooks/: the alert name in kebab case."""
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", self.name).lower() + ".md"


ALERTS: tuple[Alert, ...] = (
    Alert(
        "RedisDown",
        "redis_up{$server} == 0",
        "1m",
        "critical",
        "Redis in {{ $labels.pod }} does not answer",
        "The exporter in {{ $labels.pod }} ({{ $labels.namespace }}) has not been able to reach Redis "
        "for 1 minute (redis_up = 0).",
    ),
    Alert(
        "RedisMissingMaster",
        '(count(redis_instance_info{$server,role="master"}) or vector(0)) < 1',
        "1m",
        "critical",
        "No Redis master in $ns",
        "No Redis pod in $ns has reported role master for 1 minute: writes fail until Sentinel promotes one.",
    ),
    Alert(
        "RedisTooManyMasters",
        'count(redis_instance_info{$server,role="master"}) > 1',
        "1m",
        "critical",
        "More than one Redis master in $ns",
        "{{ $value }} Redis pods in $ns report role master: clients may write to a master that "
        "Sentinel will demote, and those writes are lost.",
    ),
    Alert(
        "RedisReplicaLinkDown",
        "redis_master_link_up{$server} == 0",
        "2m",
        "warning",
        "Replica {{ $labels.pod }} has lost its master",
        "The replication link of {{ $labels.pod }} to {{ $labels.master_host }} has been down for 2 minutes: "
        "it serves stale reads and cannot take over cleanly.",
    ),
    Alert(
        "RedisDisconnectedReplicas",
        'max(redis_connected_slaves{$server} and on (pod) redis_instance_info{$server,role="master"}) '
        "< $replicas_expected",
        "2m",
        "warning",
        "The master in $ns has fewer replicas than configured",
        "Replicas connected to the master: {{ $value }} for 2 minutes, of $replicas_expected configured.",
    ),
    Alert(
        "RedisReplicationLagHigh",
        "max by (namespace, pod, slave_ip) (redis_connected_slave_lag_seconds{$server}) > $max_lag",
        "1m",
        "warning",
        "Replica {{ $labels.slave_ip }} lags behind {{ $labels.pod }}",
        "The replica at {{ $labels.slave_ip }} last acknowledged the master {{ $value }} s ago; beyond "
        "$max_lag s (min-replicas-max-lag) it no longer counts for min-replicas-to-write.",
    ),
    Alert(
        "RedisReplicationOffsetLagHigh",
        "(redis_master_repl_offset{$server} - on (namespace, pod) group_right "
        "redis_connected_slave_offset_bytes{$server}) > $offset_lag",
        "5m",
        "warning",
        "Replica {{ $labels.slave_ip }} is far behind in the replication stream",
        "The replica at {{ $labels.slave_ip }} is {{ $value | humanize1024 }}B behind the master "
        "{{ $labels.pod }} for 5 minutes (limit $offset_lag_human).",
    ),
    Alert(
        "RedisCacheHitRateLow",
        "(sum(rate(redis_keyspace_hits_total{$server}[5m])) / (sum(rate(redis_keyspace_hits_total{$server}[5m])) "
        "+ sum(rate(redis_keyspace_misses_total{$server}[5m])))) < $hit_rate "
        "and (sum(rate(redis_keyspace_hits_total{$server}[5m])) "
        "+ sum(rate(redis_keyspace_misses_total{$server}[5m]))) > $min_lookups",
        "10m",
        "warning",
        "Redis cache hit rate in $ns is low",
        "The cache hit rate is {{ $value | humanizePercentage }} for 10 minutes (target above $hit_rate_human).",
    ),
    Alert(
        "RedisMemoryHigh",
        "redis_memory_used_bytes{$server} / on (namespace, pod) (redis_memory_max_bytes{$server} > 0) > $memory_share",
        "5m",
        "warning",
        "Redis in {{ $labels.pod }} is near maxmemory",
        "{{ $labels.pod }} uses {{ $value | humanizePercentage }} of its maxmemory for 5 minutes; "
        "beyond it the eviction policy drops keys.",
    ),
    Alert(
        "RedisEvictions",
        "rate(redis_evicted_keys_total{$server}[5m]) > 0",
        "15m",
        "warning",
        "Redis in {{ $labels.pod }} is evicting keys",
        "{{ $labels.pod }} has been evicting {{ $value | humanize }} keys/s for 15 minutes: the cache "
        "is full and drops entries before their TTL.",
    ),
    Alert(
        "RedisTooManyConnections",
        # maxclients from the settings (rendered into redis.conf): the exporter runs without CONFIG GET.
        "redis_connected_clients{$server} / $maxclients > $clients_share",
        "5m",
        "warning",
        "Redis in {{ $labels.pod }} is near maxclients",
        "{{ $labels.pod }} has {{ $value | humanizePercentage }} of maxclients connected for 5 minutes; "
        "at 100 % new connections are refused.",
    ),
    Alert(
        "RedisRejectedConnections",
        "increase(redis_rejected_connections_total{$server}[5m]) > 0",
        "0m",
        "warning",
        "Redis in {{ $labels.pod }} rejects connections",
        "{{ $labels.pod }} rejected {{ $value | humanize }} connections in the last 5 minutes (maxclients reached).",
    ),
    Alert(
        "RedisRdbSaveFailed",
        "redis_rdb_last_bgsave_status{$server} == 0",
        "0m",
        "critical",
        "The last RDB save of {{ $labels.pod }} failed",
        "The last background save of {{ $labels.pod }} failed; with stop-writes-on-bgsave-error the "
        "master refuses writes until a save succeeds.",
    ),
    Alert(
        "RedisAofWriteFailed",
        "redis_aof_last_write_status{$server} == 0",
        "0m",
        "critical",
        "AOF writes fail on {{ $labels.pod }}",
        "The last AOF write of {{ $labels.pod }} failed; Redis refuses writes while it cannot append to the AOF.",
    ),
    Alert(
        "RedisContainerMemoryNearLimit",
        'max by (namespace, pod, container) (container_memory_working_set_bytes{$ns_match,container=~"$containers"}) '
        "/ on (namespace, pod, container) max by (namespace, pod, container) "
        '(kube_pod_container_resource_limits{$ns_match,resource="memory",container=~"$containers"}) '
        "> $container_share",
        "5m",
        "warning",
        "Container {{ $labels.container }} in {{ $labels.pod }} is near its memory limit",
        "{{ $labels.pod }}/{{ $labels.container }} uses {{ $value | humanizePercentage }} of its memory limit "
        "for 5 minutes; at 100 % it is OOM-killed (a fork for RDB or AOF can double Redis memory).",
    ),
    Alert(
        "RedisContainerOOMKilled",
        "max by (namespace, pod, container) (kube_pod_container_status_last_terminated_reason"
        '{$ns_match,reason="OOMKilled",container=~"$containers"}) == 1 and on (namespace, pod, container) '
        'increase(kube_pod_container_status_restarts_total{$ns_match,container=~"$containers"}[15m]) > 0',
        "0m",
        "warning",
        "Container {{ $labels.container }} in {{ $labels.pod }} was OOM-killed",
        "{{ $labels.pod }}/{{ $labels.container }} restarted in the last 15 minutes after the kernel "
        "killed it for exceeding its memory limit.",
    ),
    Alert(
        "RedisSentinelDown",
        "redis_up{$sentinel} == 0",
        "1m",
        "warning",
        "Sentinel in {{ $labels.pod }} does not answer",
        "The exporter in {{ $labels.pod }} has not been able to reach its Sentinel for 1 minute; one "
        "more lost Sentinel may block failover.",
    ),
    Alert(
        "RedisSentinelQuorumAtRisk",
        "min(redis_sentinel_master_ok_sentinels{$sentinel}) <= $sentinels_needed",
        "2m",
        "warning",
        "Sentinels in $ns are one loss away from blocking failover",
        "A Sentinel sees only {{ $value }} healthy Sentinels (itself included) for 2 minutes; a failover "
        "needs $sentinels_needed (quorum $quorum and a majority of $sentinels), so one more loss blocks it.",
    ),
    Alert(
        "RedisSentinelQuorumLost",
        "(max(redis_sentinel_master_ckquorum_status{$sentinel}) or vector(0)) < 1",
        "1m",
        "critical",
        "Sentinels in $ns cannot fail over",
        "No Sentinel in $ns has passed SENTINEL CKQUORUM for 1 minute: if the master fails now, no "
        "replica is promoted.",
    ),
    Alert(
        "RedisBackupMissing",
        '(time() - kube_cronjob_status_last_successful_time{$ns_match,cronjob="$backup_cronjob"} > $backup_max_age) '
        'or (absent(kube_cronjob_status_last_successful_time{$ns_match,cronjob="$backup_cronjob"}) '
        'and on () (time() - kube_cronjob_created{$ns_match,cronjob="$backup_cronjob"} > $backup_max_age))',
        "0m",
        "critical",
        "No successful Redis backup in $ns for $backup_max_age_human",
        "The backup CronJob $backup_cronjob has had no successful run for more than twice its "
        "interval ($backup_max_age_human): a restore would lose more than the recovery point allows.",
    ),
)


def _human_seconds(seconds: int) -> str:
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds}s"


def placeholders(settings: Settings, backup_interval_seconds: int | None = None) -> dict[str, str]:
    """The values ``$...`` placeholders take for one stack, in the rules and the dashboard."""
    if backup_interval_seconds is None:
        backup_interval_seconds = settings.backup.interval_seconds()
    topo = t.Topology.of(settings)
    ns = settings.namespace
    sentinels, quorum = settings.sentinel.replicas, settings.sentinel.quorum
    backup_max_age = 2 * backup_interval_seconds
    return {
        "ns": ns,
        "ns_match": f'namespace="{ns}"',
        "server": f'namespace="{ns}",component="server"',
        "sentinel": f'namespace="{ns}",component="sentinel"',
        "containers": f"redis|sentinel|{t.EXPORTER_CONTAINER}",
        "replicas_expected": str(settings.redis.replicas - 1),
        "max_lag": str(settings.redis.min_replicas_max_lag),
        "offset_lag": str(OFFSET_LAG_MAX_BYTES),
        "offset_lag_human": f"{OFFSET_LAG_MAX_BYTES // 2**20} MiB",
        "hit_rate": str(HIT_RATE_MIN),
        "hit_rate_human": f"{HIT_RATE_MIN:.0%}",
        "min_lookups": str(MIN_LOOKUPS_PER_SECOND),
        "memory_share": str(MEMORY_USED_MAX_SHARE),
        "clients_share": str(CLIENTS_MAX_SHARE),
        "maxclients": str(settings.redis.maxclients),
        "container_share": str(CONTAINER_MEMORY_MAX_SHARE),
        # A failover needs the quorum to agree the master is down and a majority to authorise it.
        "sentinels_needed": str(max(quorum, sentinels // 2 + 1)),
        "quorum": str(quorum),
        "sentinels": str(sentinels),
        "backup_cronjob": topo.backup_cronjob,
        "backup_max_age": str(backup_max_age),
        "backup_max_age_human": _human_seconds(backup_max_age),
    }


def alert_rules(settings: Settings, backup_interval_seconds: int | None = None) -> list[dict[str, Any]]:
    """The rules of one stack, as Prometheus rule-file entries (``alert``, ``expr``, ``for``, ...).

    ``backup_interval_seconds`` defaults to the longest gap of the stack's backup schedule.
    """
    if backup_interval_seconds is None:
        backup_interval_seconds = settings.backup.interval_seconds()
    if backup_interval_seconds <= 0:
        raise ValueError(f"backup_interval_seconds = {backup_interval_seconds}: must be a positive number of seconds")
    ctx = placeholders(settings, backup_interval_seconds)
    base = settings.monitoring.runbook_base_url
    rules = []
    for alert in ALERTS:
        rules.append(
            {
                "alert": alert.name,
                "expr": Template(alert.expr).substitute(ctx),
                "for": alert.for_,
                "labels": {"severity": alert.severity, "namespace": settings.namespace},
                "annotations": {
                    "summary": Template(alert.summary).safe_substitute(ctx),
                    "description": Template(alert.description).safe_substitute(ctx),
                    "runbook_url": f"{base}/{alert.runbook}",
                },
            }
        )
    return rules


def rule_groups(settings: Settings, backup_interval_seconds: int | None = None) -> dict[str, Any]:
    """The whole rules file (also the PrometheusRule's ``spec``): one group per stack."""
    return {
        "groups": [{"name": f"dict-redis-{settings.stack}", "rules": alert_rules(settings, backup_interval_seconds)}]
    }


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (for the live check against the real exporter).

    Hand-written because no Python PromQL parser is kept up well enough to depend on: label
    matchers, ranges, strings and ``by``/``on`` label lists are removed, then every identifier
    left that is not a function call or an operator keyword is a metric name. Enough for the
    expressions of this repository; tests/test_alerts.py checks it on known expressions.
    """
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b(group_left|group_right)\b(\s*\([^)]*\))?", " ", text)
    names = set()
    for match in re.finditer(r"(?<![0-9.])\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        word, is_call = match.group(1), match.group(2)
        if not is_call and word not in _PROMQL_KEYWORDS:
            names.add(word)
    return names


_PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
