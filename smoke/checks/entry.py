"""Entry-cache checks: each proves one property of :mod:`smoke.strategies.entries` on a live master.

Every cache is built with the context's state-tier client as ``markers`` (``None`` on a target
without a state tier: the markers then live on the cache tier's client, same protocol). Keys are
looked for on the tier they live on: entries, pointers, leases and tombstones on the cache tier,
markers and the epoch on ``ctx.state``.

Round trips are counted with :class:`CountingClient`, which sees every socket write on one
client's pool (one per tier): unlike ``INFO commandstats`` it is not disturbed by other checks or
processes using the same server at the same time.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.connection import AbstractConnection

from smoke.checks import CheckContext, check, expect
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import (
    DEFAULT_TTL_MS,
    LEASE_ID_KEY,
    LEASE_KEY_KEY,
    MAX_NEGATIVE_TTL_MS,
    NONE,
    TOMBSTONE,
    Entry,
    EntryCache,
    WriteResult,
    sample_entry,
)

T = TypeVar("T")


class CountingClient(SentinelClient):
    """A view of a :class:`SentinelClient` that records every round trip made on its pool.

    It shares the wrapped client's pool, retries and re-discovery (``run`` delegates). While
    :meth:`count` runs, every write to a socket of the wrapped client's pool (one per command, or
    one per pipeline: a script pipelined with its ``INFO`` and ``WAIT`` is one round trip) is
    recorded as the command names it carried, joined by ``+`` (``INFO+EVALSHA+WAIT``). So
    ``len(commands)`` is the number of round trips, including a ``SCRIPT LOAD`` after
    ``NOSCRIPT`` and a retry after a connection error.
    """

    def __init__(self, inner: SentinelClient) -> None:  # the wrapped client owns the connections
        self._inner = inner
        self.config = inner.config
        self.master = inner.master
        self.commands: list[str] = []
        self._lock = threading.Lock()

    def run(self, operation: Callable[[redis.Redis], T], *, idempotent: bool) -> T:
        return self._inner.run(operation, idempotent=idempotent)

    def replicas_accounted_for(self, master: str, following: frozenset[str]) -> bool:
        return self._inner.replicas_accounted_for(master, following)

    def close(self) -> None:  # the wrapped client's pool is not ours to close
        pass

    def count(self, fn: Callable[[], T]) -> tuple[T, list[str]]:
        """Run ``fn`` and return its result and the round trips it made on this client's pool."""
        proxy = getattr(self._inner.master.connection_pool, "proxy", None)
        original = AbstractConnection.send_packed_command
        commands, lock = self.commands, self._lock

        def counting(connection: AbstractConnection, command: Any, check_health: bool = True) -> None:
            if getattr(connection, "connection_pool", None) is proxy:
                with lock:
                    commands.append("+".join(_command_names(command)))
            original(connection, command, check_health)

        start = len(self.commands)
        AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
        try:
            result = fn()
        finally:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
        return result, self.commands[start:]


def _command_names(packed: bytes | list[bytes | memoryview] | memoryview) -> list[str]:
    """The command names in a packed RESP request (one command or a pipeline of them)."""
    data = bytes(packed) if not isinstance(packed, list) else b"".join(bytes(chunk) for chunk in packed)
    names, i = [], 0
    while i < len(data):
        end = data.index(b"\r\n", i)
        count, i = int(data[i + 1 : end]), end + 2
        for k in range(count):
            end = data.index(b"\r\n", i)
            size, i = int(data[i + 1 : end]), end + 2
            if k == 0:
                names.append(data[i : i + size].decode(errors="replace").upper())
            i += size + 2
    return names


def isolated(ctx: CheckContext) -> CheckContext:
    """The context with a key prefix of this check's own below the run's prefix: the runner gives
    all checks one prefix, and a check that scans its keys must not see another check's. The
    latency recorder is shared (``replace`` keeps the same dict)."""
    return dataclasses.replace(ctx, prefix=f"{ctx.prefix}{uuid.uuid4().hex[:8]}:")


def keys_under(ctx: CheckContext, pattern: str = "*", client: SentinelClient | None = None) -> list[str]:
    """The keys under the check's prefix on ``client``'s tier (the cache tier by default)."""
    on = ctx.client if client is None else client
    return on.run(lambda r: sorted(r.scan_iter(match=ctx.prefix + pattern, count=1000)), idempotent=True)


def keys_on_both_tiers(ctx: CheckContext, pattern: str = "*") -> dict[str, SentinelClient]:
    """Every key under the check's prefix, with the client of the tier it lives on."""
    found = {key: ctx.client for key in keys_under(ctx, pattern)}
    if ctx.state is not ctx.client:
        found.update({key: ctx.state for key in keys_under(ctx, pattern, ctx.state)})
    return found


