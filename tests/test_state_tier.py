"""The state tier (issue 13) against real servers: decisions survive a cache that evicts, and a
full state tier fails closed.

One rehearsal of both tiers per server line, from the dev render with the cache tier's
``maxmemory`` made small (4 MiB, ``allkeys-lru`` as rendered, with a 1 MiB replication backlog)
so that a few seconds of entry writes evict it ten times over, and the state tier as rendered
(``noeviction``) at 64 MiB:

* the reproduction: the eviction drill with the decisions on the *cache* tier loses decisions
  (completed idempotency records answer CLAIMED again, workflows accept older versions);
* the split: the same drill with the decisions on the state tier loses none, while the cache
  evicts at least 10x what it holds and the state tier evicts nothing;
* a full state tier: every write path raises ``StateTierFull`` and writes nothing, every
  read-only answer (a replay, a refused stale version, an exhausted window) still comes.

The drills run on the default server line only (their server part, LRU and ``evicted_keys``, is
the same on both); the full-tier behaviour is the server's OOM rule, so it runs on both lines.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis

from components.server_lines import ServerLine
from smoke.drills.checkers import Timeline
from smoke.drills.eviction import (
    EVICTION_FACTOR,
    RATE_ROOM_MS,
    RATE_WINDOW_MS,
    CacheFlood,
    Decisions,
    DecisionsKept,
    EvictionMeter,
    evicted_keys,
    run_eviction_drill,
    window_with_room,
)
from smoke.local.rehearsal import LoopbackCluster, RenderedFiles
from smoke.strategies import client as client_module
from smoke.strategies.client import SentinelClient
from smoke.strategies.idempotency import CompleteOutcome, IdempotencyStore, Outcome, ReleaseOutcome
from smoke.strategies.ratelimit import RateLimiter
from smoke.strategies.tiers import StateTierFull, refused_when_full
from smoke.strategies.workflow import WorkflowCache, WorkflowMetadata
from tests.support import require_redis_binaries

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]

CACHE_MAXMEMORY = 4 * 2**20
# The replication backlog counts against maxmemory and LRU cannot evict it: the rendered 10 MiB
# would leave a 4 MiB cache nothing to evict and answer OOM. 1 MiB here (the test's cache only).
CACHE_REPL_BACKLOG = "1mb"
STATE_MAXMEMORY = 64 * 2**20
# Bounds of one drill in this module (the flood ends sooner when its target is reached).
FLOOD = {"timeout_s": 30.0}


@dataclass(frozen=True)
class Tiers:
    """Both tiers of one rehearsal: the application's Sentinel client per tier, an admin
    connection to each tier's current master (``with tiers.cache_admin() as node: ...``; the
    tests' own hands: INFO, DBSIZE, CONFIG SET) and how many replicas each tier has."""

    cache: SentinelClient
    state: SentinelClient
    cache_admin: Callable[[], redis.Redis]
    state_admin: Callable[[], redis.Redis]
    cache_replicas: int
    state_replicas: int


def _set_directive(conf: str, name: str, value: str) -> str:
    """``conf`` with the directive ``name`` set to ``value`` (replaced, or appended)."""
    line = re.compile(rf"^{re.escape(name)} .*$", re.MULTILINE)
    if line.search(conf):
        return line.sub(f"{name} {value}", conf)
    return f"{conf.rstrip()}\n{name} {value}\n"


def _policy(conf: str) -> str | None:
    match = re.search(r"^maxmemory-policy (\S+)", conf, re.MULTILINE)
    return match.group(1) if match else None


