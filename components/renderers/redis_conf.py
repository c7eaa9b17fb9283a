"""``redis.conf``: the data nodes' static configuration. It carries no secret and no address.

What differs per pod or is secret (bind address, port, data dir, announce host, ``replicaof``,
``requirepass``/``masterauth``) is appended at start by ``start-redis.sh`` into a copy on a
writable, memory-backed volume; Sentinel's ``CONFIG REWRITE`` edits that copy, never this file.
"""

from __future__ import annotations

from components.settings import Settings
from components.topology import TierName, Topology

# How long a full sync waits for more replicas to share its transfer, unless every replica is
# waiting already (repl-diskless-sync-max-replicas). The server's default, 5 s, is time in which
# min-replicas-to-write refuses every write when the resyncing replica is the only one left
# (issue 16: both replicas down 5 s and one back made an 11 s outage); 1 s still lets replicas
# restarted together share one transfer.
FULL_SYNC_DELAY_S = 1


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def render_redis_conf(settings: Settings, tier: TierName = "cache") -> str:
    """One data tier's redis.conf: the cache (``redis`` settings) or the state tier (``state``)."""
    r = Topology.of(settings).tier(tier).settings_of(settings)
    p = r.persistence
    save = "\n".join(f"save {seconds} {changes}" for seconds, changes in p.save_points) or 'save ""'
    return f"""\
# redis.conf of the {tier} tier of stack {settings.stack} (rendered by components/renderers/redis_conf.py; do not edit).
# start-redis.sh appends: bind, port, dir, replica-announce-ip/port, replicaof, and requirepass +
# masterauth read from the mounted Secret (into a copy on a memory volume, never into this file).

# Network
tcp-backlog 511
timeout {r.timeout_seconds}
tcp-keepalive {r.tcp_keepalive_seconds}
maxclients {r.maxclients}

# General
daemonize no
supervised no
loglevel notice
logfile ""

# Persistence - RDB
{save}
stop-writes-on-bgsave-error yes
rdbcompression yes
rdbchecksum yes
dbfilename dump.rdb

# Persistence - AOF
appendonly {_yes(p.appendonly)}
appendfilename "appendonly.aof"
appendfsync {p.appendfsync}
no-appendfsync-on-rewrite no
auto-aof-rewrite-percentage 100
auto-aof-rewrite-min-size 64mb

# Memory: {r.maxmemory_bytes()} bytes leaves room under the container limit
# ({r.resources.limits.memory}) for the copy-on-write of a save fork and replica buffers.
maxmemory {r.maxmemory_bytes()}
maxmemory-policy {r.maxmemory_policy}
maxmemory-samples {r.maxmemory_samples}

# Lazy freeing
lazyfree-lazy-eviction yes
lazyfree-lazy-expire yes
lazyfree-lazy-server-del yes
replica-lazy-flush yes

# Threaded I/O
io-threads {r.io_threads}
io-threads-do-reads {_yes(r.io_threads_do_reads)}

# Replication (replicaof is chosen at start from Sentinel's answer). A full sync waits up to
# {FULL_SYNC_DELAY_S} s for more replicas to share one transfer, and starts at once when every replica of
# the StatefulSet is waiting (a first boot, all replicas resyncing after a failover).
replica-read-only yes
repl-diskless-sync yes
repl-diskless-sync-delay {FULL_SYNC_DELAY_S}
repl-diskless-sync-max-replicas {r.replicas - 1}
repl-disable-tcp-nodelay no
replica-priority 100
min-replicas-to-write {r.min_replicas_to_write}
min-replicas-max-lag {r.min_replicas_max_lag}
"""
