"""The entry cache against a real master behind Sentinel: every registered check, plus direct
tests of the concurrency and corruption properties with their own assertions."""

from __future__ import annotations

import dataclasses
import logging
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

import smoke.checks.entry  # registers the entry checks
import smoke.strategies.entries
from smoke.checks import REGISTRY, CheckContext, run_check
from smoke.checks.entry import entry_cache, set_raw
from smoke.drills.checkers import Lost, Survivors
from smoke.drills.drill import Drill
from smoke.drills.faults import KillMaster, Together
from smoke.drills.workload import ConfirmedInvalidations
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.claims import ClaimCache, sample_claim
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import Entry, EntryCache, FillResult, WriteResult, sample_entry
from smoke.strategies.replication import Acknowledgement
from smoke.strategies.tiers import StateTierFull
from tests.support import count_round_trips

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]


ENTRY_CHECKS = [c for c in REGISTRY if c.strategy == "entry"]


def test_every_property_has_a_check() -> None:
    names = {c.name for c in ENTRY_CHECKS}
    assert {
        "read_by_id_and_key_one_round_trip",
        "stored_once",
        "invalidation_atomic",
        "stale_refill_rejected",
        "single_loader_under_concurrency",
        "negative_cache_short_lived",
        "changed_key_value_leaves_no_stale_key",
        "corrupt_value_is_a_miss",
        "every_key_has_ttl",
    } <= names