@contextmanager
def two_tiers(files: RenderedFiles, line: ServerLine) -> Iterator[Tiers]:
    """Start both tiers from ``files`` (cache: ``CACHE_MAXMEMORY``; state: ``STATE_MAXMEMORY``)
    and yield their :class:`Tiers`. The one place that knows how the tiers are started: swap it
    for another topology of two tiers and the tests stay as they are."""
    state_conf = files.state_redis_conf
    if state_conf is None:
        pytest.fail("the dev render has no state tier (configmap redis-state-config): issue 13 needs it")
    assert _policy(files.redis_conf) == "allkeys-lru", "the cache tier must evict (allkeys-lru)"
    assert _policy(state_conf) == "noeviction", "the state tier must never evict (noeviction)"
    small = dataclasses.replace(
        files,
        redis_conf=_set_directive(
            _set_directive(files.redis_conf, "maxmemory", str(CACHE_MAXMEMORY)), "repl-backlog-size", CACHE_REPL_BACKLOG
        ),
        state_redis_conf=_set_directive(state_conf, "maxmemory", str(STATE_MAXMEMORY)),
    )
    with LoopbackCluster(small, server=line) as cluster:

        def admin(tier: str) -> Callable[[], redis.Redis]:
            return lambda: cluster.client(cluster.masters(tier)[0])

        with (
            SentinelClient(cluster.client_config("cache", min_idle=2)) as cache,
            SentinelClient(cluster.client_config("state", min_idle=2)) as state,
        ):
            yield Tiers(
                cache=cache,
                state=state,
                cache_admin=admin("cache"),
                state_admin=admin("state"),
                cache_replicas=len(cluster.tier_nodes("cache")) - 1,
                state_replicas=len(cluster.tier_nodes("state")) - 1,
            )


@pytest.fixture(scope="module")
def tiers(dev_files: RenderedFiles, server_line: ServerLine) -> Iterator[Tiers]:
    require_redis_binaries(server_line)
    with two_tiers(dev_files, server_line) as started:
        yield started


@pytest.fixture
def prefix() -> str:
    """A key prefix of the test's own (``smoke:`` is allowed on both tiers)."""
    return f"smoke:{uuid.uuid4().hex[:12]}:"


# --- the error type ---------------------------------------------------------------------------


def test_state_tier_full_is_a_refusal_the_client_never_retries() -> None:
    error = StateTierFull("claim", "bridge:idempotency:r1", "OOM command not allowed")
    assert isinstance(error, redis.exceptions.OutOfMemoryError)
    assert not isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)
    assert not client_module._retryable(error)
    assert "state tier full" in str(error) and "nothing was recorded" in str(error)
    assert "maxmemory under noeviction" in str(error) and "bridge:idempotency:r1" in str(error)
    with pytest.raises(StateTierFull, match="workflow set of w1"), refused_when_full("workflow set", "w1"):
        raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    with pytest.raises(redis.exceptions.ResponseError) as other, refused_when_full("workflow set", "w1"):
        raise redis.exceptions.ResponseError("WRONGTYPE")
    assert not isinstance(other.value, StateTierFull)


# --- the eviction drill -------------------------------------------------------------------------


@pytest.mark.default_server_line
def test_decisions_on_the_evicting_cache_are_lost(tiers: Tiers, prefix: str) -> None:
    """Issue 13's defect, reproduced: the same drill with the decisions on the LRU cache tier."""
    drill = run_eviction_drill(
        tiers.cache,
        tiers.cache,
        tiers.cache_admin,
        tiers.cache_admin,
        prefix,
        replicas=tiers.cache_replicas,
        flood=FLOOD,
    )
    figures = drill.figures
    assert figures.target_reached, figures
    assert figures.decisions_lost > 0, figures
    assert figures.claimed_again > 0, f"no completed record answered CLAIMED again: {figures}"
    assert figures.workflows_regressed > 0, figures
    assert figures.ratelimit_windows_wrong > 0, f"no evicted counter let a second burst through: {figures}"
    assert not drill.passed