def entry_cache(ctx: CheckContext, client: SentinelClient | None = None, **options: Any) -> EntryCache:
    """The entry cache a check runs: on the context's cache tier (or ``client``), its markers on
    the context's state tier (``ctx.state``: the cache tier's client on a target without one)."""
    markers = options.pop("markers", ctx.state)
    return EntryCache(ctx.client if client is None else client, ctx.prefix, markers=markers, **options)


def pttl(ctx: CheckContext, key: str, client: SentinelClient | None = None) -> int:
    on = ctx.client if client is None else client
    return int(on.run(lambda r: r.pttl(key), idempotent=True))


def is_tombstone(ctx: CheckContext, key: str) -> bool:
    """Whether ``key`` (on the cache tier) holds an invalidation tombstone."""
    value = ctx.client.run(lambda r: r.get(key) if r.type(key) == "string" else None, idempotent=True)
    return bool(value) and str(value).startswith(TOMBSTONE)


def set_raw(ctx: CheckContext, key: str, value: str | bytes, px: int = 60_000) -> None:
    """Plant a value the strategy did not write (corruption, a foreign writer); ``bytes`` are
    stored as they are, e.g. ones that are not UTF-8."""
    ctx.client.run(lambda r: r.set(key, value, px=px), idempotent=True)


# Values of a foreign Redis type, as a seed-era or foreign writer may leave them: each plants one
# at a key (no TTL, as the seed's SADD index had none).
FOREIGN_TYPES: dict[str, Callable[[redis.Redis, str], Any]] = {
    "hash": lambda r, k: r.hset(k, mapping={"id": "x", "version": "1"}),
    "list": lambda r, k: r.rpush(k, "a", "b"),
    "set": lambda r, k: r.sadd(k, "c1", "c2"),
    "zset": lambda r, k: r.zadd(k, {"c1": 1}),
    "string": lambda r, k: r.set(k, "a string"),
}


def plant_type(ctx: CheckContext, key: str, kind: str, client: SentinelClient | None = None) -> None:
    """Replace ``key`` (on ``client``'s tier, the cache tier by default) with a value of Redis
    type ``kind``."""
    on = ctx.client if client is None else client
    on.run(lambda r: (r.delete(key), FOREIGN_TYPES[kind](r, key)), idempotent=True)


def exists(ctx: CheckContext, key: str, client: SentinelClient | None = None) -> bool:
    on = ctx.client if client is None else client
    return bool(on.run(lambda r: r.exists(key), idempotent=True))


def connection_still_works(ctx: CheckContext, times: int = 5) -> None:
    """The shared client still answers, from this thread, after reading foreign values: a reply
    that failed to decode half-way would have left the rest unread on a pooled connection."""
    for i in range(times):
        got = ctx.client.run(lambda r, i=i: r.echo(f"x{i}"), idempotent=True)
        expect(got == f"x{i}", f"the shared connection answered {got!r} to ECHO x{i} after a foreign value")


def new_id() -> str:
    return str(uuid.uuid4())


def _timed_get_by_id(ctx: CheckContext, cache: EntryCache, entry_id: str) -> Entry | None:
    return ctx.timed("entry.get_by_id", lambda: cache.get_by_id(entry_id))  # type: ignore[return-value]


def _timed_get_by_key(ctx: CheckContext, cache: EntryCache, entry: Entry) -> Entry | None:
    return ctx.timed("entry.get_by_key", lambda: cache.get_by_key(entry.key_type, entry.key_value))  # type: ignore[return-value]


def _timed_write(ctx: CheckContext, cache: EntryCache, entry: Entry) -> str:
    """The write's outcome (``stored``, ``stale``, ``expired``), timed."""
    result: WriteResult = ctx.timed("entry.write", lambda: cache.write(entry))  # type: ignore[assignment]
    return result.outcome