def test_twenty_threads_cold_read_by_key_run_the_loader_once(ctx: CheckContext) -> None:
    cache = entry_cache(ctx)
    entry = sample_entry(str(uuid.uuid4()), key_type="PHONE", key_value="+5511987654321")
    calls: list[str] = []
    barrier = threading.Barrier(20)
    results: list[Entry | None] = []

    def loader(key_type: str, key_value: str) -> Entry:
        calls.append(key_value)
        time.sleep(0.2)
        return entry

    def reader() -> None:
        barrier.wait(5)
        results.append(cache.get_or_load_by_key(entry.key_type, entry.key_value, loader).entry)

    threads = [threading.Thread(target=reader) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert results == [entry] * 20
    assert cache.get_by_id(entry.id) == entry


def test_a_failed_loader_releases_the_lease(ctx: CheckContext) -> None:
    cache = entry_cache(ctx, lease_ms=5_000)
    entry = sample_entry(str(uuid.uuid4()))

    def broken(_id: str) -> Entry:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        cache.get_or_load(entry.id, broken)
    started = time.monotonic()
    result = cache.get_or_load(entry.id, lambda _id: entry)
    assert result.outcome == "stored" and result.entry == entry
    assert time.monotonic() - started < 1.0, "the next reader waited for the dead lease"


def test_corrupt_values_do_not_crash_and_are_logged_once(
    ctx: CheckContext, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smoke.strategies.entries._log_corrupt, "warned", False)
    cache = entry_cache(ctx)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for entry_id in ids:
        set_raw(ctx, cache.id_key(entry_id), "\x00garbage{")
    with caplog.at_level(logging.DEBUG, logger="smoke.strategies.entries"):
        assert [cache.get_by_id(i) for i in ids] == [None, None, None]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "treated as a miss" in warnings[0].getMessage()
    assert ctx.client.run(lambda r: r.exists(*[cache.id_key(i) for i in ids]), idempotent=True) == 0


def test_a_fill_after_its_lease_expired_is_not_stored(ctx: CheckContext) -> None:
    cache = entry_cache(ctx, lease_ms=100)
    entry = sample_entry(str(uuid.uuid4()))

    def slow(_id: str) -> Entry:
        time.sleep(0.2)
        return entry

    result = cache.get_or_load(entry.id, slow)
    assert result.outcome == "lease-lost"
    assert result.entry == entry
    assert cache.get_by_id(entry.id) is None


def test_defaults_are_the_contract(client: SentinelClient) -> None:
    cache = EntryCache(client)
    assert cache.ttl_ms == 300_000
    assert cache.negative_ttl_ms <= 30_000
    assert cache.id_key("e1") == "dict:entry:id:e1"
    assert cache.pointer_key("CPF", "12345678909") == "dict:entry:key:CPF:12345678909"


def test_checks_pass_when_they_share_one_run_prefix(ctx: CheckContext) -> None:
    """The runner gives every check the same prefix: no check may trip over another's keys;
    together they record a latency for every operation of the report."""
    failed = [r for r in (run_check(item, ctx) for item in ENTRY_CHECKS) if not r.passed]
    assert not failed, [f"{r.name}: {r.detail}" for r in failed]
    assert {"entry.get_by_id", "entry.get_by_key", "entry.write", "entry.invalidate"} <= set(ctx.latencies_ms)


def test_entries_and_claims_work_again_after_a_failover(fresh_cluster: LoopbackCluster) -> None:
    """A killed master is replaced; the scripts, which the new master has never seen (the script
    cache is not replicated), are reloaded on NOSCRIPT and every operation works again."""
    cluster = fresh_cluster
    config = cluster.client_config(min_idle=1)
    with SentinelClient(config) as shared, SentinelClient(cluster.client_config("state", min_idle=1)) as state:
        entries = EntryCache(shared, "smoke:failover:", markers=state)
        claims = ClaimCache(shared, "smoke:failover:")
        entry = sample_entry(str(uuid.uuid4()))
        assert entries.write(entry).outcome == "stored"
        claims.create(sample_claim(str(uuid.uuid4()), entry.id))
        (old,) = cluster.masters()
        cluster.kill_node(old, signal.SIGKILL)
        deadline = time.monotonic() + 45
        newer = sample_entry(entry.id, 2, entry.key_value)
        while True:
            try:
                outcome = entries.write(newer).outcome
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "no write succeeded within 45 s of the master's death"
                time.sleep(0.2)
        assert shared.sentinel_master_address() != (old.host, old.port)
        assert outcome == "stored"
        assert entries.get_by_key(entry.key_type, entry.key_value) == newer
        fresh = sample_entry(str(uuid.uuid4()))
        assert entries.get_or_load(fresh.id, lambda _id: fresh).outcome == "stored"
        assert entries.invalidate(fresh.id).removed == 2
        claim = sample_claim(str(uuid.uuid4()), entry.id)
        claims.create(claim)
        assert claim in claims.list_for_entry(entry.id)
        assert claims.status(claim.id) == claim.status


def test_an_invalidation_does_not_block_later_refills(ctx: CheckContext) -> None:
    """Invalidating an unchanged entry without a committed version rejects only fills that began
    before it: the next reader's refill is stored and the two after it are hits."""
    cache = entry_cache(ctx)
    entry = sample_entry(str(uuid.uuid4()), 4)
    assert cache.write(entry).outcome == "stored"
    assert cache.invalidate(entry.id).removed == 2
    calls: list[str] = []

    def loader(entry_id: str) -> Entry:
        calls.append(entry_id)
        return entry

    results = [cache.get_or_load(entry.id, loader) for _ in range(3)]
    assert len(calls) == 1
    assert [r.outcome for r in results] == ["stored", "hit", "hit"]
    assert cache.get_by_id(entry.id) == entry
    assert cache.get_by_key(entry.key_type, entry.key_value) == entry
    # A late write-through of the invalidated version stays rejected; a newer one is stored.
    cache.invalidate(entry.id)
    assert cache.write(entry).outcome == "stale"
    assert cache.write(sample_entry(entry.id, 5, entry.key_value)).outcome == "stored"


def test_a_fill_that_began_before_an_invalidation_is_rejected_even_for_the_same_version(ctx: CheckContext) -> None:
    cache = entry_cache(ctx)
    entry = sample_entry(str(uuid.uuid4()))

    def load_then_invalidated(_id: str) -> Entry:
        cache.invalidate(entry.id)
        return entry

    assert cache.get_or_load(entry.id, load_then_invalidated).outcome == "invalidated"
    assert cache.get_by_id(entry.id) is None
    assert cache.get_or_load(entry.id, lambda _id: entry).outcome == "stored"


def test_the_marker_outlives_the_entry(client: SentinelClient) -> None:
    cache = EntryCache(client)
    assert cache.marker_ttl_ms >= cache.ttl_ms + cache.reservation_ms and cache.ttl_ms == 300_000
    assert EntryCache(client, ttl_ms=1_000).marker_ttl_ms >= 1_000 + cache.reservation_ms
    with pytest.raises(ValueError, match="outlive"):
        EntryCache(client, marker_ttl_ms=60_000)


def _echo_works(client: SentinelClient) -> None:
    for i in range(5):
        assert client.run(lambda r, i=i: r.echo(f"x{i}"), idempotent=True) == f"x{i}"


def test_the_cached_value_layout_round_trips_and_refuses_what_is_not_an_entry() -> None:
    # Layout E1 (module docstring, "Data shape"): every realistic entry and the edge cases come back
    # equal; what is not an entry of this id is a ValueError saying why (the read path: a miss).
    from smoke.bench.dataset import entries

    odd = dataclasses.replace(
        sample_entry("e-1", 2**63 - 1, key_value="josé:ü@exemplo.com.br"),
        owner=smoke.strategies.entries.Owner('A\udc80 "Ltda"', "12345678000199", "LEGAL_PERSON"),
        created_at="0999-01-01T00:00:00Z",  # not the usual shape: kept as text
        updated_at="2025-05-21T07:38:09Z",  # no milliseconds
    )
    for entry in [*entries(3, 0, 500), odd]:
        value = entry.to_value().encode()
        assert value.startswith(b"E1:%d:%s:" % (entry.version, entry.key_type.encode()))
        assert Entry.from_value(value, entry.id) == entry
    sample = sample_entry("e-2")
    good, size = sample.to_value().encode(), b":%d:" % len(sample.key_value)
    refused = {
        sample.to_json().encode(): "not an entry value of layout E1",  # the previous layout
        good: "holds entry 'e-2'",  # read under another id
        good.replace(b"E1:1:", b"E1:x:"): "decimal digits",
        good.replace(size, b":999:"): "key value of 999 bytes",
        good[:-1]: "malformed entry value",
        good.replace(b"CACC", b"\xff\xfe"): "malformed entry value",
        good.replace(b"EMAIL", b"EMAILS"): "key_type 'EMAILS'",
        b"E1:%d:EMAIL:1:a" % 2**63 + good.split(b".br", 1)[1]: "2**63 - 1",
    }
    for raw, why in refused.items():
        with pytest.raises(ValueError, match=re.escape(why)):
            Entry.from_value(raw, "e-1" if why.startswith("holds") else "e-2")


def test_a_value_of_the_previous_layout_is_a_miss_and_still_keeps_the_version_order(
    ctx: CheckContext, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # During a rollout the cache holds the previous release's values (the JSON document): never
    # served (deleted, logged once), but a store does not go below their version and drops
    # their pointer when the key value changed.
    monkeypatch.setattr(smoke.strategies.entries._log_corrupt, "warned", False)
    cache = entry_cache(ctx)
    old = sample_entry(str(uuid.uuid4()), 7)
    pointer = cache.pointer_key(old.key_type, old.key_value)
    with caplog.at_level(logging.DEBUG, logger="smoke.strategies.entries"):
        for read in (lambda: cache.get_by_id(old.id), lambda: cache.get_by_key(old.key_type, old.key_value)):
            set_raw(ctx, cache.id_key(old.id), old.to_json())
            set_raw(ctx, pointer, old.id)
            assert read() is None
            assert ctx.client.run(lambda r: r.exists(cache.id_key(old.id)), idempotent=True) == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "treated as a miss" in warnings[0].getMessage()
    set_raw(ctx, cache.id_key(old.id), old.to_json())
    set_raw(ctx, pointer, old.id)
    assert cache.write(sample_entry(old.id, 5, "moved@example.com.br")).outcome == "stale"  # no marker: the copy's 7
    newer = sample_entry(old.id, 8, "moved@example.com.br")
    assert cache.write(newer).outcome == "stored"
    assert ctx.client.run(lambda r: r.exists(pointer), idempotent=True) == 0
    assert cache.get_by_key(newer.key_type, newer.key_value) == newer


def test_non_utf8_values_are_misses_and_the_connection_survives(ctx: CheckContext) -> None:
    client = ctx.client
    cache = entry_cache(ctx)
    garbage = b"\xff\xfe{"
    # At an id key.
    a = sample_entry(str(uuid.uuid4()))
    set_raw(ctx, cache.id_key(a.id), garbage)
    assert cache.get_by_id(a.id) is None
    assert client.run(lambda r: r.exists(cache.id_key(a.id)), idempotent=True) == 0
    _echo_works(client)
    # At a pointer key.
    b = sample_entry(str(uuid.uuid4()))
    pointer = cache.pointer_key(b.key_type, b.key_value)
    set_raw(ctx, pointer, garbage)
    assert cache.get_by_key(b.key_type, b.key_value) is None
    assert client.run(lambda r: r.exists(pointer), idempotent=True) == 0
    _echo_works(client)
    # Behind a valid pointer: both dropped; then a fill by key works again.
    cache.write(b)
    set_raw(ctx, cache.id_key(b.id), garbage)
    assert cache.get_by_key(b.key_type, b.key_value) is None
    assert client.run(lambda r: r.exists(pointer, cache.id_key(b.id)), idempotent=True) == 0
    _echo_works(client)
    assert cache.get_or_load_by_key(b.key_type, b.key_value, lambda _t, _v: b).entry == b
    assert cache.get_by_key(b.key_type, b.key_value) == b
    # Inside a fill and an invalidation (the scripts decode the cached copy server-side).
    set_raw(ctx, cache.id_key(b.id), garbage)
    assert cache.write(sample_entry(b.id, 2, b.key_value)).outcome == "stored"
    set_raw(ctx, cache.id_key(b.id), garbage)
    assert cache.invalidate(b.id).removed == 1
    _echo_works(client)


@pytest.mark.parametrize(
    ("where", "plant"),
    [
        ("id", lambda r, k: r.hset(k, mapping={"id": "x"})),
        ("pointer", lambda r, k: r.rpush(k, "a")),
        ("marker", lambda r, k: r.set(k, "7")),
        ("lease", lambda r, k: r.sadd(k, "x")),
    ],
)
def test_a_key_of_the_wrong_type_is_deleted_and_logged_never_wrongtype(
    ctx: CheckContext,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    plant: object,
) -> None:
    monkeypatch.setattr(smoke.strategies.entries._log_corrupt, "warned", False)
    cache = entry_cache(ctx)
    entry = sample_entry(str(uuid.uuid4()))
    key = {
        "id": cache.id_key(entry.id),
        "pointer": cache.pointer_key(entry.key_type, entry.key_value),
        "marker": cache.marker_key(entry.id),
        "lease": f"{ctx.prefix}{smoke.strategies.entries.LEASE_ID_KEY}{entry.id}",
    }[where]

    tier = cache.markers if where == "marker" else ctx.client  # each key on the tier it lives on

    def replant() -> None:
        tier.run(lambda r: (r.delete(key), plant(r, key)), idempotent=True)  # type: ignore[operator]

    with caplog.at_level(logging.DEBUG, logger="smoke.strategies.entries"):
        replant()
        assert cache.get_by_id(entry.id) is None
        assert cache.get_by_key(entry.key_type, entry.key_value) is None
        replant()
        assert cache.write(entry).outcome == "stored"
        assert cache.get_by_key(entry.key_type, entry.key_value) == entry
        replant()
        cache.invalidate(entry.id)
        assert cache.get_by_id(entry.id) is None
        replant()
        assert cache.get_or_load(entry.id, lambda _id: entry).outcome == "stored"
        assert cache.get_by_id(entry.id) == entry
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "treated as a miss" in warnings[0].getMessage()
    assert any(key in r.getMessage() and "a Redis" in r.getMessage() for r in caplog.records)
    _echo_works(ctx.client)


# --- issue 15: a by-key not-found and invalidations, versions above 2^53, ids that cannot be encoded


def test_a_not_found_loaded_by_key_before_an_invalidation_is_not_cached(ctx: CheckContext) -> None:
    """e1 is cached under old@; a reader of new@ loads "not found"; meanwhile e1 moves to new@ at
    v2 and the writer calls invalidate("e1", committed_version=2). The not-found must not be
    cached: the next reader runs its loader and finds e1 (else new@ answers "not found" for 15 s)."""
    cache = entry_cache(ctx)
    old = sample_entry(str(uuid.uuid4()), 1, "old@example.com.br")
    moved = sample_entry(old.id, 2, "new@example.com.br")
    assert cache.write(old).outcome == "stored"

    def not_found_then_moved(_type: str, _value: str) -> Entry | None:
        cache.invalidate(old.id, committed_version=2)  # the writer, after its commit
        return None

    first = cache.get_or_load_by_key(moved.key_type, moved.key_value, not_found_then_moved)
    assert first.entry is None and first.outcome == "invalidated", first
    second = cache.get_or_load_by_key(moved.key_type, moved.key_value, lambda _t, _v: moved)
    assert second.loaded and second.entry == moved and second.outcome == "stored", second
    assert cache.get_by_key(moved.key_type, moved.key_value) == moved


def test_a_not_found_loaded_by_key_after_an_invalidation_is_cached(ctx: CheckContext) -> None:
    """The invalidation drops only the not-found fills that were in flight: one loaded after it is
    cached, and the next reads are served from the cache without a load."""
    cache = entry_cache(ctx)
    other = sample_entry(str(uuid.uuid4()))
    cache.write(other)
    cache.invalidate(other.id)
    calls: list[str] = []

    def absent(_type: str, value: str) -> None:
        calls.append(value)

    results = [cache.get_or_load_by_key("EMAIL", "nobody@example.com.br", absent) for _ in range(3)]
    assert [r.outcome for r in results] == ["stored", "none", "none"] and len(calls) == 1


def test_invalidate_naming_the_new_key_drops_a_cached_not_found(ctx: CheckContext) -> None:
    """A not-found cached under new@ *before* e1 moved there is dropped by an invalidation that
    names the entry's new key (without it, it lives out its negative TTL: documented)."""
    cache = entry_cache(ctx)
    old = sample_entry(str(uuid.uuid4()), 1, "old@example.com.br")
    moved = sample_entry(old.id, 2, "new@example.com.br")
    cache.write(old)
    assert cache.get_or_load_by_key(moved.key_type, moved.key_value, lambda _t, _v: None).outcome == "stored"
    assert cache.invalidate(old.id, committed_version=2, new_key=(moved.key_type, moved.key_value)).removed == 3
    again = cache.get_or_load_by_key(moved.key_type, moved.key_value, lambda _t, _v: moved)
    assert again.outcome == "stored" and again.entry == moved


def test_versions_above_2_53_keep_their_order(ctx: CheckContext) -> None:
    """Lua numbers are doubles: 2^53 + 1 and 2^53 are one number there. Versions are compared
    exactly, in the marker, in the cached copy (the marker evicted) and in an invalidation."""
    cache = entry_cache(ctx)
    big = 2**53
    newer = sample_entry(str(uuid.uuid4()), big + 1)
    older = sample_entry(newer.id, big, newer.key_value)
    assert cache.write(newer).outcome == "stored"
    assert cache.write(older).outcome == "stale"
    assert cache.get_by_id(newer.id) == newer
    cache.markers.run(lambda r: r.delete(cache.marker_key(newer.id)), idempotent=True)  # e.g. lost
    assert cache.write(older).outcome == "stale"
    assert cache.get_by_id(newer.id) == newer
    # Nanosecond commit timestamps as versions: 256 apart is still one double at 1.7e18.
    ns = 1_732_000_000_123_456_789
    cache.invalidate(newer.id, committed_version=ns)
    assert cache.write(sample_entry(newer.id, ns - 1, newer.key_value)).outcome == "stale"
    assert cache.get_or_load(newer.id, lambda i: sample_entry(i, ns - 1, newer.key_value)).outcome == "stale"
    assert cache.write(sample_entry(newer.id, ns, newer.key_value)).outcome == "stored"
    cache.invalidate(newer.id)  # no committed version: the cached ns and older are refused
    assert cache.write(sample_entry(newer.id, ns, newer.key_value)).outcome == "stale"
    assert cache.write(sample_entry(newer.id, ns + 1, newer.key_value)).outcome == "stored"
    top = sample_entry(newer.id, 2**63 - 1, newer.key_value)
    assert cache.write(top).outcome == "stored" and cache.get_by_id(newer.id) == top
    assert cache.write(sample_entry(newer.id, 2**63 - 2, newer.key_value)).outcome == "stale"


@pytest.mark.parametrize("version", [-1, 2**63, 1.5, True, "7"])
def test_versions_that_cannot_be_compared_are_refused_naming_the_argument(ctx: CheckContext, version: object) -> None:
    cache = entry_cache(ctx)
    entry = dataclasses.replace(sample_entry(str(uuid.uuid4())), version=version)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"entry version .*\[0, 2\*\*63 - 1\]"):
        cache.write(entry)
    with pytest.raises(ValueError, match=r"committed_version .*\[0, 2\*\*63 - 1\]"):
        cache.invalidate(entry.id, committed_version=version)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"entry version"):
        cache.get_or_load(entry.id, lambda _id: entry)
    for tier in (ctx.client, cache.markers):
        keys = tier.run(lambda r: list(r.scan_iter(match=f"{ctx.prefix}*")), idempotent=True)
        assert keys == [], keys
    # The failed fill gave its lease back: the next reader loads at once.
    good = sample_entry(entry.id)
    assert cache.get_or_load(entry.id, lambda _id: good).outcome == "stored"