@pytest.mark.default_server_line
def test_decisions_on_the_state_tier_survive_a_cache_evicting_ten_times_its_size(tiers: Tiers, prefix: str) -> None:
    drill = run_eviction_drill(
        tiers.cache,
        tiers.state,
        tiers.cache_admin,
        tiers.state_admin,
        prefix,
        replicas=tiers.state_replicas,
        flood=FLOOD,
    )
    with tiers.cache_admin() as cache, tiers.state_admin() as state:
        policies = (cache.config_get("maxmemory-policy"), state.config_get("maxmemory-policy"))
    assert policies == ({"maxmemory-policy": "allkeys-lru"}, {"maxmemory-policy": "noeviction"})
    figures = drill.figures
    verdict = drill.run.verdict("decisions_kept")
    assert drill.passed, verdict.detail
    assert figures.decisions_lost == 0 and figures.claimed_again == 0, figures
    assert figures.evicted_on_state == 0, figures
    assert figures.evicted_on_cache >= EVICTION_FACTOR * figures.cache_capacity_keys > 0, figures
    assert figures.idempotency_records > 0 and figures.workflows > 0 and figures.ratelimit_windows > 0, figures
    assert set(figures.to_dict()) >= {"evicted_on_cache", "evicted_on_state", "decisions_checked", "decisions_lost"}


