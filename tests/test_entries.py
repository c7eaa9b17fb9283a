"""The entry cache against a real master behind Sentinel: every registered check, plus direct
tests of the concurrency and corruption properties with their own assertions."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
import uuid

import pytest
import redis

import smoke.checks.entry  # registers the entry checks
import smoke.strategies.entries
from smoke.checks import REGISTRY, CheckContext, run_check
from smoke.checks.entry import set_raw
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.claims import ClaimCache, sample_claim
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import Entry, EntryCache, sample_entry

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
    cache = EntryCache(ctx.client, ctx.prefix)
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
    cache = EntryCache(ctx.client, ctx.prefix, lease_ms=5_000)
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
    cache = EntryCache(ctx.client, ctx.prefix)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for entry_id in ids:
        set_raw(ctx, cache.id_key(entry_id), "\x00garbage{")
    with caplog.at_level(logging.DEBUG, logger="smoke.strategies.entries"):
        assert [cache.get_by_id(i) for i in ids] == [None, None, None]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "treated as a miss" in warnings[0].getMessage()
    assert ctx.client.run(lambda r: r.exists(*[cache.id_key(i) for i in ids]), idempotent=True) == 0


def test_a_fill_after_its_lease_expired_is_not_stored(ctx: CheckContext) -> None:
    cache = EntryCache(ctx.client, ctx.prefix, lease_ms=100)
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
    with SentinelClient(config) as shared:
        entries = EntryCache(shared, "smoke:failover:")
        claims = ClaimCache(shared, "smoke:failover:")
        entry = sample_entry(str(uuid.uuid4()))
        assert entries.write(entry) == "stored"
        claims.create(sample_claim(str(uuid.uuid4()), entry.id))
        (old,) = cluster.masters()
        cluster.kill_node(old, signal.SIGKILL)
        deadline = time.monotonic() + 45
        newer = sample_entry(entry.id, 2, entry.key_value)
        while True:
            try:
                outcome = entries.write(newer)
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "no write succeeded within 45 s of the master's death"
                time.sleep(0.2)
        assert shared.sentinel_master_address() != (old.host, old.port)
        assert outcome == "stored"
        assert entries.get_by_key(entry.key_type, entry.key_value) == newer
        fresh = sample_entry(str(uuid.uuid4()))
        assert entries.get_or_load(fresh.id, lambda _id: fresh).outcome == "stored"
        assert entries.invalidate(fresh.id) == 2
        claim = sample_claim(str(uuid.uuid4()), entry.id)
        claims.create(claim)
        assert claim in claims.list_for_entry(entry.id)
        assert claims.status(claim.id) == claim.status


def test_an_invalidation_does_not_block_later_refills(ctx: CheckContext) -> None:
    """Invalidating an unchanged entry without a committed version rejects only fills that began
    before it: the next reader's refill is stored and the two after it are hits."""
    cache = EntryCache(ctx.client, ctx.prefix)
    entry = sample_entry(str(uuid.uuid4()), 4)
    assert cache.write(entry) == "stored"
    assert cache.invalidate(entry.id) == 2
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
    assert cache.write(entry) == "stale"
    assert cache.write(sample_entry(entry.id, 5, entry.key_value)) == "stored"


def test_a_fill_that_began_before_an_invalidation_is_rejected_even_for_the_same_version(ctx: CheckContext) -> None:
    cache = EntryCache(ctx.client, ctx.prefix)
    entry = sample_entry(str(uuid.uuid4()))

    def load_then_invalidated(_id: str) -> Entry:
        cache.invalidate(entry.id)
        return entry

    assert cache.get_or_load(entry.id, load_then_invalidated).outcome == "invalidated"
    assert cache.get_by_id(entry.id) is None
    assert cache.get_or_load(entry.id, lambda _id: entry).outcome == "stored"