def test_ids_and_keys_that_cannot_be_encoded_are_refused_before_anything_is_sent(ctx: CheckContext) -> None:
    """A lone surrogate (``json.loads('"\\udc80"')`` makes one) used to be sent as ``?``: the
    entry of ``e-?`` answered for ``e-\\udc80``. Now it is a ValueError naming the argument."""
    cache = entry_cache(ctx)
    lookalike = sample_entry("e-?", key_value="a?@example.com.br")
    cache.write(lookalike)
    lone, loads = "e-\udc80", []

    def loader(*args: str) -> Entry:
        loads.append(args[0])
        return lookalike

    calls = {
        "entry id": [
            lambda: cache.get_by_id(lone),
            lambda: cache.get_or_load(lone, loader),
            lambda: cache.write(sample_entry(lone)),
            lambda: cache.invalidate(lone),
        ],
        "key value": [
            lambda: cache.get_by_key("EMAIL", "a\udc80@example.com.br"),
            lambda: cache.get_or_load_by_key("EMAIL", "a\udc80@example.com.br", loader),
            lambda: cache.write(sample_entry("e-ok", key_value="a\udc80@example.com.br")),
        ],
    }
    for what, group in calls.items():
        for call in group:
            with pytest.raises(ValueError, match=f"{what} .* cannot be encoded as UTF-8"):
                call()
    assert loads == []
    assert cache.get_by_id(lookalike.id) == lookalike, "the look-alike entry was touched"
    assert cache.get_by_key(lookalike.key_type, lookalike.key_value) == lookalike


