"""promtool unit-test cases for every alert of components/alerts.py, against the prod stack's rules.

Each case is one promtool test group: input series, an evaluation time, and the alerts expected
then (none for a case that must not fire). Series carry the labels the PodMonitor gives real
targets (namespace, component, tier, pod) or that kube-state-metrics / cAdvisor export. Rules that
count per cluster are proven per tier (one master per tier is not too many) and per Sentinel
master name; the cache's own rules are proven blind to the state tier and the other way round. Firing cases
spell out the summary and description a person will read, so a broken template fails here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NS = "redis"  # the prod stack's namespace
SRV = f'namespace="{NS}",component="server"'
CACHE = f'{SRV},tier="cache"'  # a cache-tier pod (redis-N), as the PodMonitor labels its series
STATE = f'{SRV},tier="state"'  # a state-tier pod (redis-state-N)
SEN = f'namespace="{NS}",component="sentinel"'
SLAVE = 'slave_ip="10.0.0.2",slave_port="6379",slave_state="online"'
MASTER_HOST = 'master_host="redis-0.redis-headless.redis.svc.cluster.local",master_port="6379"'
SENTINEL_MASTER = 'master_name="mymaster",master_address="redis-0.redis-headless.redis.svc.cluster.local:6379"'
SENTINEL_STATE = (
    'master_name="dictstate",master_address="redis-state-0.redis-state-headless.redis.svc.cluster.local:6379"'
)


@dataclass(frozen=True)
class Case:
    alert: str
    series: dict[str, str]  # series -> promtool values notation
    eval_time: str
    # For a firing case: (labels, summary, description) per expected alert; empty: must not fire.
    expected: list[tuple[dict[str, str], str, str]] = field(default_factory=list)
    interval: str = "1m"
    why: str = ""

    @property
    def fires(self) -> bool:
        return bool(self.expected)


def _labels(**labels: str) -> dict[str, str]:
    return labels


CASES: tuple[Case, ...] = (
    # --- RedisDown -----------------------------------------------------------------------------
    Case(
        "RedisDown",
        {f'redis_up{{{CACHE},pod="redis-1"}}': "1 0 0 0 0"},
        "4m",
        [
            (
                _labels(severity="critical", namespace=NS, component="server", tier="cache", pod="redis-1"),
                "Redis in redis-1 does not answer",
                "The exporter in redis-1 (redis) has not been able to reach Redis for 1 minute (redis_up = 0).",
            )
        ],
    ),
    Case(
        "RedisDown",
        {f'redis_up{{{STATE},pod="redis-state-2"}}': "1 0 0 0 0", f'redis_up{{{CACHE},pod="redis-2"}}': "1x4"},
        "4m",
        [
            (
                _labels(severity="critical", namespace=NS, component="server", tier="state", pod="redis-state-2"),
                "Redis in redis-state-2 does not answer",
                "The exporter in redis-state-2 (redis) has not been able to reach Redis for 1 minute (redis_up = 0).",
            )
        ],
        why="a state-tier pod down is down too",
    ),
    Case(
        "RedisDown",
        {
            f'redis_up{{{CACHE},pod="redis-1"}}': "1 0 1 1 1",
            f'redis_up{{{SEN},pod="redis-sentinel-0"}}': "0 0 0 0 0",
            'redis_up{namespace="other",component="server",pod="redis-0"}': "0 0 0 0 0",
        },
        "4m",
        why="a blip shorter than 'for', a Sentinel and another namespace do not count",
    ),
    # --- RedisMissingMaster (per tier) ---------------------------------------------------------
    Case(
        "RedisMissingMaster",
        {
            f'redis_instance_info{{{CACHE},pod="redis-1",role="slave"}}': "1x5",
            f'redis_instance_info{{{CACHE},pod="redis-2",role="slave"}}': "1x5",
            f'redis_instance_info{{{STATE},pod="redis-state-0",role="master"}}': "1x5",
            'redis_instance_info{namespace="other",component="server",tier="cache",pod="redis-0",role="master"}': (
                "1x5"
            ),
        },
        "3m",
        [
            (
                _labels(severity="critical", namespace=NS, tier="cache"),
                "No Redis master in the cache tier of redis",
                "No pod of the cache tier in redis has reported role master for 1 minute: writes to that tier "
                "fail until Sentinel promotes one (on the state tier, new claims get a retryable error).",
            )
        ],
        why="the state tier's master does not stand in for the cache's, nor another stack's",
    ),
    Case(
        "RedisMissingMaster",
        {
            f'redis_instance_info{{{CACHE},pod="redis-0",role="master"}}': "1x5",
            f'redis_instance_info{{{CACHE},pod="redis-1",role="slave"}}': "1x5",
            f'redis_up{{{STATE},pod="redis-state-0"}}': "0x5",
        },
        "3m",
        [
            (
                _labels(severity="critical", namespace=NS, tier="state"),
                "No Redis master in the state tier of redis",
                "No pod of the state tier in redis has reported role master for 1 minute: writes to that tier "
                "fail until Sentinel promotes one (on the state tier, new claims get a retryable error).",
            )
        ],
        why="a state tier that reports no role at all (its Redis down) has no master",
    ),
    Case(
        "RedisMissingMaster",
        {
            f'redis_instance_info{{{CACHE},pod="redis-0",role="master"}}': "1x5",
            f'redis_instance_info{{{CACHE},pod="redis-1",role="slave"}}': "1x5",
            f'redis_instance_info{{{STATE},pod="redis-state-1",role="master"}}': "1x5",
            f'redis_instance_info{{{STATE},pod="redis-state-0",role="slave"}}': "1x5",
        },
        "3m",
        why="one master in each tier",
    ),
    # --- RedisTooManyMasters (per tier) --------------------------------------------------------
    Case(
        "RedisTooManyMasters",
        {
            f'redis_instance_info{{{CACHE},pod="redis-0",role="master"}}': "1x5",
            f'redis_instance_info{{{CACHE},pod="redis-1",role="master"}}': "1x5",
        },
        "3m",
        [
            (
                _labels(severity="critical", namespace=NS, tier="cache"),
                "More than one Redis master in the cache tier of redis",
                "2 pods of the cache tier in redis report role master: clients may write to a master that "
                "Sentinel will demote, and those writes are lost.",
            )
        ],
    ),
    Case(
        "RedisTooManyMasters",
        {
            f'redis_instance_info{{{CACHE},pod="redis-0",role="master"}}': "1x5",
            f'redis_instance_info{{{STATE},pod="redis-state-0",role="master"}}': "1x5",
            f'redis_instance_info{{{STATE},pod="redis-state-1",role="master"}}': "1x5",
        },
        "3m",
        [
            (
                _labels(severity="critical", namespace=NS, tier="state"),
                "More than one Redis master in the state tier of redis",
                "2 pods of the state tier in redis report role master: clients may write to a master that "
                "Sentinel will demote, and those writes are lost.",
            )
        ],
        why="two masters on the state tier; the cache tier's one master is fine",
    ),
    Case(
        "RedisTooManyMasters",
        {
            f'redis_instance_info{{{CACHE},pod="redis-0",role="master"}}': "1x5",
            f'redis_instance_info{{{CACHE},pod="redis-1",role="slave"}}': "1x5",
            f'redis_instance_info{{{STATE},pod="redis-state-0",role="master"}}': "1x5",
            f'redis_instance_info{{{STATE},pod="redis-state-1",role="slave"}}': "1x5",
        },
        "3m",
        why="one master per tier is two masters in the stack, and right",
    ),
    Case(
        "RedisTooManyMasters",
        {
            f'redis_instance_info{{{CACHE},pod="redis-0",role="master"}}': "1x5",
            'redis_instance_info{namespace="other",component="server",tier="cache",pod="redis-0",role="master"}': (
                "1x5"
            ),
        },
        "3m",
        why="one master per stack; another stack's master is not ours",
    ),
    # --- RedisReplicaLinkDown ------------------------------------------------------------------
    Case(
        "RedisReplicaLinkDown",
        {f'redis_master_link_up{{{CACHE},pod="redis-2",{MASTER_HOST}}}': "1 0 0 0 0"},
        "4m",
        [
            (
                _labels(
                    severity="warning",
                    namespace=NS,
                    component="server",
                    tier="cache",
                    pod="redis-2",
                    master_host="redis-0.redis-headless.redis.svc.cluster.local",
                    master_port="6379",
                ),
                "Replica redis-2 has lost its master",
                "The replication link of redis-2 to redis-0.redis-headless.redis.svc.cluster.local has been "
                "down for 2 minutes: it serves stale reads and cannot take over cleanly.",
            )
        ],
    ),
    Case("RedisReplicaLinkDown", {f'redis_master_link_up{{{CACHE},pod="redis-2",{MASTER_HOST}}}': "1 0 0 1 1"}, "4m"),
    # --- RedisDisconnectedReplicas (per tier) --------------------------------------------------
    Case(
        "RedisDisconnectedReplicas",
        {
            f'redis_connected_slaves{{{CACHE},pod="redis-0"}}': "2x4",
            f'redis_instance_info{{{CACHE},pod="redis-0",role="master"}}': "1x4",
            f'redis_connected_slaves{{{STATE},pod="redis-state-0"}}': "2 1 1 1 1",
            f'redis_connected_slaves{{{STATE},pod="redis-state-1"}}': "0x4",
            f'redis_instance_info{{{STATE},pod="redis-state-0",role="master"}}': "1x4",
            f'redis_instance_info{{{STATE},pod="redis-state-1",role="slave"}}': "1x4",
        },
        "4m",
        [
            (
                _labels(severity="warning", namespace=NS, tier="state"),
                "The state master in redis has fewer replicas than configured",
                "Replicas connected to the master of the state tier: 1 for 2 minutes, of 2 configured.",
            )
        ],
        why="the state tier lost a replica; the cache tier's two do not make up for it",
    ),
    Case(
        "RedisDisconnectedReplicas",
        {
            f'redis_connected_slaves{{{CACHE},pod="redis-0"}}': "2x4",
            f'redis_connected_slaves{{{CACHE},pod="redis-1"}}': "0x4",
            f'redis_instance_info{{{CACHE},pod="redis-0",role="master"}}': "1x4",
            f'redis_instance_info{{{CACHE},pod="redis-1",role="slave"}}': "1x4",
            f'redis_connected_slaves{{{STATE},pod="redis-state-0"}}': "2x4",
            f'redis_instance_info{{{STATE},pod="redis-state-0",role="master"}}': "1x4",
        },
        "4m",
        why="replicas report 0 connected replicas of their own; only each tier's master's count matters",
    ),
    # --- RedisReplicationLagHigh (each tier against its own minReplicasMaxLag) -----------------
    Case(
        "RedisReplicationLagHigh",
        {f'redis_connected_slave_lag_seconds{{{CACHE},pod="redis-0",{SLAVE}}}': "0 15 15 15 15"},
        "3m",
        [
            (
                _labels(severity="warning", namespace=NS, tier="cache", pod="redis-0", slave_ip="10.0.0.2"),
                "Replica 10.0.0.2 lags behind redis-0",
                "The replica at 10.0.0.2 last acknowledged the master 15 s ago; beyond 2 s "
                "(min-replicas-max-lag of the cache tier) it no longer counts for min-replicas-to-write.",
            )
        ],
    ),
    Case(
        "RedisReplicationLagHigh",
        {f'redis_connected_slave_lag_seconds{{{STATE},pod="redis-state-0",{SLAVE}}}': "0 15 15 15 15"},
        "3m",
        [
            (
                _labels(severity="warning", namespace=NS, tier="state", pod="redis-state-0", slave_ip="10.0.0.2"),
                "Replica 10.0.0.2 lags behind redis-state-0",
                "The replica at 10.0.0.2 last acknowledged the master 15 s ago; beyond 2 s "
                "(min-replicas-max-lag of the state tier) it no longer counts for min-replicas-to-write.",
            )
        ],
    ),
    Case(
        "RedisReplicationLagHigh",
        {f'redis_connected_slave_lag_seconds{{{CACHE},pod="redis-0",{SLAVE}}}': "0 1 2 1 0"},
        "3m",
    ),
    # --- RedisReplicationOffsetLagHigh ---------------------------------------------------------
    Case(
        "RedisReplicationOffsetLagHigh",
        {
            f'redis_master_repl_offset{{{CACHE},pod="redis-0"}}': "20971520x10",
            f'redis_connected_slave_offset_bytes{{{CACHE},pod="redis-0",{SLAVE}}}': "0x10",
            f'redis_master_repl_offset{{{CACHE},pod="redis-1"}}': "20971520x10",
        },
        "7m",
        [
            (
                _labels(
                    severity="warning",
                    namespace=NS,
                    component="server",
                    tier="cache",
                    pod="redis-0",
                    slave_ip="10.0.0.2",
                    slave_port="6379",
                    slave_state="online",
                ),
                "Replica 10.0.0.2 is far behind in the replication stream",
                "The replica at 10.0.0.2 is 20MiB behind the master redis-0 for 5 minutes (limit 10 MiB).",
            )
        ],
    ),
    Case(
        "RedisReplicationOffsetLagHigh",
        {
            f'redis_master_repl_offset{{{CACHE},pod="redis-0"}}': "1000x10",
            f'redis_connected_slave_offset_bytes{{{CACHE},pod="redis-0",{SLAVE}}}': "990x10",
        },
        "7m",
    ),
    # --- RedisCacheHitRateLow ------------------------------------------------------------------
    Case(
        "RedisCacheHitRateLow",
        {
            f'redis_keyspace_hits_total{{{CACHE},pod="redis-0"}}': "0+60x20",
            f'redis_keyspace_misses_total{{{CACHE},pod="redis-0"}}': "0+120x20",
        },
        "15m",
        [
            (
                _labels(severity="warning", namespace=NS),
                "Redis cache hit rate in redis is low",
                "The cache tier's hit rate is 33.33% for 10 minutes (target above 70%).",
            )
        ],
    ),
    Case(
        "RedisCacheHitRateLow",
        {
            f'redis_keyspace_hits_total{{{CACHE},pod="redis-0"}}': "0+6x20",
            f'redis_keyspace_misses_total{{{CACHE},pod="redis-0"}}': "0+12x20",
        },
        "15m",
        why="zero-traffic guard: 0.3 lookups/s say nothing about the hit rate",
    ),
    Case(
        "RedisCacheHitRateLow",
        {
            f'redis_keyspace_hits_total{{{CACHE},pod="redis-0"}}': "0+540x20",
            f'redis_keyspace_misses_total{{{CACHE},pod="redis-0"}}': "0+60x20",
        },
        "15m",
        why="90 % hits",
    ),
    Case(
        "RedisCacheHitRateLow",
        {
            f'redis_keyspace_hits_total{{{CACHE},pod="redis-0"}}': "0+540x20",
            f'redis_keyspace_misses_total{{{CACHE},pod="redis-0"}}': "0+60x20",
            f'redis_keyspace_hits_total{{{STATE},pod="redis-state-0"}}': "0+60x20",
            f'redis_keyspace_misses_total{{{STATE},pod="redis-state-0"}}': "0+6000x20",
        },
        "15m",
        why="the state tier's misses (a claim looks for a record that is not there yet) are no cache misses",
    ),
    # --- RedisMemoryHigh (cache tier) ----------------------------------------------------------
    Case(
        "RedisMemoryHigh",
        {
            f'redis_memory_used_bytes{{{CACHE},pod="redis-0"}}': "1900x10",
            f'redis_memory_max_bytes{{{CACHE},pod="redis-0"}}': "2000x10",
        },
        "7m",
        [
            (
                # on (namespace, tier, pod) keeps those
                _labels(severity="warning", namespace=NS, tier="cache", pod="redis-0"),
                "Redis in redis-0 is near maxmemory",
                "redis-0 uses 95% of its maxmemory for 5 minutes; beyond it the cache tier's eviction policy "
                "drops keys.",
            )
        ],
    ),
    Case(
        "RedisMemoryHigh",
        {
            f'redis_memory_used_bytes{{{CACHE},pod="redis-0"}}': "1900x10",
            f'redis_memory_max_bytes{{{CACHE},pod="redis-0"}}': "0x10",
        },
        "7m",
        why="maxmemory 0 (unset) must not divide into an infinite share",
    ),
    Case(
        "RedisMemoryHigh",
        {
            f'redis_memory_used_bytes{{{STATE},pod="redis-state-0"}}': "1900x10",
            f'redis_memory_max_bytes{{{STATE},pod="redis-state-0"}}': "2000x10",
        },
        "7m",
        why="the state tier is judged by its own rules (RedisStateMemoryHigh, RedisStateTierFull)",
    ),
    # --- RedisEvictions (cache tier: a cache evicts when full) ---------------------------------
    Case(
        "RedisEvictions",
        {f'redis_evicted_keys_total{{{CACHE},pod="redis-0"}}': "0+60x30"},
        "20m",
        [
            (
                _labels(severity="warning", namespace=NS, component="server", tier="cache", pod="redis-0"),
                "Redis in redis-0 is evicting keys",
                "redis-0 has been evicting 1 keys/s for 15 minutes: the cache is full and drops entries "
                "before their TTL.",
            )
        ],
    ),
    Case("RedisEvictions", {f'redis_evicted_keys_total{{{CACHE},pod="redis-0"}}': "100x30"}, "20m"),
    Case(
        "RedisEvictions",
        {f'redis_evicted_keys_total{{{STATE},pod="redis-state-0"}}': "0+60x30"},
        "20m",
        why="an eviction on the state tier is RedisStateEvictions (critical), not a cache warning",
    ),
    # --- RedisStateMemoryHigh (state tier master above 80 % of maxmemory) ----------------------
    Case(
        "RedisStateMemoryHigh",
        {
            f'redis_memory_used_bytes{{{STATE},pod="redis-state-0"}}': "1700x10",
            f'redis_memory_max_bytes{{{STATE},pod="redis-state-0"}}': "2000x10",
            f'redis_instance_info{{{STATE},pod="redis-state-0",role="master"}}': "1x10",
            f'redis_memory_used_bytes{{{STATE},pod="redis-state-1"}}': "1700x10",
            f'redis_memory_max_bytes{{{STATE},pod="redis-state-1"}}': "2000x10",
            f'redis_instance_info{{{STATE},pod="redis-state-1",role="slave"}}': "1x10",
        },
        "7m",
        [
            (
                _labels(severity="warning", namespace=NS, tier="state", pod="redis-state-0"),
                "The state tier in redis is above 80% of its maxmemory",
                "redis-state-0, the state tier's master (dictstate), uses 85% of its maxmemory for 5 minutes. "
                "At 100 % it refuses every write (noeviction): new idempotency claims fail with a retryable "
                "error (the caller answers 503, never CLAIMED), and rate-limit checks and workflow updates fail "
                "too, while replays of completed requests still work. Raise state.maxmemory before it fills.",
            )
        ],
        why="one alert for the tier: the master's, which is the one that refuses writes",
    ),
    Case(
        "RedisStateMemoryHigh",
        {
            f'redis_memory_used_bytes{{{STATE},pod="redis-state-0"}}': "1000x10",
            f'redis_memory_max_bytes{{{STATE},pod="redis-state-0"}}': "2000x10",
            f'redis_instance_info{{{STATE},pod="redis-state-0",role="master"}}': "1x10",
            f'redis_memory_used_bytes{{{CACHE},pod="redis-0"}}': "2000x10",
            f'redis_memory_max_bytes{{{CACHE},pod="redis-0"}}': "2000x10",
            f'redis_instance_info{{{CACHE},pod="redis-0",role="master"}}': "1x10",
        },
        "7m",
        why="half full; a full cache tier is the cache's normal state, not the state tier's problem",
    ),
    # --- RedisStateTierFull (state tier master above 90 % of maxmemory) ------------------------
    Case(
        "RedisStateTierFull",
        {
            f'redis_memory_used_bytes{{{STATE},pod="redis-state-1"}}': "2000x10",
            f'redis_memory_max_bytes{{{STATE},pod="redis-state-1"}}': "2000x10",
            f'redis_instance_info{{{STATE},pod="redis-state-1",role="master"}}': "1x10",
        },
        "4m",
        [
            (
                _labels(severity="critical", namespace=NS, tier="state", pod="redis-state-1"),
                "The state tier in redis is full or about to be: claims fail",
                "redis-state-1, the state tier's master (dictstate), uses 100% of its maxmemory (alert "
                "threshold 90%). At 100 % it refuses every write (noeviction): new idempotency claims fail "
                "with a retryable error (the caller answers 503, never CLAIMED), and rate-limit checks and "
                "workflow updates fail too, while replays of completed requests still work.",
            )
        ],
        why="a full state tier: used memory at maxmemory on its master",
    ),
    Case(
        "RedisStateTierFull",
        {
            f'redis_memory_used_bytes{{{STATE},pod="redis-state-1"}}': "1700x10",
            f'redis_memory_max_bytes{{{STATE},pod="redis-state-1"}}': "2000x10",
            f'redis_instance_info{{{STATE},pod="redis-state-1",role="master"}}': "1x10",
            f'redis_memory_used_bytes{{{CACHE},pod="redis-0"}}': "2000x10",
            f'redis_memory_max_bytes{{{CACHE},pod="redis-0"}}': "2000x10",
        },
        "4m",
        why="85 % is a warning (RedisStateMemoryHigh); the full cache tier is not the state tier",
    ),
    # --- RedisStateEvictions (any eviction on the state tier) ----------------------------------
    Case(
        "RedisStateEvictions",
        {f'redis_evicted_keys_total{{{STATE},pod="redis-state-0"}}': "0 0 1 1 1"},
        "4m",
        [
            (
                _labels(severity="critical", namespace=NS, component="server", tier="state", pod="redis-state-0"),
                "The state tier evicted keys in redis-state-0",
                "redis-state-0 evicted 1 keys in the last 10 minutes. The state tier must never evict: every "
                "evicted key is a lost decision (an idempotency record whose request can run twice, a "
                "rate-limit counter, a workflow version), so its maxmemory-policy must be noeviction.",
            )
        ],
        why="one evicted key is enough",
    ),
    Case(
        "RedisStateEvictions",
        {
            f'redis_evicted_keys_total{{{CACHE},pod="redis-0"}}': "0 1 1000 5000 9000",
            f'redis_evicted_keys_total{{{STATE},pod="redis-state-0"}}': "0x4",
        },
        "4m",
        why="the cache tier evicting is what a cache does; the state tier evicted nothing",
    ),
    # --- RedisStateEvictionPolicy (the state tier must run noeviction) -------------------------
    Case(
        "RedisStateEvictionPolicy",
        {
            f'redis_instance_info{{{STATE},pod="redis-state-0",role="master",maxmemory_policy="noeviction",'
            'redis_version="7.0.15"}': "1x4",
            f'redis_instance_info{{{STATE},pod="redis-state-1",role="slave",maxmemory_policy="allkeys-lru",'
            'redis_version="7.0.15"}': "1x4",
        },
        "2m",
        [
            (
                _labels(
                    severity="critical", namespace=NS, tier="state", pod="redis-state-1", maxmemory_policy="allkeys-lru"
                ),
                "The state tier's redis-state-1 runs maxmemory-policy allkeys-lru",
                "redis-state-1 of the state tier runs maxmemory-policy allkeys-lru instead of noeviction: once "
                "it is full it will evict decisions (idempotency records, rate-limit counters, workflow "
                "versions) instead of refusing writes with a retryable error.",
            )
        ],
        why="one pod switched to an evicting policy (by hand, or a wrong config)",
    ),
    Case(
        "RedisStateEvictionPolicy",
        {
            f'redis_instance_info{{{STATE},pod="redis-state-0",role="master",maxmemory_policy="noeviction"}}': "1x4",
            f'redis_instance_info{{{CACHE},pod="redis-0",role="master",maxmemory_policy="allkeys-lru"}}': "1x4",
        },
        "2m",
        why="the cache tier's allkeys-lru is right for a cache",
    ),
    # --- RedisTooManyConnections ---------------------------------------------------------------
    Case(
        "RedisTooManyConnections",
        {
            f'redis_connected_clients{{{CACHE},pod="redis-0"}}': "9000x10",
        },
        "7m",
        [
            (
                _labels(severity="warning", namespace=NS, component="server", tier="cache", pod="redis-0"),
                "Redis in redis-0 is near maxclients",
                "redis-0 has 90% of maxclients connected for 5 minutes; at 100 % new connections are refused.",
            )
        ],
    ),
    Case(
        "RedisTooManyConnections",
        {
            f'redis_connected_clients{{{CACHE},pod="redis-0"}}': "5000x10",
        },
        "7m",
    ),
    Case(
        "RedisTooManyConnections",
        {
            f'redis_connected_clients{{{CACHE},pod="redis-0"}}': "5000x10",
            f'redis_connected_clients{{{STATE},pod="redis-state-0"}}': "9000x10",
        },
        "7m",
        [
            (
                _labels(severity="warning", namespace=NS, component="server", tier="state", pod="redis-state-0"),
                "Redis in redis-state-0 is near maxclients",
                "redis-state-0 has 90% of maxclients connected for 5 minutes; at 100 % new connections are refused.",
            )
        ],
        why="the state tier against its own maxclients",
    ),
    # --- RedisRejectedConnections --------------------------------------------------------------
    Case(
        "RedisRejectedConnections",
        {f'redis_rejected_connections_total{{{CACHE},pod="redis-0"}}': "0 0 3 3"},
        "3m",
        [
            (
                _labels(severity="warning", namespace=NS, component="server", tier="cache", pod="redis-0"),
                "Redis in redis-0 rejects connections",
                "redis-0 rejected 3 connections in the last 5 minutes (maxclients reached).",
            )
        ],
    ),
    Case("RedisRejectedConnections", {f'redis_rejected_connections_total{{{CACHE},pod="redis-0"}}': "5x10"}, "7m"),
    # --- RedisRdbSaveFailed / RedisAofWriteFailed ----------------------------------------------
    Case(
        "RedisRdbSaveFailed",
        {f'redis_rdb_last_bgsave_status{{{CACHE},pod="redis-0"}}': "1 1 0 0"},
        "3m",
        [
            (
                _labels(severity="critical", namespace=NS, component="server", tier="cache", pod="redis-0"),
                "The last RDB save of redis-0 failed",
                "The last background save of redis-0 failed; with stop-writes-on-bgsave-error the master "
                "refuses writes until a save succeeds.",
            )
        ],
    ),
    Case("RedisRdbSaveFailed", {f'redis_rdb_last_bgsave_status{{{CACHE},pod="redis-0"}}': "1 1 0 1"}, "3m"),
    Case(
        "RedisAofWriteFailed",
        {f'redis_aof_last_write_status{{{CACHE},pod="redis-1"}}': "1 1 0 0"},
        "3m",
        [
            (
                _labels(severity="critical", namespace=NS, component="server", tier="cache", pod="redis-1"),
                "AOF writes fail on redis-1",
                "The last AOF write of redis-1 failed; Redis refuses writes while it cannot append to the AOF.",
            )
        ],
    ),
    Case(
        "RedisAofWriteFailed",
        {f'redis_aof_last_write_status{{{STATE},pod="redis-state-0"}}': "1 1 0 0"},
        "3m",
        [
            (
                _labels(severity="critical", namespace=NS, component="server", tier="state", pod="redis-state-0"),
                "AOF writes fail on redis-state-0",
                "The last AOF write of redis-state-0 failed; Redis refuses writes while it cannot append to the AOF.",
            )
        ],
        why="the state tier's AOF (everysec) is its durability",
    ),
    Case("RedisAofWriteFailed", {f'redis_aof_last_write_status{{{CACHE},pod="redis-1"}}': "1x4"}, "3m"),
    # --- RedisContainerMemoryNearLimit ---------------------------------------------------------
    Case(
        "RedisContainerMemoryNearLimit",
        {
            f'container_memory_working_set_bytes{{namespace="{NS}",pod="redis-0",container="redis",id="/a"}}': (
                "3900000000x10"
            ),
            f'kube_pod_container_resource_limits{{namespace="{NS}",pod="redis-0",container="redis",'
            'resource="memory",unit="byte",node="n1"}': "4000000000x10",
        },
        "7m",
        [
            (
                _labels(severity="warning", namespace=NS, pod="redis-0", container="redis"),
                "Container redis in redis-0 is near its memory limit",
                "redis-0/redis uses 97.5% of its memory limit for 5 minutes; at 100 % it is OOM-killed (a fork "
                "for RDB or AOF can double Redis memory).",
            )
        ],
    ),
    Case(
        "RedisContainerMemoryNearLimit",
        {
            f'container_memory_working_set_bytes{{namespace="{NS}",pod="redis-0",container="redis",id="/a"}}': (
                "2000000000x10"
            ),
            f'kube_pod_container_resource_limits{{namespace="{NS}",pod="redis-0",container="redis",'
            'resource="memory",unit="byte",node="n1"}': "4000000000x10",
            f'container_memory_working_set_bytes{{namespace="{NS}",pod="redis-smoke-x",container="smoke",id="/b"}}': (
                "250000000x10"
            ),
            f'kube_pod_container_resource_limits{{namespace="{NS}",pod="redis-smoke-x",container="smoke",'
            'resource="memory",unit="byte",node="n1"}': "256000000x10",
        },
        "7m",
        why="half the limit is fine; the smoke Job's container is not the cache's",
    ),
    # --- RedisContainerOOMKilled ---------------------------------------------------------------
    Case(
        "RedisContainerOOMKilled",
        {
            f'kube_pod_container_status_last_terminated_reason{{namespace="{NS}",pod="redis-0",container="redis",'
            'reason="OOMKilled"}': "1x5",
            f'kube_pod_container_status_restarts_total{{namespace="{NS}",pod="redis-0",container="redis"}}': (
                "0 0 1 1 1"
            ),
        },
        "3m",
        [
            (
                _labels(severity="warning", namespace=NS, pod="redis-0", container="redis"),
                "Container redis in redis-0 was OOM-killed",
                "redis-0/redis restarted in the last 15 minutes after the kernel killed it for exceeding its "
                "memory limit.",
            )
        ],
    ),
    Case(
        "RedisContainerOOMKilled",
        {
            f'kube_pod_container_status_last_terminated_reason{{namespace="{NS}",pod="redis-0",container="redis",'
            'reason="OOMKilled"}': "1x30",
            f'kube_pod_container_status_restarts_total{{namespace="{NS}",pod="redis-0",container="redis"}}': "1x30",
        },
        "25m",
        why="an OOM kill long ago, with no restart since",
    ),
    # --- Sentinels (the quorum rules per monitored master: mymaster, dictstate) ----------------
    Case(
        "RedisSentinelDown",
        {f'redis_up{{{SEN},pod="redis-sentinel-1"}}': "1 0 0 0"},
        "3m",
        [
            (
                _labels(severity="warning", namespace=NS, component="sentinel", pod="redis-sentinel-1"),
                "Sentinel in redis-sentinel-1 does not answer",
                "The exporter in redis-sentinel-1 has not been able to reach its Sentinel for 1 minute; one "
                "more lost Sentinel may block failover.",
            )
        ],
    ),
    Case(
        "RedisSentinelDown",
        {f'redis_up{{{SEN},pod="redis-sentinel-1"}}': "1x4", f'redis_up{{{CACHE},pod="redis-0"}}': "0x4"},
        "3m",
        why="a data node down is RedisDown, not this",
    ),
    Case(
        "RedisSentinelQuorumAtRisk",
        {
            f'redis_sentinel_master_ok_sentinels{{{SEN},pod="redis-sentinel-0",{SENTINEL_MASTER}}}': "3 2 2 2 2",
            f'redis_sentinel_master_ok_sentinels{{{SEN},pod="redis-sentinel-1",{SENTINEL_MASTER}}}': "3 2 2 2 2",
            f'redis_sentinel_master_ok_sentinels{{{SEN},pod="redis-sentinel-0",{SENTINEL_STATE}}}': "3x4",
            f'redis_sentinel_master_ok_sentinels{{{SEN},pod="redis-sentinel-1",{SENTINEL_STATE}}}': "3x4",
        },
        "4m",
        [
            (
                _labels(severity="warning", namespace=NS, master_name="mymaster"),
                "Sentinels in redis are one loss away from blocking failover of mymaster",
                "A Sentinel sees only 2 healthy Sentinels (itself included) monitoring mymaster for 2 minutes; "
                "a failover needs 2 (quorum 2 and a majority of 3), so one more loss blocks it.",
            )
        ],
        why="per master: the state tier's master still has its three",
    ),
    Case(
        "RedisSentinelQuorumAtRisk",
        {
            f'redis_sentinel_master_ok_sentinels{{{SEN},pod="redis-sentinel-{i}",{master}}}': "3x4"
            for i in range(3)
            for master in (SENTINEL_MASTER, SENTINEL_STATE)
        },
        "4m",
    ),
    Case(
        "RedisSentinelQuorumLost",
        {
            **{
                f'redis_sentinel_master_ckquorum_status{{{SEN},pod="redis-sentinel-{i}",master_name="dictstate"}}': (
                    "1 0 0 0"
                )
                for i in range(3)
            },
            **{
                f'redis_sentinel_master_ckquorum_status{{{SEN},pod="redis-sentinel-{i}",master_name="mymaster"}}': (
                    "1x3"
                )
                for i in range(3)
            },
        },
        "3m",
        [
            (
                _labels(severity="critical", namespace=NS, master_name="dictstate"),
                "Sentinels in redis cannot fail over dictstate",
                "No Sentinel in redis has passed SENTINEL CKQUORUM dictstate for 1 minute: if that master "
                "fails now, no replica is promoted.",
            )
        ],
        why="the state tier's master can no longer fail over, the cache's can",
    ),
    Case(
        "RedisSentinelQuorumLost",
        {
            f'redis_sentinel_master_ckquorum_status{{{SEN},pod="redis-sentinel-{i}",master_name="mymaster"}}': "1x3"
            for i in range(3)
        },
        "3m",
        [
            (
                _labels(severity="critical", namespace=NS, master_name="dictstate"),
                "Sentinels in redis cannot fail over dictstate",
                "No Sentinel in redis has passed SENTINEL CKQUORUM dictstate for 1 minute: if that master "
                "fails now, no replica is promoted.",
            )
        ],
        why="no Sentinel monitors the state tier's master at all",
    ),
    Case(
        "RedisSentinelQuorumLost",
        {
            f'redis_sentinel_master_ckquorum_status{{{SEN},pod="redis-sentinel-0",master_name="{name}"}}': "1 0 0 0"
            for name in ("mymaster", "dictstate")
        }
        | {
            f'redis_sentinel_master_ckquorum_status{{{SEN},pod="redis-sentinel-1",master_name="{name}"}}': "1x3"
            for name in ("mymaster", "dictstate")
        },
        "3m",
        why="one Sentinel that can still reach the quorum is enough to fail over, for each master",
    ),
    # --- RedisBackupMissing (backup every 6 h: limit 12 h) -------------------------------------
    Case(
        "RedisBackupMissing",
        {
            f'kube_cronjob_status_last_successful_time{{namespace="{NS}",cronjob="redis-backup"}}': "0x20",
            f'kube_cronjob_created{{namespace="{NS}",cronjob="redis-backup"}}': "0x20",
        },
        "13h",
        [
            (
                _labels(severity="critical", namespace=NS, cronjob="redis-backup"),
                "No successful Redis backup in redis for 12h",
                "The backup CronJob redis-backup has had no successful run for more than twice its interval "
                "(12h): a restore would lose more than the recovery point allows.",
            )
        ],
        interval="1h",
    ),
    Case(
        "RedisBackupMissing",
        {f'kube_cronjob_created{{namespace="{NS}",cronjob="redis-backup"}}': "0x20"},
        "13h",
        [
            (
                _labels(severity="critical", namespace=NS, cronjob="redis-backup"),
                "No successful Redis backup in redis for 12h",
                "The backup CronJob redis-backup has had no successful run for more than twice its interval "
                "(12h): a restore would lose more than the recovery point allows.",
            )
        ],
        interval="1h",
        why="created 13 h ago and never succeeded",
    ),
    Case(
        "RedisBackupMissing",
        {
            f'kube_cronjob_status_last_successful_time{{namespace="{NS}",cronjob="redis-backup"}}': (
                "0x5 21600x5 43200x5 64800x5"
            ),
            f'kube_cronjob_created{{namespace="{NS}",cronjob="redis-backup"}}': "0x23",
        },
        "20h",
        interval="1h",
        why="a success every 6 h",
    ),
    Case(
        "RedisBackupMissing",
        {'kube_cronjob_created{namespace="other",cronjob="redis-backup"}': "0x20"},
        "13h",
        interval="1h",
        why="no backup CronJob in this namespace (backup off): nothing to miss",
    ),
)


def promtool_test_files(
    rules_file: str, runbook_urls: dict[str, str], cases: tuple[Case, ...] = CASES
) -> dict[str, dict[str, Any]]:
    """One promtool unit-test file per sample interval, evaluated at that interval: the 12-hour
    backup cases evaluated every minute would cost promtool seconds for nothing."""
    intervals = sorted({case.interval for case in cases})
    return {
        interval: promtool_tests(rules_file, runbook_urls, tuple(c for c in cases if c.interval == interval), interval)
        for interval in intervals
    }


def promtool_tests(
    rules_file: str, runbook_urls: dict[str, str], cases: tuple[Case, ...] = CASES, evaluation_interval: str = "1m"
) -> dict[str, Any]:
    """The promtool unit-test file for ``cases`` (one test group per case)."""
    groups = []
    for case in cases:
        exp_alerts = [
            {
                "exp_labels": labels,
                "exp_annotations": {
                    "summary": summary,
                    "description": description,
                    "runbook_url": runbook_urls[case.alert],
                },
            }
            for labels, summary, description in case.expected
        ]
        groups.append(
            {
                "name": f"{case.alert} {'fires' if case.fires else 'does not fire'}"
                + (f": {case.why}" if case.why else ""),
                "interval": case.interval,
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [{"eval_time": case.eval_time, "alertname": case.alert, "exp_alerts": exp_alerts}],
            }
        )
    return {"rule_files": [rules_file], "evaluation_interval": evaluation_interval, "tests": groups}