def test_the_marker_outlives_the_entry(client: SentinelClient) -> None:
    cache = EntryCache(client)
    assert cache.marker_ttl_ms >= cache.ttl_ms == 300_000
    assert EntryCache(client, ttl_ms=1_000).marker_ttl_ms >= 1_000
    with pytest.raises(ValueError, match="outlive"):
        EntryCache(client, marker_ttl_ms=60_000)


def _echo_works(client: SentinelClient) -> None:
    for i in range(5):
        assert client.run(lambda r, i=i: r.echo(f"x{i}"), idempotent=True) == f"x{i}"


def test_non_utf8_values_are_misses_and_the_connection_survives(ctx: CheckContext) -> None:
    client = ctx.client
    cache = EntryCache(client, ctx.prefix)
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
    assert cache.write(sample_entry(b.id, 2, b.key_value)) == "stored"
    set_raw(ctx, cache.id_key(b.id), garbage)
    assert cache.invalidate(b.id) == 1
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
    cache = EntryCache(ctx.client, ctx.prefix)
    entry = sample_entry(str(uuid.uuid4()))
    key = {
        "id": cache.id_key(entry.id),
        "pointer": cache.pointer_key(entry.key_type, entry.key_value),
        "marker": cache.marker_key(entry.id),
        "lease": f"{ctx.prefix}{smoke.strategies.entries.LEASE_ID_KEY}{entry.id}",
    }[where]

    def replant() -> None:
        ctx.client.run(lambda r: (r.delete(key), plant(r, key)), idempotent=True)  # type: ignore[operator]

    with caplog.at_level(logging.DEBUG, logger="smoke.strategies.entries"):
        replant()
        assert cache.get_by_id(entry.id) is None
        assert cache.get_by_key(entry.key_type, entry.key_value) is None
        replant()
        assert cache.write(entry) == "stored"
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
    cache = EntryCache(ctx.client, ctx.prefix)
    old = sample_entry(str(uuid.uuid4()), 1, "old@example.com.br")
    moved = sample_entry(old.id, 2, "new@example.com.br")
    assert cache.write(old) == "stored"

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
    cache = EntryCache(ctx.client, ctx.prefix)
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
    cache = EntryCache(ctx.client, ctx.prefix)
    old = sample_entry(str(uuid.uuid4()), 1, "old@example.com.br")
    moved = sample_entry(old.id, 2, "new@example.com.br")
    cache.write(old)
    assert cache.get_or_load_by_key(moved.key_type, moved.key_value, lambda _t, _v: None).outcome == "stored"
    assert cache.invalidate(old.id, committed_version=2, new_key=(moved.key_type, moved.key_value)) == 3
    again = cache.get_or_load_by_key(moved.key_type, moved.key_value, lambda _t, _v: moved)
    assert again.outcome == "stored" and again.entry == moved


def test_versions_above_2_53_keep_their_order(ctx: CheckContext) -> None:
    """Lua numbers are doubles: 2^53 + 1 and 2^53 are one number there. Versions are compared
    exactly, in the marker, in the cached copy (the marker evicted) and in an invalidation."""
    cache = EntryCache(ctx.client, ctx.prefix)
    big = 2**53
    newer = sample_entry(str(uuid.uuid4()), big + 1)
    older = sample_entry(newer.id, big, newer.key_value)
    assert cache.write(newer) == "stored"
    assert cache.write(older) == "stale"
    assert cache.get_by_id(newer.id) == newer
    ctx.client.run(lambda r: r.delete(cache.marker_key(newer.id)), idempotent=True)  # e.g. evicted
    assert cache.write(older) == "stale"
    assert cache.get_by_id(newer.id) == newer
    # Nanosecond commit timestamps as versions: 256 apart is still one double at 1.7e18.
    ns = 1_732_000_000_123_456_789
    cache.invalidate(newer.id, committed_version=ns)
    assert cache.write(sample_entry(newer.id, ns - 1, newer.key_value)) == "stale"
    assert cache.get_or_load(newer.id, lambda i: sample_entry(i, ns - 1, newer.key_value)).outcome == "stale"
    assert cache.write(sample_entry(newer.id, ns, newer.key_value)) == "stored"
    cache.invalidate(newer.id)  # no committed version: the cached ns and older are refused
    assert cache.write(sample_entry(newer.id, ns, newer.key_value)) == "stale"
    assert cache.write(sample_entry(newer.id, ns + 1, newer.key_value)) == "stored"
    top = sample_entry(newer.id, 2**63 - 1, newer.key_value)
    assert cache.write(top) == "stored" and cache.get_by_id(newer.id) == top
    assert cache.write(sample_entry(newer.id, 2**63 - 2, newer.key_value)) == "stale"