def test_key_types_outside_the_dict_types_are_refused(ctx: CheckContext) -> None:
    """``dict:entry:key:<type>:<value>``: a type with a ``:`` would share the key of another
    (type, value) pair (``EMAIL:a`` + ``b`` = ``EMAIL`` + ``a:b``); only the five DICT types pass."""
    cache = entry_cache(ctx)
    cache.write(sample_entry(str(uuid.uuid4()), key_value="a:b"))
    with pytest.raises(ValueError, match="key type 'EMAIL:a'"):
        cache.get_by_key("EMAIL:a", "b")
    with pytest.raises(ValueError, match="key type 'email'"):
        cache.get_or_load_by_key("email", "x@example.com.br", lambda _t, _v: None)


def test_a_foreign_value_at_the_epoch_key_never_lets_a_not_found_through_nor_blocks_fills(ctx: CheckContext) -> None:
    """The epoch is judged like every other key: a value of another type or that is not a time is
    deleted (logged as foreign), the not-found in flight is dropped (it cannot be judged), and
    the next one is stored; an invalidation over a foreign epoch replaces it."""
    cache = entry_cache(ctx)
    epoch, state = cache.negative_epoch_key(), cache.markers
    for plant in (lambda r: r.hset(epoch, "x", "y"), lambda r: r.set(epoch, "not a counter")):
        state.run(lambda r, p=plant: (r.delete(epoch), p(r)), idempotent=True)  # type: ignore[misc]
        value = f"x{uuid.uuid4().hex[:8]}@example.com.br"
        assert cache.get_or_load_by_key("EMAIL", value, lambda _t, _v: None).outcome == "invalidated"
        assert state.run(lambda r: r.exists(epoch), idempotent=True) == 0
        assert cache.get_or_load_by_key("EMAIL", value, lambda _t, _v: None).outcome == "stored"
    state.run(lambda r: r.hset(epoch, "x", "y"), idempotent=True)
    cache.invalidate(str(uuid.uuid4()))
    kind, ttl = state.run(lambda r: (r.type(epoch), r.pttl(epoch)), idempotent=True)
    assert kind == "string" and 0 < ttl <= cache.marker_ttl_ms, (kind, ttl)


