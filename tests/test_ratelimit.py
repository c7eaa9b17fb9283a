"""The rate-limiting strategy against a real topology: every registered check, plus direct tests."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest

import smoke.checks.ratelimit as ratelimit_checks
import smoke.strategies.ratelimit as ratelimit
from smoke.checks import REGISTRY, CheckContext, run_check
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import SentinelClient
from smoke.strategies.ratelimit import Decision, RateLimiter
from tests.support import count_round_trips

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]

CHECKS = [c for c in REGISTRY if c.strategy == "ratelimit"]


def hammer(limiter: RateLimiter, ispb: str, operation: str, threads: int, per_thread: int) -> list[Decision]:
    decisions: list[Decision] = []
    lock, start = threading.Lock(), threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        mine = [limiter.check(ispb, operation) for _ in range(per_thread)]
        with lock:
            decisions.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return decisions


def test_checks_registered() -> None:
    assert {c.name for c in CHECKS} >= {
        "limit_exact_for_each_operation",
        "exact_under_concurrency",
        "every_counter_has_ttl",
        "remaining_and_reset_reported",
        "isolated_per_ispb_and_operation",
    }


def test_contract_limits_and_key(client: SentinelClient) -> None:
    limiter = RateLimiter(client, "p:")
    assert [limiter.limit_for(op) for op in ("CreateEntry", "CreateClaim", "GetEntry", "Other")] == [100, 50, 500, 100]
    assert limiter.key_base("12345678", "GetEntry") == "p:ratelimit:12345678:GetEntry:"
    with pytest.raises(ValueError):
        limiter.key_base("1234:5678", "GetEntry")


@pytest.mark.parametrize(("operation", "limit"), [("CreateClaim", 50), ("GetEntry", 500)])
def test_exact_with_eight_threads(client: SentinelClient, ctx: CheckContext, operation: str, limit: int) -> None:
    limiter = RateLimiter(client, ctx.prefix)
    for _ in range(2):  # once more if a window boundary fell inside the run
        decisions = hammer(limiter, uuid.uuid4().hex[:8], operation, threads=8, per_thread=limit // 4)
        if len({d.window for d in decisions}) == 1:
            break
    assert len({d.window for d in decisions}) == 1
    assert sum(d.allowed for d in decisions) == limit
    assert sorted(d.count for d in decisions if d.allowed) == list(range(1, limit + 1))
    assert all(d.count == limit and d.remaining == 0 for d in decisions if not d.allowed)


def test_one_round_trip(client: SentinelClient, ctx: CheckContext) -> None:
    limiter = RateLimiter(client, ctx.prefix)
    limiter.check("11111111", "GetEntry")  # loads the script
    with count_round_trips() as allowed:
        assert limiter.check("11111111", "GetEntry").allowed
    small = RateLimiter(client, ctx.prefix, limits={"One": 1}, window_ms=10**13)  # one window (to 2286)
    small.check("11111111", "One")
    with count_round_trips() as rejected:
        assert not small.check("11111111", "One").allowed
    assert (allowed[0], rejected[0]) == (1, 1)


def test_script_reloaded_after_flush(client: SentinelClient, ctx: CheckContext, cluster: LoopbackCluster) -> None:
    """NOSCRIPT proves the script did not run, so the non-idempotent check may load and run it once.
    (The flush is an operator's command: the application user may not run SCRIPT FLUSH.)"""
    limiter = RateLimiter(client, ctx.prefix)
    for node in cluster.redis_nodes:
        with cluster.client(node) as admin:
            admin.script_flush()
    first = limiter.check("22222222", "CreateEntry")
    second = limiter.check("22222222", "CreateEntry")
    assert first.allowed and (first.count, second.count) in ((1, 2), (1, 1))  # (1, 1): a window rolled over


def test_rejections_do_not_count(client: SentinelClient, ctx: CheckContext) -> None:
    limiter = RateLimiter(client, ctx.prefix, limits={"Two": 2})
    decisions = [limiter.check("33333333", "Two") for _ in range(10)]
    if len({d.window for d in decisions}) == 1:
        key = f"{limiter.key_base('33333333', 'Two')}{decisions[-1].window}"
        assert client.run(lambda r: r.get(key), idempotent=True) == "2"


def test_corrupt_counter_does_not_crash_and_logs_once(
    client: SentinelClient, ctx: CheckContext, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit._log_corrupt, "warned", False)
    limiter = RateLimiter(client, ctx.prefix)
    with caplog.at_level(logging.DEBUG, logger="smoke.strategies.ratelimit"):
        for ispb in ("44444441", "44444442"):
            window = limiter.check(ispb, "GetEntry").window
            key = f"{limiter.key_base(ispb, 'GetEntry')}{window}"
            client.run(lambda r, k=key: r.set(k, b"\xff\xfe", px=60_000), idempotent=True)
            decision = limiter.check(ispb, "GetEntry")
            assert decision.allowed
    warnings = [r for r in caplog.records if r.name == "smoke.strategies.ratelimit" and r.levelno == logging.WARNING]
    assert len(warnings) == 1


def test_checks_fail_on_the_seed_design(ctx: CheckContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: the seed's INCR-then-EXPIRE, counting rejections, is caught."""

    class SeedLimiter(RateLimiter):
        def check(self, ispb: str, operation: str) -> Decision:
            key = f"{self.key_base(ispb, operation)}0"
            limit = self.limit_for(operation)
            count = self.client.run(lambda r: r.incr(key), idempotent=False)
            if count == 1:
                self.client.run(lambda r: r.expire(key, 60), idempotent=True)
            return Decision(count <= limit, limit, count, max(0, limit - count), 60_000, 0)

    monkeypatch.setattr(ratelimit_checks, "RateLimiter", SeedLimiter)
    item = next(c for c in CHECKS if c.name == "every_counter_has_ttl")
    assert not run_check(item, ctx).passed


# --- issue 15: ids that cannot be encoded, limits that cannot be compared


def test_an_ispb_that_cannot_be_encoded_never_uses_another_counter(client: SentinelClient, ctx: CheckContext) -> None:
    """``6070119\\udc80`` used to be sent as ``6070119?`` and used up that ISPB's counter."""
    limiter = RateLimiter(client, ctx.prefix, limits={"Two": 2}, window_ms=10**13)  # one window (to 2286)
    assert limiter.check("6070119?", "Two").count == 1
    for ispb, operation, what in (("6070119\udc80", "Two", "ispb"), ("60701190", "T\ud800", "operation")):
        with pytest.raises(ValueError, match=f"{what} .* cannot be encoded as UTF-8"):
            limiter.check(ispb, operation)
    assert limiter.check("6070119?", "Two").count == 2


def test_limits_the_script_cannot_count_exactly_are_refused(client: SentinelClient) -> None:
    with pytest.raises(ValueError, match=r"limit for 'GetEntry' = 1000000000000000000"):
        RateLimiter(client, limits={"GetEntry": 10**18})
    with pytest.raises(ValueError, match="default_limit"):
        RateLimiter(client, default_limit=True)