@pytest.mark.parametrize("version", [-1, 2**63, 1.5, True, "7"])
def test_versions_that_cannot_be_compared_are_refused_naming_the_argument(ctx: CheckContext, version: object) -> None:
    cache = EntryCache(ctx.client, ctx.prefix)
    entry = dataclasses.replace(sample_entry(str(uuid.uuid4())), version=version)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"entry version .*\[0, 2\*\*63 - 1\]"):
        cache.write(entry)
    with pytest.raises(ValueError, match=r"committed_version .*\[0, 2\*\*63 - 1\]"):
        cache.invalidate(entry.id, committed_version=version)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"entry version"):
        cache.get_or_load(entry.id, lambda _id: entry)
    keys = ctx.client.run(lambda r: list(r.scan_iter(match=f"{ctx.prefix}*")), idempotent=True)
    assert keys == [], keys
    # The failed fill gave its lease back: the next reader loads at once.
    good = sample_entry(entry.id)
    assert cache.get_or_load(entry.id, lambda _id: good).outcome == "stored"


def test_ids_and_keys_that_cannot_be_encoded_are_refused_before_anything_is_sent(ctx: CheckContext) -> None:
    """A lone surrogate (``json.loads('"\\udc80"')`` makes one) used to be sent as ``?``: the
    entry of ``e-?`` answered for ``e-\\udc80``. Now it is a ValueError naming the argument."""
    cache = EntryCache(ctx.client, ctx.prefix)
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
    cache = EntryCache(ctx.client, ctx.prefix)
    cache.write(sample_entry(str(uuid.uuid4()), key_value="a:b"))
    with pytest.raises(ValueError, match="key type 'EMAIL:a'"):
        cache.get_by_key("EMAIL:a", "b")
    with pytest.raises(ValueError, match="key type 'email'"):
        cache.get_or_load_by_key("email", "x@example.com.br", lambda _t, _v: None)


def test_a_foreign_value_at_the_epoch_key_never_lets_a_not_found_through_nor_blocks_fills(ctx: CheckContext) -> None:
    """The epoch is judged like every other key: a value of another type or that is not a time is
    deleted (logged as foreign), the not-found in flight is dropped (it cannot be judged), and
    the next one is stored; an invalidation over a foreign epoch replaces it."""
    cache = EntryCache(ctx.client, ctx.prefix)
    epoch = cache.negative_epoch_key()
    for plant in (lambda r: r.hset(epoch, "x", "y"), lambda r: r.set(epoch, "not a time")):
        ctx.client.run(lambda r, p=plant: (r.delete(epoch), p(r)), idempotent=True)  # type: ignore[misc]
        value = f"x{uuid.uuid4().hex[:8]}@example.com.br"
        assert cache.get_or_load_by_key("EMAIL", value, lambda _t, _v: None).outcome == "invalidated"
        assert ctx.client.run(lambda r: r.exists(epoch), idempotent=True) == 0
        assert cache.get_or_load_by_key("EMAIL", value, lambda _t, _v: None).outcome == "stored"
    ctx.client.run(lambda r: r.hset(epoch, "x", "y"), idempotent=True)
    cache.invalidate(str(uuid.uuid4()))
    kind, ttl = ctx.client.run(lambda r: (r.type(epoch), r.pttl(epoch)), idempotent=True)
    assert kind == "string" and 0 < ttl <= cache.marker_ttl_ms, (kind, ttl)
