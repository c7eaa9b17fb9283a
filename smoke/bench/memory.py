"""Bytes per cached entry on the cache tier: our layout (entry + pointer; the version marker
lives on the state tier since issue 13, see :mod:`smoke.strategies.entries` for its size) against
the seed's (the full JSON under both keys), same entries, same run.

Each layout is loaded into an empty database and measured by the growth of the memory that
counts against ``maxmemory`` (``INFO memory``: ``used_memory`` minus ``mem_not_counted_for_evict``,
i.e. without the replication and AOF buffers, which a bulk load inflates for a moment and which
belong to no entry). Starting from empty charges each layout its own hash-table growth (one
more key per entry means bigger main and expires dictionaries), as production would. The run
fails if anything was evicted or a key is missing, since the figure would then be too low.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from smoke.bench.dataset import entries, fill_our_layout, fill_parallel, fill_seed_layout
from smoke.bench.measure import BenchError
from smoke.drills.workload import wait_replicated
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import Entry, EntryCache

BATCH = 1000


def counted_memory(master: redis.Redis) -> int:
    info = master.info("memory")
    return int(info["used_memory"]) - int(info.get("mem_not_counted_for_evict", 0))


def settle(master: redis.Redis, replicas: int) -> None:
    """Let the replicas catch up (the replication buffer shrinks back) before reading memory."""
    wait_replicated(master, replicas)


def load(master: redis.Redis, count: int, seed: int, write: Callable[[list[Entry]], object]) -> None:
    fill_parallel(write, entries(seed, 0, count), BATCH)


def bytes_per_entry(
    master: redis.Redis,
    replicas: int,
    count: int,
    write: Callable[[list[Entry]], object],
    keys_per_entry: int,
    seed: int,
) -> float:
    master.flushall(asynchronous=False)
    settle(master, replicas)
    evicted = int(master.info("stats")["evicted_keys"])
    before = counted_memory(master)
    load(master, count, seed, write)
    settle(master, replicas)
    after = counted_memory(master)
    size = master.dbsize()
    if int(master.info("stats")["evicted_keys"]) != evicted or size != count * keys_per_entry:
        raise BenchError(f"expected {count * keys_per_entry} keys, found {size} (maxmemory too small for {count}?)")
    return (after - before) / count


def measure_memory(client: SentinelClient, master: redis.Redis, replicas: int, count: int, seed: int = 7) -> dict:
    """``{"entries", "bytes_per_entry", "seed_layout_bytes_per_entry"}``; leaves the database empty."""
    cache = EntryCache(client)

    def ours(batch: list[Entry]) -> None:
        client.run(lambda r: fill_our_layout(r, cache, batch, cache_tier_only=True), idempotent=True)

    def seeds(batch: list[Entry]) -> None:
        client.run(lambda r: fill_seed_layout(r, "", batch), idempotent=True)

    our_bytes = bytes_per_entry(master, replicas, count, ours, 2, seed)
    seed_bytes = bytes_per_entry(master, replicas, count, seeds, 2, seed)
    master.flushall(asynchronous=False)
    return {
        "entries": count,
        "bytes_per_entry": round(our_bytes, 1),
        "seed_layout_bytes_per_entry": round(seed_bytes, 1),
    }


def tier_memory(master: redis.Redis) -> dict[str, Any]:
    """One tier's memory as its master reports it: used bytes, maxmemory and its share, the
    eviction policy, keys and evicted keys (a state tier must show 0 evicted)."""
    info = {**master.info("memory"), **master.info("stats"), **master.info("keyspace")}
    maxmemory = int(info.get("maxmemory", 0))
    used = int(info["used_memory"])
    return {
        "used_memory_bytes": used,
        "maxmemory_bytes": maxmemory,
        "used_share": round(used / maxmemory, 4) if maxmemory else None,
        "maxmemory_policy": info.get("maxmemory_policy"),
        "keys": int(info.get("db0", {}).get("keys", 0)) if isinstance(info.get("db0"), dict) else 0,
        "evicted_keys": int(info.get("evicted_keys", 0)),
    }
