"""The entry cache against a real master behind Sentinel: every registered check, plus direct
tests of the concurrency and corruption properties with their own assertions."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid

import pytest
import redis

import smoke.checks.entry  # registers the entry checks
import smoke.entries
from smoke.checks import REGISTRY, Check, CheckContext, run_check
from smoke.checks.entry import set_raw
from smoke.claims import ClaimCache, sample_claim
from smoke.client import ClientConfig, SentinelClient
from smoke.entries import Entry, EntryCache, sample_entry
from smoke.rehearsal import LoopbackCluster

pytestmark = pytest.mark.redis


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


@pytest.mark.parametrize("item", ENTRY_CHECKS, ids=lambda c: c.name)
def test_check_passes(item: Check, ctx: CheckContext) -> None:
    started = time.monotonic()
    result = run_check(item, ctx)
    assert result.passed, result.detail
    assert result.detail and "\n" not in result.detail
    assert time.monotonic() - started < 3.0, f"{item.name} took too long"


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
    monkeypatch.setattr(smoke.entries._log_corrupt, "warned", False)
    cache = EntryCache(ctx.client, ctx.prefix)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for entry_id in ids:
        set_raw(ctx, cache.id_key(entry_id), "\x00garbage{")
    with caplog.at_level(logging.DEBUG, logger="smoke.entries"):
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
    config = ClientConfig(
        sentinels=[(s.host, s.port) for s in cluster.sentinels],
        master_name=cluster.master_name,
        password=cluster.password,
        sentinel_password=cluster.password,
        min_idle=1,
    )
    with SentinelClient(config) as shared:
        entries = EntryCache(shared, "failover:")
        claims = ClaimCache(shared, "failover:")
        entry = sample_entry(str(uuid.uuid4()))
        assert entries.write(entry) == "stored"
        claims.create(sample_claim(str(uuid.uuid4()), entry.id))
        (old,) = cluster.masters()
        cluster.kill_node(old, signal.SIGKILL)
        deadline = time.monotonic() + 45
        while True:
            try:
                outcome = entries.write(sample_entry(entry.id, 2, entry.key_value))
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "no write succeeded within 45 s of the master's death"
                time.sleep(0.2)
        assert shared.sentinel_master_address() != (old.host, old.port)
        assert outcome == "stored"
        assert entries.get_by_key(entry.key_type, entry.key_value) == sample_entry(entry.id, 2, entry.key_value)
        fresh = sample_entry(str(uuid.uuid4()))
        assert entries.get_or_load(fresh.id, lambda _id: fresh).outcome == "stored"
        assert entries.invalidate(fresh.id) == 2
        claim = sample_claim(str(uuid.uuid4()), entry.id)
        claims.create(claim)
        assert claim in claims.list_for_entry(entry.id)
        assert claims.status(claim.id) == claim.status
