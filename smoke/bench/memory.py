"""Bytes per cached entry: our layout against the seed's (the full JSON under both keys), same
entries, same run.

Every key an entry needs, on each tier it uses (:mod:`smoke.strategies.entries`, *Data shape*):
on the cache tier the entry value (layout ``E1``) and its pointer, for every cached entry; on the
state tier a version marker, only for an entry written through or invalidated within the marker
TTL (5 min + 2 s; a fill creates none). So two figures: ``bytes_per_entry`` (the cache tier's,
what every cached entry costs, which the 0.55 target is judged by) and
``marker_bytes_per_written_entry`` (the state tier's, added for the share of entries written in
the last 5 minutes; the report prints that case's ratio too).

Each layout is loaded into an empty database and measured by the growth of ``used_memory``
without the replication buffers (``mem_not_counted_for_evict``: the replicas' output and the AOF
buffer; ``mem_replication_backlog``: the backlog, which the first bulk load after a start grows
to its size, since issue 18: it used to be charged to whichever layout was loaded first, ours),
which a bulk load inflates and which belong to no entry. Starting from empty charges each
layout its own hash-table growth (one more key per entry means bigger main and expires
dictionaries), as production would. The run fails if anything was evicted or a key is missing,
since the figure would then be too low.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from smoke.bench.dataset import entries, fill_markers, fill_our_layout, fill_parallel, fill_seed_layout
from smoke.bench.measure import BenchError
from smoke.drills.workload import wait_replicated
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import Entry, EntryCache

BATCH = 1000


def counted_memory(master: redis.Redis) -> int:
    """Used memory without the replication buffers: the replicas' share
    (``mem_not_counted_for_evict``) and the backlog's (``mem_replication_backlog``, up to
    ``repl-backlog-size``: grown by whichever load comes first after a start, and trimmed back
    lazily; it belongs to no entry)."""
    info = master.info("memory")
    buffers = int(info.get("mem_not_counted_for_evict", 0)) + int(info.get("mem_replication_backlog", 0))
    return int(info["used_memory"]) - buffers


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


def marker_bytes_per_entry(
    state: SentinelClient, state_master: redis.Redis, replicas: int, cache: EntryCache, count: int, seed: int
) -> float:
    """The state tier's growth per version marker, as ``EntryCache.write`` leaves one, for
    ``count`` entries; the markers are deleted again (the state tier is not flushed: it holds
    decisions of the other benchmarks)."""
    settle(state_master, replicas)
    before = counted_memory(state_master)
    load(state_master, count, seed, lambda batch: state.run(lambda r: fill_markers(r, cache, batch), idempotent=True))
    settle(state_master, replicas)
    after = counted_memory(state_master)
    markers = [cache.marker_key(entry.id) for entry in entries(seed, 0, count)]
    chunks = [markers[start : start + BATCH] for start in range(0, count, BATCH)]
    found = sum(int(state_master.exists(*chunk)) for chunk in chunks)
    for chunk in chunks:
        state_master.delete(*chunk)
    if found != count:
        raise BenchError(f"expected {count} version markers on the state tier, found {found}")
    # Other benchmarks' keys expiring meanwhile (rate-limit windows, 30 s workflow statuses) make
    # this a little low: a few keys against the thousands loaded.
    return (after - before) / count


def measure_memory(
    client: SentinelClient,
    master: redis.Redis,
    replicas: int,
    count: int,
    seed: int = 7,
    *,
    state: SentinelClient | None = None,
    state_master: redis.Redis | None = None,
) -> dict:
    """``{"entries", "bytes_per_entry", "seed_layout_bytes_per_entry",
    "marker_bytes_per_written_entry"}``; leaves the cache tier's database empty. ``state`` and
    ``state_master``: the markers' tier (None: the markers live on ``client``'s tier)."""
    cache = EntryCache(client, markers=state)

    def ours(batch: list[Entry]) -> None:
        client.run(lambda r: fill_our_layout(r, cache, batch, cache_tier_only=True), idempotent=True)

    def seeds(batch: list[Entry]) -> None:
        client.run(lambda r: fill_seed_layout(r, "", batch), idempotent=True)

    our_bytes = bytes_per_entry(master, replicas, count, ours, 2, seed)
    seed_bytes = bytes_per_entry(master, replicas, count, seeds, 2, seed)
    master.flushall(asynchronous=False)
    marker_bytes = marker_bytes_per_entry(
        state or client, master if state_master is None else state_master, replicas, cache, count, seed
    )
    return {
        "entries": count,
        "bytes_per_entry": round(our_bytes, 1),
        "seed_layout_bytes_per_entry": round(seed_bytes, 1),
        "marker_bytes_per_written_entry": round(marker_bytes, 1),
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