# --- issue 13: the version markers on the state tier, where nothing is evicted -------------------
#
# Eviction is simulated the way LRU does it on the cache tier: every key of the test's prefix on
# the cache tier's master is deleted (through the admin connection), between the steps of a race.
# Each race runs with the markers where they live now (the state tier: it must hold) and, as the
# reproduction, with the markers on the cache tier itself (``markers=None`` on one instance, the
# layout before issue 13): there the same eviction takes the markers too and the race is lost, so
# those runs are strict xfails, proving each test can tell the two layouts apart.

MARKERS_ON = [
    pytest.param("state", id="markers-on-state"),
    pytest.param(
        "cache", id="markers-on-cache", marks=pytest.mark.xfail(strict=True, reason="the layout before issue 13")
    ),
]


def _cache_for(ctx: CheckContext, placement: str, **options: object) -> EntryCache:
    if placement == "cache":
        return EntryCache(ctx.client, ctx.prefix, markers=None, **options)  # type: ignore[arg-type]
    return entry_cache(ctx, **options)


def _evict_cache_tier(cluster: LoopbackCluster, prefix: str, keep: tuple[str, ...] = ()) -> int:
    """What LRU may do to the cache tier between two steps: every key under ``prefix`` on the
    cache tier's master deleted, but for ``keep``. Returns the number of keys deleted."""
    with cluster.client(cluster.masters("cache")[0]) as node:
        doomed = [k for k in node.scan_iter(match=f"{prefix}*", count=1000) if k not in keep]
        return int(node.delete(*doomed)) if doomed else 0


@pytest.mark.parametrize("placement", MARKERS_ON)
def test_a_late_write_after_an_invalidation_and_an_eviction_is_refused(
    ctx: CheckContext, cluster: LoopbackCluster, placement: str
) -> None:
    """(a) v5 cached; the writer commits v6 and invalidates with committed_version=6; the cache
    tier loses everything; a late write-through of v4 must not be stored: the next read misses
    and loads v6 fresh."""
    cache = _cache_for(ctx, placement)
    v5 = sample_entry(str(uuid.uuid4()), 5)
    assert cache.write(v5).outcome == "stored"
    cache.invalidate(v5.id, committed_version=6)
    assert _evict_cache_tier(cluster, ctx.prefix) >= 1  # the tombstone (and, on one instance, the marker)
    late = cache.write(sample_entry(v5.id, 4, v5.key_value)).outcome
    assert cache.get_by_id(v5.id) is None, f"a late v4 after invalidate(committed 6) was {late} and served"
    assert late == "stale"
    v6 = sample_entry(v5.id, 6, v5.key_value)
    assert cache.get_or_load(v5.id, lambda _id: v6) == FillResult(v6, True, "stored")


@pytest.mark.parametrize("placement", MARKERS_ON)
def test_a_late_older_write_after_an_eviction_is_refused(
    ctx: CheckContext, cluster: LoopbackCluster, placement: str
) -> None:
    """(b) v5 written; the cache tier loses the entry (and whatever else it holds); a late write
    of v3 is refused (stale), nothing is cached, and v5 written again is stored."""
    cache = _cache_for(ctx, placement)
    v5 = sample_entry(str(uuid.uuid4()), 5)
    assert cache.write(v5).outcome == "stored"
    assert _evict_cache_tier(cluster, ctx.prefix) >= 2
    late = cache.write(sample_entry(v5.id, 3, v5.key_value)).outcome
    assert late == "stale" and cache.get_by_id(v5.id) is None, f"a late v3 after v5 was {late}"
    assert cache.write(v5).outcome == "stored" and cache.get_by_id(v5.id) == v5


