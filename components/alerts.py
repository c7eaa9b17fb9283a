"""The alert rules of the cache layer, as data: one list rendered into the PrometheusRule and into
the plain rules file that promtool checks and unit-tests.

Every expression is scoped to one stack: ``$server`` and ``$sentinel`` expand to the namespace and
component labels the PodMonitor attaches to each target (``components.monitoring``), so two stacks
in one Prometheus never mix into one count. Metric names are those redis_exporter 1.45 really
exports (proven by tests/test_exporter_live.py against real Redis and Sentinel processes), plus a
few from kube-state-metrics and cAdvisor (``KUBERNETES_METRICS``), which kube-prometheus-stack
scrapes itself.

Two data tiers (issue 13), told apart by the ``tier`` label the PodMonitor copies from the pods:
``$cache`` and ``$state`` select one tier's Redis pods, ``$server`` both. The rules about a cache
doing its job (evictions as a warning, hit rate, memory near maxmemory) read the cache tier only;
the state tier, which never evicts, has its own: memory above 80 % and 90 % of maxmemory, and any
eviction at all. The rules about availability (down, masters, replication, connections,
persistence) cover every tier, and those that count per cluster count per tier (one master per
tier is not two masters) or, on the Sentinels, per monitored master name.

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
MEMORY_USED_MAX_SHARE = 0.9  # cache tier, seed: 90 % of maxmemory
STATE_MEMORY_HIGH_SHARE = 0.8  # state tier: look at it today
STATE_MEMORY_FULL_SHARE = 0.9  # state tier: page, it refuses writes at 100 %
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

# What a full state tier does to the callers, in every description that warns of one.
_STATE_FULL_MEANS = (
    "At 100 % it refuses every write (noeviction): new idempotency claims fail with a retryable "
    "error (the caller answers 503, never CLAIMED), and rate-limit checks and workflow updates fail "
    "too, while replays of completed requests still work."
)


@dataclass(frozen=True)
class Alert:
    """One alerting rule. ``expr`` may use ``$server``, ``$cache``, ``$state``, ``$sentinel``,
    ``$ns`` and the numbers in :func:`placeholders`; ``description`` is a Prometheus template
    (``$labels``, ``$value``)."""

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


def _each_tier(expr: str) -> str:
    """``expr`` once per data tier, joined by ``or``, for rules whose threshold is the tier's own:
    ``$tier`` becomes ``$cache`` or ``$state``, so ``{$tier}`` is the tier's selector and
    ``$tier_max_lag`` its own setting."""
    return " or ".join(f"({expr.replace('$tier', '$' + tier)})" for tier in t.TIERS)


def _tier_value(name: str) -> str:
    """A description fragment: the ``$<tier>_<name>`` of the tier the alert is about."""
    return "".join(f'{{{{ if eq $labels.tier "{tier}" }}}}${tier}_{name}{{{{ end }}}}' for tier in t.TIERS)


def _zero_per(label: str, values: list[str]) -> str:
    """One 0 sample per value of ``label``: what ``or on (label)`` fills a missing group with, so a
    tier (or a Sentinel master) that reports nothing at all still counts as none."""
    return "(" + " or ".join(f'label_replace(vector(0), "{label}", "{v}", "", "")' for v in values) + ")"


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
        '(count by (tier) (redis_instance_info{$server,role="master"}) or on (tier) $zero_per_tier) < 1',
        "1m",
        "critical",
        "No Redis master in the {{ $labels.tier }} tier of $ns",
        "No pod of the {{ $labels.tier }} tier in $ns has reported role master for 1 minute: writes to "
        "that tier fail until Sentinel promotes one (on the state tier, new claims get a retryable error).",
    ),
    Alert(
        "RedisTooManyMasters",
        'count by (tier) (redis_instance_info{$server,role="master"}) > 1',
        "1m",
        "critical",
        "More than one Redis master in the {{ $labels.tier }} tier of $ns",
        "{{ $value }} pods of the {{ $labels.tier }} tier in $ns report role master: clients may write to "
        "a master that Sentinel will demote, and those writes are lost.",
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
        _each_tier(
            'max by (tier) (redis_connected_slaves{$tier} and on (pod) redis_instance_info{$tier,role="master"}) '
            "< $tier_replicas_expected"
        ),
        "2m",
        "warning",
        "The {{ $labels.tier }} master in $ns has fewer replicas than configured",
        "Replicas connected to the master of the {{ $labels.tier }} tier: {{ $value }} for 2 minutes, of "
        + _tier_value("replicas_expected")
        + " configured.",
    ),
    Alert(
        "RedisReplicationLagHigh",
        _each_tier(
            "max by (namespace, tier, pod, slave_ip) (redis_connected_slave_lag_seconds{$tier}) > $tier_max_lag"
        ),
        "1m",
        "warning",
        "Replica {{ $labels.slave_ip }} lags behind {{ $labels.pod }}",
        "The replica at {{ $labels.slave_ip }} last acknowledged the master {{ $value }} s ago; beyond "
        + _tier_value("max_lag")
        + " s (min-replicas-max-lag of the {{ $labels.tier }} tier) it no longer counts for "
        "min-replicas-to-write.",
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
        "(sum(rate(redis_keyspace_hits_total{$cache}[5m])) / (sum(rate(redis_keyspace_hits_total{$cache}[5m])) "
        "+ sum(rate(redis_keyspace_misses_total{$cache}[5m])))) < $hit_rate "
        "and (sum(rate(redis_keyspace_hits_total{$cache}[5m])) "
        "+ sum(rate(redis_keyspace_misses_total{$cache}[5m]))) > $min_lookups",
        "10m",
        "warning",
        "Redis cache hit rate in $ns is low",
        "The cache tier's hit rate is {{ $value | humanizePercentage }} for 10 minutes (target above $hit_rate_human).",
    ),
    Alert(
        "RedisMemoryHigh",
        "redis_memory_used_bytes{$cache} / on (namespace, tier, pod) (redis_memory_max_bytes{$cache} > 0) "
        "> $memory_share",
        "5m",
        "warning",
        "Redis in {{ $labels.pod }} is near maxmemory",
        "{{ $labels.pod }} uses {{ $value | humanizePercentage }} of its maxmemory for 5 minutes; "
        "beyond it the cache tier's eviction policy drops keys.",
    ),
    Alert(
        "RedisEvictions",
        "rate(redis_evicted_keys_total{$cache}[5m]) > 0",
        "15m",
        "warning",
        "Redis in {{ $labels.pod }} is evicting keys",
        "{{ $labels.pod }} has been evicting {{ $value | humanize }} keys/s for 15 minutes: the cache "
        "is full and drops entries before their TTL.",
    ),
    Alert(
        "RedisStateMemoryHigh",
        "redis_memory_used_bytes{$state} / on (namespace, tier, pod) (redis_memory_max_bytes{$state} > 0) "
        '> $state_memory_high and on (namespace, pod) redis_instance_info{$state,role="master"}',
        "5m",
        "warning",
        "The state tier in $ns is above $state_memory_high_human of its maxmemory",
        "{{ $labels.pod }}, the state tier's master ($state_master), uses {{ $value | humanizePercentage }} "
        "of its maxmemory for 5 minutes. " + _STATE_FULL_MEANS + " Raise state.maxmemory before it fills.",
    ),
    Alert(
        "RedisStateTierFull",
        "redis_memory_used_bytes{$state} / on (namespace, tier, pod) (redis_memory_max_bytes{$state} > 0) "
        '> $state_memory_full and on (namespace, pod) redis_instance_info{$state,role="master"}',
        "2m",
        "critical",
        "The state tier in $ns is full or about to be: claims fail",
        "{{ $labels.pod }}, the state tier's master ($state_master), uses {{ $value | humanizePercentage }} "
        "of its maxmemory (alert threshold $state_memory_full_human). " + _STATE_FULL_MEANS,
    ),
    Alert(
        "RedisStateEvictions",
        "increase(redis_evicted_keys_total{$state}[10m]) > 0",
        "0m",
        "critical",
        "The state tier evicted keys in {{ $labels.pod }}",
        "{{ $labels.pod }} evicted {{ $value | humanize }} keys in the last 10 minutes. The state tier must "
        "never evict: every evicted key is a lost decision (an idempotency record whose request can run "
        "twice, a rate-limit counter, a workflow version), so its maxmemory-policy must be noeviction.",
    ),
    Alert(
        "RedisStateEvictionPolicy",
        # Before any eviction: the policy is in INFO memory, which the exporter reports here.
        'max by (namespace, tier, pod, maxmemory_policy) (redis_instance_info{$state,maxmemory_policy!="noeviction"})',
        "0m",
        "critical",
        "The state tier's {{ $labels.pod }} runs maxmemory-policy {{ $labels.maxmemory_policy }}",
        "{{ $labels.pod }} of the state tier runs maxmemory-policy {{ $labels.maxmemory_policy }} instead of "
        "noeviction: once it is full it will evict decisions (idempotency records, rate-limit counters, "
        "workflow versions) instead of refusing writes with a retryable error.",
    ),
    Alert(
        "RedisTooManyConnections",
        # maxclients from the settings (rendered into redis.conf): the exporter runs without CONFIG GET.
        _each_tier("redis_connected_clients{$tier} / $tier_maxclients > $clients_share"),
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
        "min by (master_name) (redis_sentinel_master_ok_sentinels{$sentinel}) <= $sentinels_needed",
        "2m",
        "warning",
        "Sentinels in $ns are one loss away from blocking failover of {{ $labels.master_name }}",
        "A Sentinel sees only {{ $value }} healthy Sentinels (itself included) monitoring "
        "{{ $labels.master_name }} for 2 minutes; a failover needs $sentinels_needed (quorum $quorum and a "
        "majority of $sentinels), so one more loss blocks it.",
    ),
    Alert(
        "RedisSentinelQuorumLost",
        "(max by (master_name) (redis_sentinel_master_ckquorum_status{$sentinel}) or on (master_name) "
        "$zero_per_master) < 1",
        "1m",
        "critical",
        "Sentinels in $ns cannot fail over {{ $labels.master_name }}",
        "No Sentinel in $ns has passed SENTINEL CKQUORUM {{ $labels.master_name }} for 1 minute: if that "
        "master fails now, no replica is promoted.",
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
    server = f'namespace="{ns}",component="server"'
    values = {
        "ns": ns,
        "ns_match": f'namespace="{ns}"',
        "server": server,
        "sentinel": f'namespace="{ns}",component="sentinel"',
        "containers": f"redis|sentinel|{t.EXPORTER_CONTAINER}",
        "zero_per_tier": _zero_per("tier", list(t.TIERS)),
        "zero_per_master": _zero_per("master_name", [tier.master_name for tier in topo.tiers]),
        "offset_lag": str(OFFSET_LAG_MAX_BYTES),
        "offset_lag_human": f"{OFFSET_LAG_MAX_BYTES // 2**20} MiB",
        "hit_rate": str(HIT_RATE_MIN),
        "hit_rate_human": f"{HIT_RATE_MIN:.0%}",
        "min_lookups": str(MIN_LOOKUPS_PER_SECOND),
        "memory_share": str(MEMORY_USED_MAX_SHARE),
        "state_memory_high": str(STATE_MEMORY_HIGH_SHARE),
        "state_memory_high_human": f"{STATE_MEMORY_HIGH_SHARE:.0%}",
        "state_memory_full": str(STATE_MEMORY_FULL_SHARE),
        "state_memory_full_human": f"{STATE_MEMORY_FULL_SHARE:.0%}",
        "clients_share": str(CLIENTS_MAX_SHARE),
        "container_share": str(CONTAINER_MEMORY_MAX_SHARE),
        # A failover needs the quorum to agree the master is down and a majority to authorise it.
        "sentinels_needed": str(max(quorum, sentinels // 2 + 1)),
        "quorum": str(quorum),
        "sentinels": str(sentinels),
        "backup_cronjob": topo.backup_cronjob,
        "backup_max_age": str(backup_max_age),
        "backup_max_age_human": _human_seconds(backup_max_age),
    }
    # Per tier: its selector ($cache, $state), its Sentinel master name and its own settings.
    for tier in topo.tiers:
        block = tier.settings_of(settings)
        values[tier.tier] = f'{server},tier="{tier.tier}"'
        values[f"{tier.tier}_master"] = tier.master_name
        values[f"{tier.tier}_replicas_expected"] = str(block.replicas - 1)
        values[f"{tier.tier}_max_lag"] = str(block.min_replicas_max_lag)
        values[f"{tier.tier}_maxclients"] = str(block.maxclients)
    return values


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
