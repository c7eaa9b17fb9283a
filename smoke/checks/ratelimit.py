"""Checks of the rate-limiting strategy (smoke/strategies/ratelimit.py): exact limits, also under concurrency,
TTLs on every counter, reported remaining/reset, isolation, corrupt counters.

A fixed window can roll over in the middle of a check; every decision carries its window, and a
check that saw two windows runs once more (a second roll-over is a minute away).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import cast

import redis

from smoke.checks import CheckContext, check, expect
from smoke.strategies.ratelimit import DEFAULT_LIMIT, DEFAULT_LIMITS, WINDOW_MS, Decision, RateLimiter

STRATEGY = "ratelimit"


def _ispb() -> str:
    return f"{random.randrange(10**8):08d}"


def _hit(ctx: CheckContext, limiter: RateLimiter, ispb: str, operation: str) -> Decision:
    return cast(Decision, ctx.timed("ratelimit.check", lambda: limiter.check(ispb, operation)))


def _in_one_window(run: Callable[[], tuple[list[Decision], str]]) -> str:
    """Run a check body; if its decisions span two windows, run it once more."""
    for _ in range(2):
        decisions, detail = run()
        if len({d.window for d in decisions}) <= 1:
            return detail
    raise AssertionError("two window roll-overs in one check: the master's clock jumps")


@check(STRATEGY, "limit_exact_for_each_operation")
def limit_exact_for_each_operation(ctx: CheckContext) -> str:
    limiter = RateLimiter(ctx.state, ctx.prefix)
    operations = {**DEFAULT_LIMITS, "DeleteEntry": DEFAULT_LIMIT}  # DeleteEntry has no limit of its own

    def run() -> tuple[list[Decision], str]:
        ispb, decisions, parts = _ispb(), [], []
        for operation, limit in operations.items():
            hits = [_hit(ctx, limiter, ispb, operation) for _ in range(limit + 1)]
            decisions += hits
            allowed = sum(d.allowed for d in hits)
            if len({d.window for d in hits}) > 1:
                return decisions, ""
            expect(
                allowed == limit and all(d.allowed for d in hits[:limit]) and not hits[limit].allowed,
                f"{operation}: {allowed} of {limit + 1} allowed, expected the first {limit}, not request {limit + 1}",
            )
            parts.append(f"{operation} {limit}")
        return decisions, f"L allowed, L+1 rejected for {', '.join(parts)}"

    return _in_one_window(run)


@check(STRATEGY, "exact_under_concurrency")
def exact_under_concurrency(ctx: CheckContext) -> str:
    limiter = RateLimiter(ctx.state, ctx.prefix)
    operation, limit, threads_n, per_thread = "CreateClaim", DEFAULT_LIMITS["CreateClaim"], 8, 25

    def run() -> tuple[list[Decision], str]:
        ispb, decisions, lock = _ispb(), [], threading.Lock()
        start = threading.Barrier(threads_n)

        def worker() -> None:
            start.wait()
            mine = [_hit(ctx, limiter, ispb, operation) for _ in range(per_thread)]
            with lock:
                decisions.extend(mine)

        threads = [threading.Thread(target=worker) for _ in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        allowed = sum(d.allowed for d in decisions)
        if len({d.window for d in decisions}) == 1:
            expect(
                allowed == limit,
                f"{threads_n} threads x {per_thread} hits at limit {limit}: {allowed} allowed, expected {limit}",
            )
            counts = sorted(d.count for d in decisions if d.allowed)
            expect(counts == list(range(1, limit + 1)), "allowed requests did not get counts 1..L exactly once")
        return decisions, f"{threads_n} threads x {per_thread} hits at limit {limit}: exactly {allowed} allowed"

    return _in_one_window(run)


@check(STRATEGY, "every_counter_has_ttl")
def every_counter_has_ttl(ctx: CheckContext) -> str:
    limiter = RateLimiter(ctx.state, ctx.prefix, limits={"Tiny": 2, **DEFAULT_LIMITS})
    ispb = _ispb()
    for operation in ("CreateEntry", "GetEntry", "Tiny", "Other"):
        for _ in range(3):
            _hit(ctx, limiter, ispb, operation)
    # The seed's failure: a counter left without a TTL (INCR ran, EXPIRE did not). Both paths repair it.
    repaired = []
    for operation in ("CreateEntry", "Tiny"):  # allowed path, rejected path (Tiny is at its limit)
        decision = _hit(ctx, limiter, ispb, operation)
        key = f"{limiter.key_base(ispb, operation)}{decision.window}"
        ctx.state.run(lambda r, k=key: r.persist(k), idempotent=True)
        again = _hit(ctx, limiter, ispb, operation)
        if again.window == decision.window:
            pttl = ctx.state.run(lambda r, k=key: r.pttl(k), idempotent=True)
            # -2: gone, its window ended between the check and this read (a TTL-less key would not go).
            kept = f"{operation}: a TTL-less counter kept PTTL {pttl} after the next check"
            expect(pttl == -2 or 0 < pttl <= WINDOW_MS, kept)
            repaired.append(f"{operation} ({'allowed' if again.allowed else 'rejected'})")

    def sweep(r: redis.Redis) -> dict[str, int]:
        keys = list(r.scan_iter(match=f"{ctx.prefix}ratelimit:*", count=500))
        # -2: expired between SCAN and PTTL (a window ended): not a counter any more.
        return {key: pttl for key in keys if (pttl := r.pttl(key)) != -2}

    pttls = ctx.state.run(sweep, idempotent=True)
    bad = {key: pttl for key, pttl in pttls.items() if not 0 < pttl <= WINDOW_MS}
    expect(bool(pttls) and not bad, f"counters outside (0, {WINDOW_MS}] ms: {bad or 'none found'}")
    return f"{len(pttls)} counters, all with 0 < PTTL ≤ {WINDOW_MS} ms; TTL repaired on {', '.join(repaired)}"


@check(STRATEGY, "remaining_and_reset_reported")
def remaining_and_reset_reported(ctx: CheckContext) -> str:
    limiter = RateLimiter(ctx.state, ctx.prefix, limits={"Small": 5})

    def run() -> tuple[list[Decision], str]:
        ispb = _ispb()
        decisions = [_hit(ctx, limiter, ispb, "Small") for _ in range(6)]
        if len({d.window for d in decisions}) > 1:
            return decisions, ""
        remaining = [d.remaining for d in decisions]
        expect(remaining == [4, 3, 2, 1, 0, 0], f"remaining {remaining}, expected [4, 3, 2, 1, 0, 0]")
        expect(all(0 < d.reset_ms <= WINDOW_MS for d in decisions), f"reset {[d.reset_ms for d in decisions]}")
        resets = [d.reset_ms for d in decisions]
        expect(resets == sorted(resets, reverse=True), f"reset times not decreasing: {resets}")
        last = decisions[-1]
        key = f"{limiter.key_base(ispb, 'Small')}{last.window}"
        # The counter ends with its window on the server's clock: compared as an absolute expiry time
        # (PEXPIRETIME), not a PTTL against a TIME read in another round trip.
        expires_at, pttl = ctx.state.run(lambda r: (r.pexpiretime(key), r.pttl(key)), idempotent=True)
        window_end = (last.window + 1) * WINDOW_MS
        expect(
            abs(window_end - expires_at) <= 5 and last.reset_ms - pttl >= -5,
            f"PEXPIRETIME {expires_at}, window end by server time {window_end}; PTTL {pttl} ms, reported "
            f"{last.reset_ms}",
        )
        expect(not last.allowed and last.count == 5, f"request 6 of 5: {last}")
        return decisions, f"remaining 4→0, reset {last.reset_ms} ms (PTTL {pttl} ms, server-time window end)"

    return _in_one_window(run)


@check(STRATEGY, "isolated_per_ispb_and_operation")
def isolated_per_ispb_and_operation(ctx: CheckContext) -> str:
    limiter = RateLimiter(ctx.state, ctx.prefix)
    limit = DEFAULT_LIMITS["CreateClaim"]

    def run() -> tuple[list[Decision], str]:
        a, b = _ispb(), _ispb()
        decisions = [_hit(ctx, limiter, a, "CreateClaim") for _ in range(limit + 1)]
        other_ispb = _hit(ctx, limiter, b, "CreateClaim")
        other_operation = _hit(ctx, limiter, a, "CreateEntry")
        decisions += [other_ispb, other_operation]
        if len({d.window for d in decisions}) > 1:
            return decisions, ""
        expect(not decisions[limit].allowed, "ISPB A was not limited at CreateClaim")
        expect(other_ispb.allowed and other_ispb.count == 1, f"ISPB B after A hit its limit: {other_ispb}")
        expect(other_operation.allowed and other_operation.count == 1, f"A's CreateEntry: {other_operation}")
        return decisions, "ISPB A at its CreateClaim limit; ISPB B and A's CreateEntry counted from 1"

    return _in_one_window(run)


@check(STRATEGY, "corrupt_counter_is_a_miss")
def corrupt_counter_is_a_miss(ctx: CheckContext) -> str:
    limiter = RateLimiter(ctx.state, ctx.prefix, limits={"Small": 5})
    seen = []
    for label, write in (
        ("text", lambda r, k: r.set(k, "abc")),
        ("negative", lambda r, k: r.set(k, "-7", px=WINDOW_MS)),
        ("a list", lambda r, k: r.rpush(k, "1")),
    ):
        ispb = _ispb()
        first = _hit(ctx, limiter, ispb, "Small")
        key = f"{limiter.key_base(ispb, 'Small')}{first.window}"
        ctx.state.run(lambda r, k=key, w=write: (r.delete(k), w(r, k)), idempotent=True)
        after = _hit(ctx, limiter, ispb, "Small")
        if after.window != first.window:
            continue
        expect(after.allowed and after.count == 1, f"{label}: {after}, expected counted from 1")
        ttl = ctx.state.run(lambda r, k=key: r.pttl(k), idempotent=True)
        expect(ttl == -2 or 0 < ttl <= WINDOW_MS, f"{label}: PTTL {ttl} after the repair")  # -2: its window ended
        seen.append(label)
    expect(bool(seen), "every case crossed a window boundary")
    return f"corrupt counters ({', '.join(seen)}) deleted and counted from 1, with a TTL"