@pytest.mark.parametrize("placement", MARKERS_ON)
@pytest.mark.parametrize("mode", ["id", "key"])
def test_a_fill_that_loaded_before_an_invalidation_is_not_stored_after_an_eviction(
    ctx: CheckContext, cluster: LoopbackCluster, placement: str, mode: str
) -> None:
    """(c) a reader takes the lease and loads v1; meanwhile the row changes and the writer
    invalidates (without a committed version), and the cache tier loses everything but the
    reader's lease (the newest key there). The fill must not be stored."""
    cache = _cache_for(ctx, placement)
    entry = sample_entry(str(uuid.uuid4()), 1)
    lease_prefix = smoke.strategies.entries.LEASE_ID_KEY if mode == "id" else smoke.strategies.entries.LEASE_KEY_KEY
    lease = ctx.prefix + lease_prefix + (entry.id if mode == "id" else f"{entry.key_type}:{entry.key_value}")

    def load_then_invalidated(*_args: str) -> Entry:
        cache.invalidate(entry.id)
        assert _evict_cache_tier(cluster, ctx.prefix, keep=(lease,)) >= 1
        return entry

    if mode == "id":
        result = cache.get_or_load(entry.id, load_then_invalidated)
    else:
        result = cache.get_or_load_by_key(entry.key_type, entry.key_value, load_then_invalidated)
    assert cache.get_by_id(entry.id) is None, f"a fill that loaded before the invalidation was {result.outcome}"
    assert result.outcome == "invalidated" and result.entry == entry
    # The lease was given back: the next reader loads at once, and its fill is stored.
    assert cache.get_or_load(entry.id, lambda _id: entry).outcome == "stored"


def test_markers_live_on_the_state_tier_with_a_ttl(ctx: CheckContext) -> None:
    """The marker and the epoch are on the state tier, each with a TTL (marker: at most
    marker_ttl_ms, at least the entry's remaining TTL); the cache tier holds no marker, and a
    fill creates none (its entry is guarded by its own version while cached)."""
    cache = entry_cache(ctx)
    assert cache.markers is ctx.state_client is not None
    written = sample_entry(str(uuid.uuid4()), 3)
    assert cache.write(written).outcome == "stored"
    filled = sample_entry(str(uuid.uuid4()), 3)
    assert cache.get_or_load(filled.id, lambda _id: filled).outcome == "stored"
    cache.invalidate(str(uuid.uuid4()), committed_version=1)
    marker, epoch = cache.marker_key(written.id), cache.negative_epoch_key()
    state = ctx.state_client
    kinds = state.run(lambda r: (r.type(marker), r.type(epoch), r.exists(cache.marker_key(filled.id))), idempotent=True)
    assert kinds == ("hash", "string", 0), kinds
    ttls = state.run(lambda r: (r.pttl(marker), r.pttl(epoch)), idempotent=True)
    entry_ttl = ctx.client.run(lambda r: r.pttl(cache.id_key(written.id)), idempotent=True)
    assert entry_ttl < ttls[0] <= cache.marker_ttl_ms and 0 < ttls[1] <= max(cache.marker_ttl_ms, cache.lease_ms)
    fields = state.run(lambda r: [r.hget(marker, f) for f in ("floor", "inv_floor", "inv_seq")], idempotent=True)
    assert fields == ["3", None, None], fields
    on_cache = ctx.client.run(lambda r: r.exists(marker, epoch), idempotent=True)
    assert on_cache == 0, "a marker or the epoch was written to the cache tier"


def test_the_cache_tiers_application_user_cannot_write_a_marker(client: SentinelClient) -> None:
    """The cache tier's ACL does not grant the markers' prefix: a cache pointed at one tier for
    both (no ``markers``) is refused there, not silently given evictable markers."""
    cache = EntryCache(client)  # markers on the cache tier, outside the smoke prefix
    entry = sample_entry(str(uuid.uuid4()))
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.run(lambda r: r.hset(cache.marker_key(entry.id), "floor", "1"), idempotent=True)
    with pytest.raises(redis.exceptions.NoPermissionError):
        cache.write(entry)
    assert cache.get_by_id(entry.id) is None  # reads never touch the markers


def test_the_state_tiers_application_user_writes_markers(client: SentinelClient, state_client: SentinelClient) -> None:
    cache = EntryCache(client, markers=state_client)  # the production key names, no test prefix
    entry = sample_entry(str(uuid.uuid4()))
    try:
        assert cache.write(entry).outcome == "stored" and cache.get_by_id(entry.id) == entry
        assert state_client.run(lambda r: r.hget(cache.marker_key(entry.id), "floor"), idempotent=True) == "1"
    finally:
        cache.invalidate(entry.id)


class _Paused(EntryCache):
    """An entry cache whose step 2 on the cache tier runs ``between()`` first and may be told it
    was sent ``late_s`` seconds after its step 1: a writer or filler paused between the tiers."""

    between: Callable[[], object] = staticmethod(lambda: None)
    late_s: float = 0.0

    def _run_within(self, since: float, *args: Any, **kwargs: Any) -> tuple[list[Any], Acknowledgement | None]:
        self.between()
        return super()._run_within(since - self.late_s, *args, **kwargs)


def test_a_write_paused_between_its_steps_loses_to_the_invalidation_in_between(ctx: CheckContext) -> None:
    """The reservation of v5 is made; the writer of v6 invalidates (committed 6) before v5's
    store reaches the cache: the tombstone refuses it. Without a committed version too (the
    tombstone's write floor covers what the marker knew)."""
    for committed in (6, None):
        paused = _Paused(ctx.client, ctx.prefix, markers=ctx.state)
        entry = sample_entry(str(uuid.uuid4()), 5)
        paused.between = lambda e=entry, c=committed: entry_cache(ctx).invalidate(e.id, committed_version=c)
        assert paused.write(entry).outcome == "stale"
        assert paused.get_by_id(entry.id) is None


def test_a_fill_paused_between_its_check_and_its_store_loses_to_the_invalidation_in_between(
    ctx: CheckContext,
) -> None:
    paused = _Paused(ctx.client, ctx.prefix, markers=ctx.state)
    entry = sample_entry(str(uuid.uuid4()), 2)
    paused.between = lambda: entry_cache(ctx).invalidate(entry.id)
    assert paused.get_or_load(entry.id, lambda _id: entry).outcome == "invalidated"
    assert paused.get_by_id(entry.id) is None
    paused.between = lambda: None
    assert paused.get_or_load(entry.id, lambda _id: entry).outcome == "stored"


