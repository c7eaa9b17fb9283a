"""Growth: latency of entry get-by-id and of a rate-limit check as the keyspace grows.

The keyspace is filled with realistic entries in our cache-tier layout (two keys each: entry and
pointer; the version markers live on the state tier) up to each size, and at each size both
operations are timed on random keys, so a lookup touches a cold part of the hash table as it
would in production. A Redis lookup is a hash table probe, so the curve should be flat; what
could bend it is the table's incremental rehashing while it grows, and the forks of RDB saves
and AOF rewrites that a bulk load triggers (each size waits until none is running before it is
timed).

The dev stack's ``maxmemory`` (256 MiB, ``allkeys-lru``) holds about 270k of these entries (~1 KB each), so
1M keys would measure evictions rather than lookups: for this step every data node gets the prod
stack's ``maxmemory`` (2 GiB) with ``CONFIG SET``. The value used is reported.
"""

from __future__ import annotations

import random
import time

import redis

from smoke.bench.dataset import entries, fill_our_layout, fill_parallel
from smoke.bench.measure import BenchError, percentiles_us, time_calls
from smoke.drills.workload import wait_replicated
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import Entry, EntryCache
from smoke.strategies.ratelimit import RateLimiter

BATCH = 1000
KEYS_PER_ENTRY = 2  # entry + pointer on the cache tier (the markers are on the state tier)
GROWTH_MAXMEMORY = 2 * 1024**3  # the prod stack's maxmemory (4 GiB limit x 0.5)
ENTRY_TTL_MS = 3_600_000  # the fill must outlive the run; the TTL does not change an entry's size


def persist_now(nodes: list[redis.Redis], timeout: float = 180) -> None:
    """Run the RDB save and AOF rewrite the bulk load has made due, on every node, and wait for
    them: otherwise one starts while a size is being timed (``save 60 10000``, AOF growth), and
    the figures show its fork and its CPU rather than the lookups. (That cost is real, and grows
    with the dataset; docs/performance.md says so, but it is not what this step measures.)"""
    deadline = time.monotonic() + timeout
    for node in nodes:
        _wait_idle(node, deadline)
        node.execute_command("BGSAVE")
    for node in nodes:
        _wait_idle(node, deadline)
        node.execute_command("BGREWRITEAOF")
    for node in nodes:
        _wait_idle(node, deadline)


def _wait_idle(node: redis.Redis, deadline: float) -> None:
    while time.monotonic() < deadline:
        info = node.info("persistence")
        busy = ("rdb_bgsave_in_progress", "aof_rewrite_in_progress", "aof_rewrite_scheduled")
        if not any(int(info.get(flag, 0)) for flag in busy):
            return
        time.sleep(0.1)
    raise BenchError("an RDB save or AOF rewrite did not finish in time")


def measure_growth(
    client: SentinelClient,
    nodes: list[redis.Redis],
    master: redis.Redis,
    replicas: int,
    sizes: list[int],
    samples: int,
    seed: int = 11,
    state: SentinelClient | None = None,
) -> dict:
    """Fill up to each size in ``sizes`` (keys) and time both operations there: the entry read on
    the growing cache tier, the rate-limit check on ``state`` (its tier; None: on ``client``)."""
    for node in nodes:
        node.config_set("maxmemory", GROWTH_MAXMEMORY)
    cache = EntryCache(client, ttl_ms=ENTRY_TTL_MS)
    limiter = RateLimiter(state or client, limits={"GetEntry": 10**12})
    ispbs = [f"{i:08d}" for i in range(1000)]
    filled: list[str] = []  # ids of the entries loaded so far
    points = []
    rng = random.Random(seed)
    evicted = int(master.info("stats")["evicted_keys"])
    started = time.monotonic()

    def write(batch: list[Entry]) -> None:
        client.run(lambda r: fill_our_layout(r, cache, batch, cache_tier_only=True), idempotent=True)
        filled.extend(entry.id for entry in batch)  # one list.extend: atomic under the GIL

    for size in sorted(sizes):
        missing = max(0, size - master.dbsize())
        fill_parallel(write, entries(seed, len(filled), -(-missing // KEYS_PER_ENTRY)), BATCH)
        wait_replicated(master, replicas)
        persist_now(nodes)
        ids = [filled[rng.randrange(len(filled))] for _ in range(samples)]
        gets = time_calls([lambda i=i: _hit(cache, i) for i in ids])
        checks = time_calls([lambda i=i: limiter.check(ispbs[i % len(ispbs)], "GetEntry") for i in range(samples)])
        points.append(
            {
                "keys": size,
                "dbsize": master.dbsize(),
                "entries": len(filled),
                "used_memory": int(master.info("memory")["used_memory"]),
                "entry.get_by_id": percentiles_us(gets),
                "ratelimit.check": percentiles_us(checks),
            }
        )
    if int(master.info("stats")["evicted_keys"]) != evicted:
        raise BenchError("keys were evicted during the growth fill: the figures would be for a smaller keyspace")
    first, last = points[0], points[-1]
    return {
        "maxmemory": GROWTH_MAXMEMORY,
        "fill_seconds": round(time.monotonic() - started, 1),
        "points": points,
        # p50 at the largest size over p50 at the smallest: 1.0 is a flat curve.
        "p50_ratio_largest_to_smallest": {
            op: round(last[op]["p50_us"] / first[op]["p50_us"], 2) for op in ("entry.get_by_id", "ratelimit.check")
        },
    }


def _hit(cache: EntryCache, entry_id: str) -> None:
    if cache.get_by_id(entry_id) is None:
        raise BenchError(f"entry {entry_id} loaded for the growth step is missing")