def test_the_drills_rate_limit_window_has_room_for_the_whole_drill_wherever_the_clock_stands() -> None:
    """Windows are aligned on the server's epoch clock. Stop 24's CI started the reproduction
    drill near the end of a fixed 600 s window, every second burst landed in the next window and
    the evicted counters went unseen. The drill's window length is now chosen at its start."""
    start = 1_796_000_000_000  # December 2026, in epoch ms
    for now_ms in range(start, start + 3 * RATE_WINDOW_MS, 7_919):  # every place in a window, and more
        window_ms = window_with_room(now_ms)
        assert RATE_WINDOW_MS <= window_ms < RATE_WINDOW_MS + 10_000
        assert window_ms - now_ms % window_ms >= RATE_ROOM_MS, (now_ms, window_ms)
    near_the_end = (start // RATE_WINDOW_MS + 1) * RATE_WINDOW_MS - 1_000  # 1 s before a boundary
    assert window_with_room(near_the_end) > RATE_WINDOW_MS
    with pytest.raises(ValueError, match="room_ms = 900000: must be positive and below shortest_ms"):
        window_with_room(start, room_ms=900_000, shortest_ms=900_000)


@pytest.mark.default_server_line
def test_a_second_burst_that_lands_in_a_later_window_is_reported_as_not_judged(tiers: Tiers, prefix: str) -> None:
    """The class of stop 24's flake: a check in a fresh window is allowed whatever was evicted, so
    the checker must not count it as a window kept. With 0.5 s windows and 0.6 s between the
    bursts, every ISPB's second burst is later: each is reported and the verdict fails."""
    decisions = Decisions(tiers.state, f"{prefix}late:", replicas=tiers.state_replicas, window_ms=500)
    for n in range(2 * (decisions.rate_limit + 1)):  # two ISPBs, each at its limit and one over
        decisions.iteration(n)
    time.sleep(0.6)
    checker = DecisionsKept(
        decisions,
        CacheFlood(tiers.cache, tiers.cache_admin, prefix),  # not injected: only the rate-limit part is judged
        EvictionMeter(tiers.cache_admin),
        EvictionMeter(tiers.state_admin),
    )
    checker.cache_meter.start()
    checker.state_meter.start()
    now = time.monotonic()
    verdict = checker.check(Timeline(injected_at=now, recovered_at=now, ended_at=now))
    assert checker.figures is not None
    assert (checker.figures.ratelimit_windows_unverified, checker.figures.ratelimit_windows_wrong) == (2, 0)
    assert not verdict.passed and "2 rate-limit windows had ended before the second burst" in verdict.detail


# --- a full state tier --------------------------------------------------------------------------


@contextmanager
def full(admin: Callable[[], redis.Redis], prefix: str, max_keys: int = 4000) -> Iterator[redis.Redis]:
    """The state tier filled to its ``maxmemory``: the limit lowered to 2 MiB above what it uses
    (CONFIG SET), filler written until the server refuses (OOM), then the limit set 1 MiB under
    what it uses, so that memory the server frees or trims on its own (query buffers, blocks of
    the replication buffer) cannot make room again during the test. Restored on exit: the
    filler deleted (DEL is allowed when full), the limit put back."""
    with admin() as node:
        original = node.config_get("maxmemory")["maxmemory"]
        filler = f"{prefix}filler:"
        written = 0
        try:
            node.config_set("maxmemory", int(node.info("memory")["used_memory"]) + 2 * 2**20)
            for written in range(max_keys):
                try:
                    node.set(f"{filler}{written}", "x" * 16384)
                except redis.exceptions.OutOfMemoryError:
                    break
            else:
                pytest.fail(f"the state tier took {max_keys} x 16 KiB without refusing a write")
            node.config_set("maxmemory", int(node.info("memory")["used_memory"]) - 2**20)
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                node.set(f"{filler}probe", "x")
            yield node
        finally:
            node.config_set("maxmemory", original)
            if written:
                node.delete(*(f"{filler}{n}" for n in range(written)))


def test_a_full_state_tier_refuses_every_write_and_still_answers_every_read(tiers: Tiers, prefix: str) -> None:
    store = IdempotencyStore(tiers.state, prefix, min_replicas=tiers.state_replicas)
    workflows = WorkflowCache(tiers.state, prefix)
    # One window for the whole test (it ends in 2286): with minute windows, a minute that turned
    # while the tier was being filled made the last check a new window's first, i.e. a write, which
    # the full tier refused (CI20).
    limiter = RateLimiter(tiers.state, prefix, limits={"Drill": 2}, window_ms=10**13)
    meta = WorkflowMetadata("w1", "ClaimWorkflow", "2024-05-01T12:00:00Z", "c1", "notify")
    payload = {"request_id": "done", "amount": "10.00"}
    # Before: one completed record, one claim in progress, a workflow at version 5, a used-up window.
    done = store.claim("done", payload)
    assert store.complete("done", str(done.owner), {"status": "OPEN"}) is CompleteOutcome.COMPLETED
    running = store.claim("running", {"request_id": "running"})
    assert running.outcome is Outcome.CLAIMED
    assert workflows.set("w1", 5, "RUNNING", meta).applied
    assert [limiter.check("11111111", "Drill").allowed for _ in range(3)] == [True, True, False]
    with tiers.state_admin() as observer:
        evicted_before = evicted_keys(observer)

    with full(tiers.state_admin, prefix) as node:
        with pytest.raises(StateTierFull, match=r"claim of .*bridge:idempotency:new refused"):
            store.claim("new", {"request_id": "new"})
        assert node.exists(store.key("new")) == 0, "a refused claim left a record"
        with pytest.raises(StateTierFull, match="complete of"):
            store.complete("running", str(running.owner), {"status": "OPEN"})
        assert '"in_progress"' in node.get(store.key("running")), "a refused completion changed the record"
        with pytest.raises(StateTierFull, match="workflow set"):
            workflows.set("w1", 6, "DONE", meta)
        with pytest.raises(StateTierFull, match="rate-limit check"):
            limiter.check("22222222", "Drill")
        assert node.keys(f"{limiter.key_base('22222222', 'Drill')}*") == [], "a refused check counted"

        # What only reads still answers, also after a failover's empty script cache (NOSCRIPT).
        node.script_flush()
        replay = store.claim("done", payload)
        assert replay.outcome is Outcome.REPLAY and replay.response == {"status": "OPEN"}
        state = workflows.get("w1")
        assert state is not None and (state.version, state.status) == (5, "RUNNING")
        assert not workflows.set("w1", 3, "STALE", meta).applied
        assert not limiter.check("11111111", "Drill").allowed
        # Release deletes, which a full tier allows (and it frees memory).
        assert store.release("running", str(running.owner)) is ReleaseOutcome.RELEASED
        assert evicted_keys(node) == evicted_before, "the state tier evicted a key"

    # Room again: the refused writes go through now.
    assert store.claim("new", {"request_id": "new"}).outcome is Outcome.CLAIMED
    assert workflows.set("w1", 6, "DONE", meta).applied