@check("entry", "read_by_id_and_key_one_round_trip")
def read_by_id_and_key_one_round_trip(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    counting, counting_state = CountingClient(ctx.client), CountingClient(ctx.state)
    cache = entry_cache(ctx, counting, markers=counting_state)
    entry = sample_entry(new_id())
    cache.write(entry)
    cache.get_by_id(entry.id)  # loads the scripts once (NOSCRIPT -> SCRIPT LOAD), not counted below
    cache.get_or_load(new_id(), lambda i: sample_entry(i))
    for _ in range(20):  # latency samples for the report
        _timed_get_by_id(ctx, cache, entry.id)
        _timed_get_by_key(ctx, cache, entry)

    def count(fn: Callable[[], T]) -> tuple[T, list[str], list[str]]:
        """``fn``'s result and the commands it sent to the cache tier and to the state tier."""
        (result, on_state), on_cache = counting.count(lambda: counting_state.count(fn))
        return result, on_cache, on_state

    by_id, id_cache, id_state = count(lambda: _timed_get_by_id(ctx, cache, entry.id))
    by_key, key_cache, key_state = count(lambda: _timed_get_by_key(ctx, cache, entry))
    _, write_cache, write_state = count(lambda: _timed_write(ctx, cache, sample_entry(entry.id, 2, entry.key_value)))
    cold = sample_entry(new_id())
    filled, fill_cache, fill_state = count(lambda: cache.get_or_load(cold.id, lambda _i: cold))
    expect(by_id == entry, f"get_by_id returned {by_id!r}, expected the written entry")
    expect(by_key == entry, f"get_by_key returned {by_key!r}, expected the written entry")
    for name, on_cache, on_state, want in (
        ("get_by_id", id_cache, id_state, (1, 0)),
        ("get_by_key", key_cache, key_state, (1, 0)),
        ("write", write_cache, write_state, (1, 1)),
        ("a cold get_or_load", fill_cache, fill_state, (2, 2)),
    ):
        expect_round_trips(ctx, name, on_cache, on_state, want)
    expect(filled.outcome == "stored", f"the counted cold fill was {filled.outcome}")
    return (
        f"get_by_id {len(id_cache)} RTT ({id_cache[0]}), get_by_key {len(key_cache)} RTT, on the cache tier; "
        f"write {len(write_state)} (state) + {len(write_cache)} (cache) RTT; cold get_or_load "
        f"{len(fill_cache)} + {len(fill_state)} RTT"
    )


@check("entry", "stored_once")
def stored_once(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    cache = entry_cache(ctx)
    entry = sample_entry(new_id())
    _timed_write(ctx, cache, entry)
    values = {
        key: ctx.client.run(lambda r, k=key: r.get(k) if r.type(k) == "string" else None, idempotent=True)
        for key in keys_under(ctx, "dict:entry:[ik][de]*")
    }
    copies = [k for k, v in values.items() if v and entry.owner.name in v]
    pointer = values.get(cache.pointer_key(entry.key_type, entry.key_value))
    expect(copies == [cache.id_key(entry.id)], f"entry JSON found under {copies}, expected only the id key")
    expect(pointer == entry.id, f"the key-key holds {pointer!r}, expected the pointer {entry.id!r}")
    size = len(values[cache.id_key(entry.id)] or "")
    return f"one {size}-byte copy under dict:entry:id:, the key-key holds a {len(pointer or '')}-byte pointer"


def expect_round_trips(
    ctx: CheckContext, name: str, on_cache: list[str], on_state: list[str], want: tuple[int, int]
) -> None:
    """``name`` made ``want`` (cache, state) round trips. A target without a state tier runs both
    tiers' steps on one instance: both counters then see every round trip, and the sum is due."""
    if ctx.state is ctx.client:
        expect(
            on_cache == on_state and len(on_cache) == sum(want),
            f"{name} took {len(on_cache)} round trips {on_cache} on the one tier, expected {sum(want)}",
        )
        return
    expect(
        (len(on_cache), len(on_state)) == want,
        f"{name} took {len(on_cache)} round trips on the cache tier {on_cache} and {len(on_state)} on the "
        f"state tier {on_state}, expected {want[0]} + {want[1]}",
    )


@check("entry", "invalidation_atomic")
def invalidation_atomic(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    counting, counting_state = CountingClient(ctx.client), CountingClient(ctx.state)
    cache = entry_cache(ctx, counting, markers=counting_state)
    entry = sample_entry(new_id())
    cache.write(entry)
    cache.invalidate(entry.id)
    cache.write(sample_entry(entry.id, 2, entry.key_value))
    (result, state_cmds), cmds = counting.count(
        lambda: counting_state.count(lambda: ctx.timed("entry.invalidate", lambda: cache.invalidate(entry.id)))
    )
    removed = result.removed
    expect_round_trips(ctx, "invalidate", cmds, state_cmds, (1, 1))
    expect(removed == 2, f"invalidate removed {removed} keys, expected the entry and its pointer")
    # What is left at the id is a tombstone (never served); nothing else.
    left = [k for k in keys_under(ctx, "dict:entry:[ik][de]*") if not is_tombstone(ctx, k)]
    expect(not left, f"keys left after invalidate: {left}")
    expect(cache.get_by_id(entry.id) is None, "the tombstone an invalidation leaves was served")
    # Concurrent readers never see a half-done write or invalidation: a read by key returns
    # nothing or the whole entry for that key, never another entry's data.
    other = sample_entry(new_id(), 1, entry.key_value)
    stop = threading.Event()
    wrong: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            got = cache.get_by_key(entry.key_type, entry.key_value)
            reads += 1
            if got is not None and (got.key_value != entry.key_value or got.id not in (entry.id, other.id)):
                wrong.append(repr(got))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for version in range(3, 43):
            cache.write(sample_entry(entry.id, version, entry.key_value))
            cache.invalidate(entry.id)
    finally:
        stop.set()
        thread.join(5)
    expect(not wrong, f"a reader saw inconsistent entries: {wrong[:2]}")
    marker = cache.marker_key(entry.id)
    ttl = pttl(ctx, marker, cache.markers)
    expect(0 < ttl <= cache.marker_ttl_ms, f"the invalidation marker has PTTL {ttl}")
    return (
        f"invalidate = {len(state_cmds)} + {len(cmds)} RTT ({cmds[0]}, state tier then cache tier) removing entry "
        f"+ pointer; {reads} concurrent reads consistent"
    )


@check("entry", "stale_refill_rejected")
def stale_refill_rejected(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    cache = entry_cache(ctx)
    outcomes = []

    # (a) a reader misses and loads v1; the row changes and the cache is invalidated meanwhile.
    a = sample_entry(new_id())

    def load_then_invalidated(_id: str) -> Entry:
        ctx.timed("entry.invalidate", lambda: cache.invalidate(a.id))
        return a

    result = cache.get_or_load(a.id, load_then_invalidated)
    cached = cache.get_by_id(a.id)
    expect(cached is None, f"(a) the fill that loaded before the invalidation was stored: {cached!r}")
    outcomes.append(f"fill-after-invalidate {result.outcome}")

    # (b) a reader loads v1 while a writer commits and writes through v2.
    b1, b2 = sample_entry(new_id(), 1), None
    b2 = sample_entry(b1.id, 2, b1.key_value)

    def load_then_newer_write(_id: str) -> Entry:
        _timed_write(ctx, cache, b2)
        return b1

    result = cache.get_or_load(b1.id, load_then_newer_write)
    cached = cache.get_by_id(b1.id)
    expect(cached == b2, f"(b) after a late v1 fill the cache holds {cached and cached.version}, expected v2")
    outcomes.append(f"old-fill-after-newer-write {result.outcome}")

    # (c) a late write-through of the invalidated version, after the entry is gone.
    c = sample_entry(new_id(), 5)
    cache.write(c)
    cache.invalidate(c.id)
    late = _timed_write(ctx, cache, c)
    expect(late == "stale" and cache.get_by_id(c.id) is None, f"(c) a late write of invalidated v5 was {late}")
    newer = _timed_write(ctx, cache, sample_entry(c.id, 6, c.key_value))
    expect(newer == "stored", f"(c) the next version v6 was {newer}, expected stored")
    outcomes.append(f"late-write-after-invalidate {late}")

    # (d) the same race through a read by key: the lease is on the key, the marker on the id.
    d = sample_entry(new_id(), 1)

    def load_by_key_then_invalidated(_kt: str, _kv: str) -> Entry:
        cache.invalidate(d.id)
        return d

    result = cache.get_or_load_by_key(d.key_type, d.key_value, load_by_key_then_invalidated)
    cached = cache.get_by_key(d.key_type, d.key_value)
    expect(cached is None, f"(d) a by-key fill loaded before the invalidation was stored: {cached!r}")
    outcomes.append(f"by-key-fill-after-invalidate {result.outcome}")

    # (e) an invalidation rejects only fills that started before it: the refills that follow it
    # (here of the unchanged entry, no committed version given) are stored, and the loader runs once.
    e = sample_entry(new_id(), 3)
    cache.write(e)
    cache.invalidate(e.id)
    loads: list[str] = []

    def load_unchanged(entry_id: str) -> Entry:
        loads.append(entry_id)
        return e

    refills = [cache.get_or_load(e.id, load_unchanged) for _ in range(3)]
    expect(len(loads) == 1, f"(e) 3 reads after an invalidation ran the loader {len(loads)} times, expected 1")
    expect(refills[0].outcome == "stored", f"(e) the refill after the invalidation was {refills[0].outcome}")
    expect(cache.get_by_id(e.id) == e, "(e) the refill after the invalidation was not cached")
    outcomes.append(f"refill-after-invalidate {refills[0].outcome}, {len(loads)} load for 3 reads")

    # (f) a not-found loaded by key while the entry moves to that key and is invalidated (the
    # writer names the entry, not its new key): the not-found is dropped, the next read loads it.
    f1 = sample_entry(new_id(), 1, f"old.{new_id()[:8]}@example.com.br")
    f2 = sample_entry(f1.id, 2, f"new.{new_id()[:8]}@example.com.br")
    cache.write(f1)

    def not_found_then_moved(_kt: str, _kv: str) -> None:
        cache.invalidate(f1.id, committed_version=2)

    result = cache.get_or_load_by_key(f2.key_type, f2.key_value, not_found_then_moved)
    after = cache.get_or_load_by_key(f2.key_type, f2.key_value, lambda _kt, _kv: f2)
    expect(
        result.outcome == "invalidated" and after.entry == f2 and after.loaded,
        f"(f) a not-found by key loaded before an invalidation was {result.outcome}; the next read got "
        f"{after.outcome} {after.entry and after.entry.version}",
    )
    outcomes.append(f"not-found-by-key-before-invalidate {result.outcome}")
    return "; ".join(outcomes)


@check("entry", "reordered_writes_keep_newest")
def reordered_writes_keep_newest(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    cache = entry_cache(ctx)
    v3 = sample_entry(new_id(), 3)
    first = _timed_write(ctx, cache, v3)
    late = _timed_write(ctx, cache, sample_entry(v3.id, 2, v3.key_value))
    cached = cache.get_by_id(v3.id)
    expect(first == "stored" and late == "stale", f"write v3 -> {first}, late write v2 -> {late}")
    expect(cached == v3, f"cache holds v{cached and cached.version} after v3 then v2")
    # Versions that a double cannot tell apart (Lua numbers are doubles) keep their order too.
    big = sample_entry(new_id(), 2**53 + 1)
    cache.write(big)
    late_big = cache.write(sample_entry(big.id, 2**53, big.key_value)).outcome
    kept = cache.get_by_id(big.id)
    expect(
        late_big == "stale" and kept == big, f"2^53 after 2^53 + 1 -> {late_big}, cache holds {kept and kept.version}"
    )
    return f"v3 {first}, late v2 {late}, cache keeps v3; 2^53 after 2^53 + 1 {late_big}"


@check("entry", "single_loader_under_concurrency")
def single_loader_under_concurrency(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    cache = entry_cache(ctx)
    entry = sample_entry(new_id())
    readers = 20
    calls = []
    lock = threading.Lock()
    barrier = threading.Barrier(readers)
    results: list[Entry | None] = []
    errors: list[BaseException] = []

    def loader(entry_id: str) -> Entry:
        with lock:
            calls.append(entry_id)
        time.sleep(0.15)  # a slow database query: the others arrive while it runs
        return entry

    def reader() -> None:
        try:
            barrier.wait(5)
            got = cache.get_or_load(entry.id, loader)
            with lock:
                results.append(got.entry)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(readers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    elapsed = (time.perf_counter() - started) * 1000
    expect(not errors, f"readers failed: {errors[:2]}")
    expect(len(calls) == 1, f"{readers} concurrent cold reads ran the loader {len(calls)} times, expected 1")
    expect(results == [entry] * readers, f"{sum(r == entry for r in results)} of {readers} readers got the entry")
    return f"{readers} concurrent cold reads: loader ran {len(calls)} time(s), all served in {elapsed:.0f} ms"


@check("entry", "negative_cache_short_lived")
def negative_cache_short_lived(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    default = entry_cache(ctx)
    expect(
        0 < default.negative_ttl_ms <= MAX_NEGATIVE_TTL_MS,
        f"default negative TTL {default.negative_ttl_ms} ms",
    )
    try:
        entry_cache(ctx, negative_ttl_ms=MAX_NEGATIVE_TTL_MS + 1)
        refused = False
    except ValueError:
        refused = True
    expect(refused, f"a negative TTL above {MAX_NEGATIVE_TTL_MS} ms was accepted")
    # 1 s: the five reads and the PTTL must land within it, also on a loaded machine.
    short_ms = 1000
    cache = entry_cache(ctx, negative_ttl_ms=short_ms)
    missing = new_id()
    calls = []

    def loader(entry_id: str) -> None:
        calls.append(entry_id)

    for _ in range(5):
        cache.get_or_load(missing, loader)
    expect(len(calls) == 1, f"5 reads of an absent entry ran the loader {len(calls)} times, expected 1")
    ttl = pttl(ctx, cache.id_key(missing))
    expect(0 < ttl <= short_ms, f"the negative entry has PTTL {ttl}, expected (0, {short_ms}]")
    time.sleep(short_ms / 1000 + 0.05)
    cache.get_or_load(missing, loader)
    expect(len(calls) == 2, f"after the negative TTL the loader ran {len(calls)} times in all, expected 2")
    created = sample_entry(missing)
    stored = cache.write(created).outcome
    expect(stored == "stored" and cache.get_by_id(missing) == created, "a write did not replace the negative entry")
    return (
        f"5 reads of an absent entry -> 1 load; negative PTTL {ttl} ms, reloaded after expiry; "
        f"default {default.negative_ttl_ms} ms (max {MAX_NEGATIVE_TTL_MS})"
    )


@check("entry", "changed_key_value_leaves_no_stale_key")
def changed_key_value_leaves_no_stale_key(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    cache = entry_cache(ctx)
    v1 = sample_entry(new_id(), 1, key_value="old@example.com.br")
    v2 = sample_entry(v1.id, 2, key_value="new@example.com.br")
    _timed_write(ctx, cache, v1)
    _timed_write(ctx, cache, v2)
    old_ptr = cache.pointer_key(v1.key_type, v1.key_value)
    exists = ctx.client.run(lambda r: r.exists(old_ptr), idempotent=True)
    expect(exists == 0, f"the old pointer {old_ptr} survived the key change")
    expect(_timed_get_by_key(ctx, cache, v1) is None, "a read by the old key still returns the entry")
    expect(_timed_get_by_key(ctx, cache, v2) == v2, "a read by the new key misses")
    # The old key moved to another entry before this one changed: its pointer must stay.
    x1 = sample_entry(new_id(), 1, key_value="moved@example.com.br")
    y = sample_entry(new_id(), 1, key_value=x1.key_value)
    cache.write(x1)
    cache.write(y)
    cache.write(sample_entry(x1.id, 2, key_value="elsewhere@example.com.br"))
    owner = cache.get_by_key(y.key_type, y.key_value)
    expect(owner == y, f"the key now owned by another entry resolves to {owner and owner.id}, expected {y.id}")
    # A pointer left behind by anything else (eviction, a foreign writer) is never served.
    dangling = cache.pointer_key("EMAIL", "dangling@example.com.br")
    set_raw(ctx, dangling, v1.id)
    served = cache.get_by_key("EMAIL", "dangling@example.com.br")
    gone = ctx.client.run(lambda r: r.exists(dangling), idempotent=True) == 0
    expect(served is None and gone, f"a dangling pointer served {served!r}, deleted: {gone}")
    return "old pointer deleted on key change; a moved key kept its new owner; a dangling pointer was dropped"


@check("entry", "corrupt_value_is_a_miss")
def corrupt_value_is_a_miss(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    cache = entry_cache(ctx)
    seen = []
    for garbage in ("{not json", '{"foo": 1}', "[1, 2]", '"a string"', "\xff\xfe", b"\xff\xfe{", b"{\x80}"):
        entry = sample_entry(new_id())
        key = cache.id_key(entry.id)
        set_raw(ctx, key, garbage)
        got = cache.get_by_id(entry.id)
        left = exists(ctx, key)
        expect(got is None and not left, f"corrupt value {garbage!r}: returned {got!r}, key left: {left}")
        loaded = cache.get_or_load(entry.id, lambda _id, e=entry: e)
        expect(loaded.entry == entry and cache.get_by_id(entry.id) == entry, "no refill after a corrupt value")
        seen.append(garbage[:8])
    # Another entry's JSON under this id (a foreign writer) is no hit either, nor another entry's
    # value in this layout (E1), nor this entry's own JSON document (the previous layout).
    a, b = sample_entry(new_id()), sample_entry(new_id())
    for value, what in ((b.to_json(), "another entry's JSON"), (b.to_value(), "another entry's value")):
        set_raw(ctx, cache.id_key(a.id), value)
        expect(cache.get_by_id(a.id) is None, f"{what} was served under this id")
    set_raw(ctx, cache.id_key(a.id), a.to_json())
    got, left = cache.get_by_id(a.id), exists(ctx, cache.id_key(a.id))
    expect(got is None and not left, f"a value of the previous layout: returned {got!r}, key left: {left}")
    # Corrupt data behind a valid pointer, read by key; a write over corrupt data works.
    c = sample_entry(new_id())
    for garbage in ("garbage", b"\xff\xfe{"):
        cache.write(c)
        set_raw(ctx, cache.id_key(c.id), garbage)
        expect(cache.get_by_key(c.key_type, c.key_value) is None, f"corrupt data {garbage!r} served by key")
        pointer = cache.pointer_key(c.key_type, c.key_value)
        left = [k for k in (cache.id_key(c.id), pointer) if exists(ctx, k)]
        expect(not left, f"corrupt data {garbage!r} read by key: {left} left behind")
    set_raw(ctx, cache.id_key(c.id), "garbage")
    expect(cache.write(sample_entry(c.id, 2, c.key_value)).outcome == "stored", "a write over corrupt data failed")
    # A pointer that is not UTF-8 (nor any id): a miss, deleted.
    d = sample_entry(new_id())
    pointer = cache.pointer_key(d.key_type, d.key_value)
    set_raw(ctx, pointer, b"\xff\xfe{")
    got = cache.get_by_key(d.key_type, d.key_value)
    expect(
        got is None and not exists(ctx, pointer), f"a non-UTF-8 pointer read as {got!r}, kept: {exists(ctx, pointer)}"
    )
    connection_still_works(ctx)
    kinds = wrong_types_are_misses(ctx, cache)
    return (
        f"{len(seen) + 4} corrupt or foreign values (3 not UTF-8) read as misses, deleted and refilled without "
        f"an error; {kinds} keys of a wrong type deleted atomically"
    )


def wrong_types_are_misses(ctx: CheckContext, cache: EntryCache) -> int:
    """A key of the wrong Redis type at the id, pointer, marker or lease key is deleted and
    handled as a miss by every operation, never a WRONGTYPE error and never a half-done write
    (the marker planted on its own tier, ``cache.markers``)."""
    planted = 0
    for kind in ("hash", "list", "set", "zset"):
        e = sample_entry(new_id())
        id_key, pointer, marker = cache.id_key(e.id), cache.pointer_key(e.key_type, e.key_value), cache.marker_key(e.id)
        lease = f"{cache.prefix}{LEASE_ID_KEY}{e.id}"
        wrong = {id_key: kind, pointer: kind, lease: kind, marker: "string" if kind == "hash" else kind}
        tier = {id_key: ctx.client, pointer: ctx.client, lease: ctx.client, marker: cache.markers}
        # Reads by id and by key: a miss, the key deleted.
        for key in (id_key, pointer):
            plant_type(ctx, key, kind)
            got = cache.get_by_id(e.id) if key == id_key else cache.get_by_key(e.key_type, e.key_value)
            expect(got is None and not exists(ctx, key), f"a {kind} at {key} read as {got!r}")
            planted += 1
        # A pointer to an id whose key is of the wrong type: a miss, both dropped.
        cache.write(e)
        plant_type(ctx, id_key, kind)
        got = cache.get_by_key(e.key_type, e.key_value)
        expect(got is None and not exists(ctx, id_key) and not exists(ctx, pointer), f"a {kind} behind a pointer")
        planted += 1
        # Writes and invalidations over a wrong type at each key they touch complete.
        for key in (id_key, pointer, marker):
            # Each round writes the next version: the invalidation of the round before refuses
            # write-throughs of the version it knew (its marker's floor) and older.
            e = dataclasses.replace(e, version=e.version + 1)
            plant_type(ctx, key, wrong[key], tier[key])
            outcome = cache.write(e).outcome
            expect(outcome == "stored", f"a write over a {wrong[key]} at {key} was {outcome}")
            got = cache.get_by_key(e.key_type, e.key_value)
            expect(got == e, f"after a write over a {wrong[key]} at {key} a read by key returned {got!r}")
            plant_type(ctx, key, wrong[key], tier[key])
            cache.invalidate(e.id)
            # (Over a foreign id key the pointer is unknown to invalidate: it dangles, is never
            # served, and the read drops it.)
            got = cache.get_by_key(e.key_type, e.key_value)
            left = [k for k in (id_key, pointer) if exists(ctx, k) and not is_tombstone(ctx, k)]
            expect(got is None and not left, f"invalidate over a {wrong[key]} at {key}: read {got!r}, left {left}")
            planted += 2
        # Fills over a wrong type at the lease or the marker.
        for key in (lease, marker):
            plant_type(ctx, key, wrong[key], tier[key])
            result = cache.get_or_load(e.id, lambda _id, e=e: e)
            expect(result.outcome == "stored", f"a fill over a {wrong[key]} at {key} was {result.outcome}")
            expect(cache.get_by_id(e.id) == e, f"a fill over a {wrong[key]} at {key} was not cached")
            cache.invalidate(e.id)
            planted += 1
        # Negative fills by id and by key over a wrong-typed target and lease.
        missing = new_id()
        plant_type(ctx, cache.id_key(missing), kind)
        result = cache.get_or_load(missing, lambda _id: None)
        expect(result.outcome == "stored", f"a negative fill over a {kind} was {result.outcome}")
        phone = f"+5561{missing[:8]}"
        plant_type(ctx, f"{cache.prefix}{LEASE_KEY_KEY}PHONE:{phone}", kind)
        plant_type(ctx, cache.pointer_key("PHONE", phone), kind)
        result = cache.get_or_load_by_key("PHONE", phone, lambda _t, _v: None)
        expect(result.outcome == "stored", f"a negative fill by key over a {kind} was {result.outcome}")
        raw = ctx.client.run(lambda r, p=phone: r.get(cache.pointer_key("PHONE", p)), idempotent=True)
        expect(raw == NONE, f"the negative entry by key holds {raw!r}")
        planted += 3
    connection_still_works(ctx)
    return planted


@check("entry", "every_key_has_ttl")
def every_key_has_ttl(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    cache = entry_cache(ctx)
    lowest: dict[str, int] = {}
    highest: dict[str, int] = {}
    negative: set[str] = set()

    def record() -> None:
        for key, on in keys_on_both_tiers(ctx).items():
            ttl = pttl(ctx, key, on)
            lowest[key] = min(lowest.get(key, 1 << 62), ttl)
            highest[key] = max(highest.get(key, -2), ttl)
            value = on.run(lambda r, k=key: r.get(k) if r.type(k) == "string" else None, idempotent=True)
            if value == NONE:
                negative.add(key)

    a = sample_entry(new_id())
    cache.write(a)
    cache.write(sample_entry(a.id, 2, "renamed@example.com.br"))
    b = sample_entry(new_id())

    def loader(_id: str) -> Entry:
        record()  # while the lease is held
        return b

    cache.get_or_load(b.id, loader)
    record()  # b cached (a fill creates no marker; a's marker is there)
    # The version marker outlives the entry it guards (else a late, older write could land after
    # it): compared as absolute expiry times (PEXPIRETIME, each on its own tier; the marker's is
    # later by the reservation window, 2 s, more than the clocks of two nodes differ), a cached.
    expiry = {
        a.id: (
            ctx.client.run(lambda r: r.pexpiretime(cache.id_key(a.id)), idempotent=True),
            cache.markers.run(lambda r: r.pexpiretime(cache.marker_key(a.id)), idempotent=True),
        )
    }
    cache.get_or_load(new_id(), lambda _id: None)
    cache.get_or_load_by_key("PHONE", "+5561999990000", lambda _t, _v: None)
    cache.invalidate(b.id)
    record()
    immortal = sorted(k for k, ttl in lowest.items() if ttl == -1)
    expect(not immortal, f"keys without a TTL: {immortal}")
    kinds = sorted({k[len(ctx.prefix) :].rsplit(":", 1)[0].split(":")[2] for k in lowest})
    expected = {"id", "key", "marker", "lease", "epoch"}
    expect(expected <= set(kinds), f"expected entry, pointer, marker, lease and epoch keys, saw {kinds}")
    # Upper bounds: entries and pointers 5 min, negative entries 30 s, markers and leases their own.
    expect(cache.ttl_ms == DEFAULT_TTL_MS == 300_000, f"entry TTL {cache.ttl_ms} ms, the contract says 5 min")
    expect(negative, "no negative entry was seen")
    bounds = {"id": cache.ttl_ms, "key": cache.ttl_ms, "marker": cache.marker_ttl_ms, "lease": cache.lease_ms}
    bounds["epoch"] = max(cache.marker_ttl_ms, cache.lease_ms)  # outlives every lease taken before it
    for key, ttl in highest.items():
        bound = MAX_NEGATIVE_TTL_MS if key in negative else bounds[key[len(ctx.prefix) :].split(":")[2]]
        expect(ttl <= bound, f"{key} has PTTL {ttl} ms, above its bound {bound} ms")
    expect(
        cache.marker_ttl_ms >= cache.ttl_ms + cache.reservation_ms,
        f"marker TTL {cache.marker_ttl_ms} ms < entry TTL {cache.ttl_ms} ms + reservation {cache.reservation_ms} ms",
    )
    expect(cache.tombstone_ms <= cache.ttl_ms, f"tombstone TTL {cache.tombstone_ms} ms above the entry TTL")
    for entry_id, (entry_at, marker_at) in expiry.items():
        expect(marker_at >= entry_at > 0, f"entry {entry_id} expires at {entry_at}, its marker at {marker_at}")
    longest = max(highest.values())
    return (
        f"{len(lowest)} keys ({', '.join(kinds)}) all with a TTL within bounds; marker >= entry; longest {longest} ms"
    )
