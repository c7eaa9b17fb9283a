"""Growth: latency of entry get-by-id and of a rate-limit check as the keyspace grows.

The keyspace is filled with realistic entries in our layout (three keys each: entry, pointer,
version marker) up to each size, and at each size both operations are timed on random keys, so a
lookup touches a cold part of the hash table as it would in production. A Redis lookup is a hash
table probe, so the curve should be flat; what could bend it is the table's incremental
rehashing while it grows, and the forks of RDB saves and AOF rewrites that a bulk load triggers
(each size waits until none is running before it is timed).

The dev stack's ``maxmemory`` (256 MiB, ``allkeys-lru``) holds about 330k of these entries, so
1M keys would measure evictions rather than lookups: for this step every data node gets the prod
stack's ``maxmemory`` (2 GiB) with ``CONFIG SET``. The value used is reported.
"""

from __future__ import annotations

import itertools
import random
import time

import redis

from smoke.bench.dataset import entries, fill_our_layout
from smoke.bench.measure import BenchError, percentiles_us, time_calls
from smoke.client import SentinelClient
from smoke.entries import EntryCache
from smoke.ratelimit import RateLimiter

BATCH = 1000
KEYS_PER_ENTRY = 3
GROWTH_MAXMEMORY = 2 * 1024**3  # the prod stack's maxmemory (4 GiB limit x 0.5)
ENTRY_TTL_MS = 3_600_000  # the fill must outlive the run; the TTL does not change an entry's size


def wait_for_persistence(master: redis.Redis, timeout: float = 120) -> None:
    """Wait until no RDB save or AOF rewrite is running (their fork steals the CPU being timed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = master.info("persistence")
        if not int(info["rdb_bgsave_in_progress"]) and not int(info["aof_rewrite_in_progress"]):
            return
        time.sleep(0.2)


def measure_growth(
    client: SentinelClient,
    nodes: list[redis.Redis],
    master: redis.Redis,
    replicas: int,
    sizes: list[int],
    samples: int,
    seed: int = 11,
) -> dict:
    """Fill up to each size in ``sizes`` (keys) and time both operations there."""
    for node in nodes:
        node.config_set("maxmemory", GROWTH_MAXMEMORY)
    cache = EntryCache(client, ttl_ms=ENTRY_TTL_MS)
    limiter = RateLimiter(client, limits={"GetEntry": 10**12})
    ispbs = [f"{i:08d}" for i in range(1000)]
    filled: list[str] = []  # ids of the entries loaded so far
    points = []
    rng = random.Random(seed)
    evicted = int(master.info("stats")["evicted_keys"])
    started = time.monotonic()
    for size in sorted(sizes):
        missing = max(0, size - master.dbsize())
        source = entries(seed, len(filled), -(-missing // KEYS_PER_ENTRY))
        while batch := list(itertools.islice(source, BATCH)):
            client.run(lambda r, b=batch: fill_our_layout(r, cache, b), idempotent=True)
            filled.extend(entry.id for entry in batch)
        master.execute_command("WAIT", replicas, 10_000)
        wait_for_persistence(master)
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