def test_a_not_found_never_replaces_a_tombstone_so_a_late_write_after_a_deletion_is_refused(
    ctx: CheckContext,
) -> None:
    """(found by the review) v4 cached; writer A reserves v5; the row is deleted at v6 and
    invalidated (committed 6); a reader caches the not-found; A's store arrives within its
    window. The not-found used to replace the tombstone, so A's v5 was stored and served for
    5 min. The tombstone stays: A is refused and the next read misses."""
    paused = _Paused(ctx.client, ctx.prefix, markers=ctx.state)
    other = entry_cache(ctx)
    v4 = sample_entry(str(uuid.uuid4()), 4)
    assert other.write(v4).outcome == "stored"

    def deleted_and_read() -> None:
        other.invalidate(v4.id, committed_version=6)
        assert other.get_or_load(v4.id, lambda _id: None).outcome == "exists"  # the tombstone stays

    paused.between = deleted_and_read
    assert paused.write(sample_entry(v4.id, 5, v4.key_value)).outcome == "stale"
    assert other.get_by_id(v4.id) is None and other.get_by_key(v4.key_type, v4.key_value) is None


def test_a_fill_is_dropped_when_the_epoch_restarted_below_what_it_observed(
    ctx: CheckContext, cluster: LoopbackCluster
) -> None:
    """(found by the review) The epoch has a TTL: when it runs out while a fill's loader runs and
    an invalidation then starts it again, it must not restart below what the fill observed (the
    fill would pass as if it had loaded after the invalidation). It restarts at the server time,
    and a fill that finds it below its observation is dropped."""
    cache = entry_cache(ctx)
    for _ in range(3):  # an epoch that counted up a little
        cache.invalidate(str(uuid.uuid4()))
    stale = sample_entry(str(uuid.uuid4()), 5)

    def loader(_id: str) -> Entry:
        with cluster.client(cluster.masters("state")[0]) as state:
            state.delete(cache.negative_epoch_key())  # its PX ran out
        cache.invalidate(stale.id)  # the row changed after the loader read it
        return stale

    assert cache.get_or_load(stale.id, loader).outcome == "invalidated"
    assert cache.get_by_id(stale.id) is None

    # Expired with no invalidation after it: the fill in flight is dropped, the next one lifts the
    # epoch back to the marker's inv_seq (dropped too), and from then on fills are stored.
    def expiring_loader(_id: str) -> Entry:
        with cluster.client(cluster.masters("state")[0]) as state:
            state.delete(cache.negative_epoch_key())
        return stale

    other = sample_entry(str(uuid.uuid4()), 1)
    cache.invalidate(other.id)
    assert cache.get_or_load(other.id, expiring_loader).outcome == "invalidated"
    assert cache.get_or_load(other.id, lambda _id: other).outcome == "invalidated"
    assert cache.get_or_load(other.id, lambda _id: other).outcome == "stored"


def test_a_step_two_later_than_the_reservation_window_is_not_sent(ctx: CheckContext) -> None:
    """A writer (or filler) paused for longer than ``reservation_ms`` between the tiers stores
    nothing (``expired``): a newer version may have been stored and expired meanwhile. The next
    read misses and loads fresh; the lease of a fill is given back."""
    paused = _Paused(ctx.client, ctx.prefix, markers=ctx.state)
    paused.late_s = paused.reservation_ms / 1000 + 1
    entry = sample_entry(str(uuid.uuid4()), 4)
    assert paused.write(entry).outcome == "expired"
    result = paused.get_or_load(entry.id, lambda _id: entry)
    assert (result.outcome, result.entry) == ("expired", entry)
    assert paused.get_by_id(entry.id) is None
    started = time.monotonic()
    assert entry_cache(ctx).get_or_load(entry.id, lambda _id: entry).outcome == "stored"
    assert time.monotonic() - started < 1.0, "the expired fill kept its lease"


def test_a_full_state_tier_refuses_writes_and_invalidations_and_reads_keep_working(
    ctx: CheckContext, cluster: LoopbackCluster
) -> None:
    """The state tier at its maxmemory under noeviction: write and invalidate raise
    StateTierFull and change nothing; reads are served; a cold fill returns its load uncached; a
    write of a version already reserved still answers."""
    cache = entry_cache(ctx)
    kept = sample_entry(str(uuid.uuid4()), 2)
    assert cache.write(kept).outcome == "stored"
    with cluster.client(cluster.masters("state")[0]) as node:
        original = node.config_get("maxmemory")["maxmemory"]
        try:
            node.config_set("maxmemory", max(1, int(node.info("memory")["used_memory"]) - 2**20))
            with pytest.raises(StateTierFull, match="entry write"):
                cache.write(sample_entry(str(uuid.uuid4()), 1))
            with pytest.raises(StateTierFull, match="entry write"):
                cache.write(sample_entry(kept.id, 3, kept.key_value))
            with pytest.raises(StateTierFull, match="entry invalidation"):
                cache.invalidate(kept.id, committed_version=3)
            assert cache.write(kept).outcome == "stored"  # its floor is there already: nothing to record
            assert cache.get_by_id(kept.id) == kept
            assert cache.get_by_key(kept.key_type, kept.key_value) == kept
            cold = sample_entry(str(uuid.uuid4()))  # no marker to raise: the check only reads
            assert cache.get_or_load(cold.id, lambda _id: cold) == FillResult(cold, True, "stored")
        finally:
            node.config_set("maxmemory", original)
    floor = ctx.state.run(lambda r: r.hget(cache.marker_key(kept.id), "floor"), idempotent=True)
    assert floor == "2" and cache.get_by_id(kept.id) == kept, "a refused write or invalidation changed something"


