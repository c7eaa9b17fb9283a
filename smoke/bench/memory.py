"""Bytes per cached entry: our layout (entry + pointer + version marker) against the seed's (the
full JSON under both keys), same entries, same run.

Each layout is loaded into an empty database and measured by the growth of the memory that
counts against ``maxmemory`` (``INFO memory``: ``used_memory`` minus ``mem_not_counted_for_evict``,
i.e. without the replication and AOF buffers, which a bulk load inflates for a moment and which
belong to no entry). Starting from empty charges each layout its own hash-table growth (one
more key per entry means bigger main and expires dictionaries), as production would. The run
fails if anything was evicted or a key is missing, since the figure would then be too low.
"""

from __future__ import annotations

from collections.abc import Callable

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
        client.run(lambda r: fill_our_layout(r, cache, batch), idempotent=True)

    def seeds(batch: list[Entry]) -> None:
        client.run(lambda r: fill_seed_layout(r, "", batch), idempotent=True)

    our_bytes = bytes_per_entry(master, replicas, count, ours, 3, seed)
    seed_bytes = bytes_per_entry(master, replicas, count, seeds, 2, seed)
    master.flushall(asynchronous=False)
    return {
        "entries": count,
        "bytes_per_entry": round(our_bytes, 1),
        "seed_layout_bytes_per_entry": round(seed_bytes, 1),
    }
