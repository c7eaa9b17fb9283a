"""The claim cache against a real master behind Sentinel: every registered check, plus direct
tests of concurrency and corruption with their own assertions."""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid

import pytest

import smoke.checks.claim  # registers the claim checks
import smoke.strategies.claims
from smoke.checks import REGISTRY, CheckContext, run_check
from smoke.checks.entry import set_raw
from smoke.strategies.claims import Claim, ClaimCache, sample_claim
from smoke.strategies.client import SentinelClient

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]


CLAIM_CHECKS = [c for c in REGISTRY if c.strategy == "claim"]


def test_every_property_has_a_check() -> None:
    names = {c.name for c in CLAIM_CHECKS}
    assert {
        "object_and_status_one_round_trip",
        "index_bounded_and_has_ttl",
        "listing_returns_only_live_claims",
        "corrupt_value_is_a_miss",
        "every_key_has_ttl",
    } <= names


def test_concurrent_creates_and_listings(ctx: CheckContext) -> None:
    cache = ClaimCache(ctx.client, ctx.prefix, ttl_ms=5_000)
    entry_id = str(uuid.uuid4())
    claims = [sample_claim(str(uuid.uuid4()), entry_id) for _ in range(30)]
    barrier = threading.Barrier(40)
    listings: list[list[Claim]] = []

    def create(claim: Claim) -> None:
        barrier.wait(5)
        cache.create(claim)

    def lister() -> None:
        barrier.wait(5)
        for _ in range(5):
            listings.append(cache.list_for_entry(entry_id))

    threads = [threading.Thread(target=create, args=(c,)) for c in claims]
    threads += [threading.Thread(target=lister) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(c.id for c in cache.list_for_entry(entry_id)) == sorted(c.id for c in claims)
    assert all(set(listing) <= set(claims) for listing in listings)
    ttl = ctx.client.run(lambda r: r.pttl(cache.index_key(entry_id)), idempotent=True)
    assert 0 < ttl <= 5_000 + cache.index_slack_ms


def test_an_updated_claim_keeps_one_index_member_and_the_new_status(ctx: CheckContext) -> None:
    cache = ClaimCache(ctx.client, ctx.prefix)
    claim = sample_claim(str(uuid.uuid4()), str(uuid.uuid4()))
    cache.create(claim)
    cache.update(Claim(**{**claim.__dict__, "status": "CANCELLED"}))
    assert cache.status(claim.id) == "CANCELLED"
    assert [c.status for c in cache.list_for_entry(claim.entry_id)] == ["CANCELLED"]
    assert cache.remove(claim) == 3
    assert cache.list_for_entry(claim.entry_id) == []
    assert ctx.client.run(lambda r: r.exists(cache.index_key(claim.entry_id)), idempotent=True) == 0


def test_corrupt_values_do_not_crash_and_are_logged_once(
    ctx: CheckContext, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smoke.strategies.claims._log_corrupt, "warned", False)
    cache = ClaimCache(ctx.client, ctx.prefix)
    entry_id = str(uuid.uuid4())
    claims = [sample_claim(str(uuid.uuid4()), entry_id) for _ in range(3)]
    for claim in claims:
        cache.create(claim)
        set_raw(ctx, cache.object_key(claim.id), "[[[")
    with caplog.at_level(logging.DEBUG, logger="smoke.strategies.claims"):
        assert cache.list_for_entry(entry_id) == []
        assert cache.get(claims[0].id) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "treated as a miss" in warnings[0].getMessage()


def test_defaults_are_the_contract(client: SentinelClient) -> None:
    cache = ClaimCache(client)
    assert cache.ttl_ms == 60_000
    assert cache.object_key("c1") == "dict:claim:id:c1"
    assert cache.status_key("c1") == "dict:claim:status:c1"
    assert cache.index_key("e1") == "dict:claim:index:entry:e1"


def test_checks_pass_when_they_share_one_run_prefix(ctx: CheckContext) -> None:
    """The runner gives every check the same prefix: no check may trip over another's keys;
    together they record a latency for every operation of the report."""
    failed = [r for r in (run_check(item, ctx) for item in CLAIM_CHECKS) if not r.passed]
    assert not failed, [f"{r.name}: {r.detail}" for r in failed]
    assert {"claim.create", "claim.status", "claim.list"} <= set(ctx.latencies_ms)


def _echo_works(client: SentinelClient) -> None:
    for i in range(5):
        assert client.run(lambda r, i=i: r.echo(f"x{i}"), idempotent=True) == f"x{i}"


def test_non_utf8_object_and_status_are_misses_and_the_connection_survives(ctx: CheckContext) -> None:
    client = ctx.client
    cache = ClaimCache(client, ctx.prefix)
    claim = sample_claim(str(uuid.uuid4()), str(uuid.uuid4()))
    cache.create(claim)
    garbage = b"\xff\xfe{"
    set_raw(ctx, cache.object_key(claim.id), garbage)
    assert cache.get(claim.id) is None
    assert client.run(lambda r: r.exists(cache.object_key(claim.id)), idempotent=True) == 0
    _echo_works(client)
    set_raw(ctx, cache.status_key(claim.id), garbage)
    assert cache.status(claim.id) is None
    assert client.run(lambda r: r.exists(cache.status_key(claim.id)), idempotent=True) == 0
    _echo_works(client)
    cache.create(claim)
    set_raw(ctx, cache.object_key(claim.id), garbage)
    assert cache.list_for_entry(claim.entry_id) == []
    assert client.run(lambda r: r.exists(cache.object_key(claim.id)), idempotent=True) == 0
    _echo_works(client)


def test_the_seed_set_index_is_replaced_atomically_on_first_write(
    ctx: CheckContext, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed left ``dict:claim:index:entry:<id>`` as a SET without a TTL: a put must replace it
    in the same call that writes object and status, never write those and then fail."""
    monkeypatch.setattr(smoke.strategies.claims._log_corrupt, "warned", False)
    cache = ClaimCache(ctx.client, ctx.prefix)
    claim = sample_claim(str(uuid.uuid4()), str(uuid.uuid4()))
    index = cache.index_key(claim.entry_id)
    ctx.client.run(lambda r: r.sadd(index, "old-1", "old-2"), idempotent=True)
    assert ctx.client.run(lambda r: r.ttl(index), idempotent=True) == -1
    with caplog.at_level(logging.DEBUG, logger="smoke.strategies.claims"):
        result = cache.create(claim)
    assert result.index_size == 1
    assert ctx.client.run(lambda r: r.type(index), idempotent=True) == "zset"
    assert 0 < ctx.client.run(lambda r: r.pttl(index), idempotent=True) <= cache.ttl_ms + cache.index_slack_ms
    assert cache.list_for_entry(claim.entry_id) == [claim]
    assert cache.status(claim.id) == claim.status
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and index in warnings[0].getMessage()
    # A listing (and a remove) over a SET index: no error, the index replaced.
    other = str(uuid.uuid4())
    ctx.client.run(lambda r: r.sadd(cache.index_key(other), "old"), idempotent=True)
    assert cache.list_for_entry(other) == []
    assert ctx.client.run(lambda r: r.exists(cache.index_key(other)), idempotent=True) == 0
    ctx.client.run(lambda r: (r.delete(index), r.sadd(index, "old")), idempotent=True)
    assert cache.remove(claim) == 2
    assert ctx.client.run(lambda r: r.exists(index), idempotent=True) == 0
    _echo_works(ctx.client)


@pytest.mark.parametrize("where", ["object", "status"])
def test_a_wrong_type_at_object_or_status_is_a_miss_and_put_overwrites_it(ctx: CheckContext, where: str) -> None:
    cache = ClaimCache(ctx.client, ctx.prefix)
    claim = sample_claim(str(uuid.uuid4()), str(uuid.uuid4()))
    key = cache.object_key(claim.id) if where == "object" else cache.status_key(claim.id)
    ctx.client.run(lambda r: r.hset(key, mapping={"status": "OPEN"}), idempotent=True)
    assert (cache.get(claim.id) if where == "object" else cache.status(claim.id)) is None
    assert ctx.client.run(lambda r: r.exists(key), idempotent=True) == 0
    ctx.client.run(lambda r: r.rpush(key, "x"), idempotent=True)
    cache.create(claim)
    assert cache.get(claim.id) == claim and cache.status(claim.id) == claim.status
    ctx.client.run(
        lambda r: (r.delete(cache.object_key(claim.id)), r.sadd(cache.object_key(claim.id), "x")), idempotent=True
    )
    assert cache.list_for_entry(claim.entry_id) == []
    _echo_works(ctx.client)


# --- issue 15: ids that cannot be encoded


def test_claim_and_entry_ids_that_cannot_be_encoded_are_refused(ctx: CheckContext) -> None:
    """A lone surrogate used to be sent as ``?``: ``c-\\udc80`` read and overwrote ``c-?``."""
    cache = ClaimCache(ctx.client, ctx.prefix)
    lookalike = sample_claim("c-?", "e-?", status="CONFIRMED")
    cache.put(lookalike)
    for call, what in (
        (lambda: cache.get("c-\udc80"), "claim id"),
        (lambda: cache.status("c-\udc80"), "claim id"),
        (lambda: cache.put(sample_claim("c-\udc80", "e-?")), "claim id"),
        (lambda: cache.put(sample_claim("c-ok", "e-\udc80")), "entry id"),
        (lambda: cache.remove(sample_claim("c-\udc80", "e-?")), "claim id"),
        (lambda: cache.list_for_entry("e-\udc80"), "entry id"),
    ):
        with pytest.raises(ValueError, match=f"{what} .* cannot be encoded as UTF-8"):
            call()
    assert cache.get("c-?") == lookalike and cache.status("c-?") == "CONFIRMED"
    assert cache.list_for_entry("e-?") == [lookalike]


def test_a_claim_the_reader_would_refuse_is_not_written(ctx: CheckContext) -> None:
    """A status or type outside the contract would be read back as corrupt and deleted: refused
    on put instead, naming the field."""
    cache = ClaimCache(ctx.client, ctx.prefix)
    good = sample_claim(str(uuid.uuid4()), str(uuid.uuid4()))
    with pytest.raises(ValueError, match="status 'DONE'"):
        cache.put(dataclasses.replace(good, status="DONE"))
    with pytest.raises(ValueError, match="claim_type 'THEFT'"):
        cache.put(dataclasses.replace(good, claim_type="THEFT"))
    assert cache.get(good.id) is None