def test_an_invalidation_without_a_version_refuses_the_filled_version_after_an_eviction(
    ctx: CheckContext, cluster: LoopbackCluster
) -> None:
    """A fill creates no marker; an invalidation without a committed version then learns the
    cached version on the cache tier (its second step) and raises the marker's inv_floor past
    it (a third round trip): a late write-through of that version is refused even once the
    cache tier has lost the tombstone."""
    cache = entry_cache(ctx)
    entry = sample_entry(str(uuid.uuid4()), 4)
    assert cache.get_or_load(entry.id, lambda _id: entry).outcome == "stored"
    assert ctx.state.run(lambda r: r.exists(cache.marker_key(entry.id)), idempotent=True) == 0
    assert cache.invalidate(entry.id).removed == 2
    inv_floor = ctx.state.run(lambda r: r.hget(cache.marker_key(entry.id), "inv_floor"), idempotent=True)
    assert inv_floor == "5", inv_floor
    _evict_cache_tier(cluster, ctx.prefix)
    assert cache.write(entry).outcome == "stale" and cache.get_by_id(entry.id) is None
    assert cache.write(sample_entry(entry.id, 5, entry.key_value)).outcome == "stored"


def test_writes_and_invalidations_are_confirmed_by_the_replicas_of_both_tiers(
    cluster: LoopbackCluster, ctx: CheckContext
) -> None:
    """Issue 16 item 5: ``invalidate()`` answered only a count of removed keys, so an invalidation
    acknowledged by the masters alone could be lost in a failover without the caller knowing."""
    # Every replica in sync (an earlier test may have left one re-syncing): then each step's WAIT
    # asks for exactly the replicas in sync, in its pipeline.
    cluster.wait_for("both tiers converged", cluster.converged, timeout=30)
    cache = entry_cache(ctx)
    entry = sample_entry(str(uuid.uuid4()))
    written = cache.write(entry)
    assert written.outcome == "stored" and written.confirmed
    assert written.state is not None and written.cache is not None and written.cache.acked == 2
    cache.invalidate(str(uuid.uuid4()))  # the scripts loaded (NOSCRIPT costs 2 more the first time)
    with count_round_trips() as trips:
        result = cache.invalidate(entry.id, committed_version=2)
    assert trips[0] == 2  # the WAITs ride in each step's pipeline: still one round trip per tier
    assert result.removed == 2 and result.confirmed
    assert result.acked == result.required == 2  # both replicas of each tier are in sync
    assert result.write_floor is None
    assert cache.write(entry) == WriteResult("stale")  # refused: nothing written, nothing to confirm
    assert not cache.write(entry).confirmed
    cache.get_by_id(str(uuid.uuid4()))  # the read script loaded
    with count_round_trips() as trips:
        assert cache.get_by_id(entry.id) is None
    assert trips[0] == 1  # reads stay one round trip


@pytest.mark.default_server_line  # the rule is replication.py's, proven on both lines in test_confirmation
def test_an_invalidation_is_unconfirmed_while_either_tiers_replicas_are_stopped(fresh_cluster: LoopbackCluster) -> None:
    cluster = fresh_cluster
    with (
        SentinelClient(cluster.client_config(min_idle=1)) as cache_client,
        SentinelClient(cluster.client_config("state", min_idle=1)) as state_client,
    ):
        cache = EntryCache(cache_client, "smoke:unconfirmed:", markers=state_client)
        for tier in ("cache", "state"):
            entry = sample_entry(str(uuid.uuid4()))
            assert cache.write(entry).confirmed
            (master,) = cluster.masters(tier)
            replicas = [n for n in cluster.tier_nodes(tier) if n is not master]
            for replica in replicas:
                cluster.pause_node(replica)
            v3 = sample_entry(entry.id, 3, entry.key_value)
            try:
                result = cache.invalidate(entry.id, committed_version=2)
                written = cache.write(v3)
            finally:
                for replica in replicas:
                    cluster.resume_node(replica)
            stopped, running = (result.cache, result.state) if tier == "cache" else (result.state, result.cache)
            assert result.removed == 2 and not result.confirmed, (tier, result)
            assert stopped.acked == 0 and stopped.required >= 1 and running.confirmed, (tier, result)
            assert written.outcome == "stored" and not written.confirmed, (tier, written)
            # What the masters did is done all the same: the entry is gone until v3's write.
            assert cache.get_by_id(entry.id) == v3
            cluster.wait_for(f"the {tier} replicas in sync again", lambda t=tier: cluster.converged(t), timeout=30)


@pytest.mark.default_server_line  # a drill: the confirmation rule itself runs on both lines above
def test_no_confirmed_invalidation_is_lost_when_both_tiers_masters_fail(fresh_cluster: LoopbackCluster) -> None:
    """The drill framework's ConfirmedInvalidations workload x both masters SIGKILLed x Lost on
    each tier: every invalidation ``invalidate()`` answered as confirmed left its tombstone on the
    new cache master and its marker on the new state master."""
    cluster = fresh_cluster
    prefix = f"smoke:{uuid.uuid4().hex[:8]}:"
    with (
        SentinelClient(cluster.client_config(min_idle=1)) as cache_client,
        SentinelClient(cluster.client_config("state", min_idle=1)) as state_client,
    ):
        workload = ConfirmedInvalidations(cache_client, prefix, markers=state_client)
        checkers = [
            Lost("confirmed_invalidations_cache", workload.history, Survivors(cache_client)),
            Lost("confirmed_invalidations_state", workload.markers, Survivors(state_client)),
        ]
        run = Drill(
            [workload],
            Together(KillMaster(cluster), KillMaster(cluster, tier="state")),
            checkers,
            recovered=lambda: all(len(cluster.masters(tier)) == 1 for tier in cluster.tiers),
            steady_seconds=1.0,
            settle_seconds=2.0,
            timeout_seconds=30,
        ).run()
    assert run.heal_error is None, run.heal_error
    assert run.passed, run.verdicts
    after = [ack for ack in workload.history.acknowledged if ack.at > run.timeline.injected_at]
    assert len(workload.history.acknowledged) > 10 and after, (workload.history.unconfirmed, workload.history.errors)
    print(
        f"confirmed invalidations: {len(workload.history.acknowledged)} ({len(after)} after the kill), "
        f"unconfirmed {workload.history.unconfirmed}, errors {workload.history.errors}, 0 lost"
    )
