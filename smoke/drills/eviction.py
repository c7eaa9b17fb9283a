"""The eviction drill: the cache tier under memory pressure must not cost a single decision.

Issue 13 measured it on one ``allkeys-lru`` instance: enough cache traffic evicts completed
idempotency records (a second PIX execution), workflow versions (a late writer regresses them)
and rate-limit counters (a second burst). With decisions on the state tier (``noeviction``,
:mod:`smoke.strategies.tiers`) the same traffic must evict only cache keys. The drill's parts,
composed by :class:`smoke.drills.drill.Drill` like the others (:func:`run_eviction_drill` does it):

- :class:`Decisions` (a workload): idempotency claims + completions, workflow version bumps and
  rate-limit checks through the real strategies on the client it is given (the state tier's;
  for the reproduction, the cache tier's), recording every decision it was told;
- :class:`CacheFlood` (the fault: memory pressure): ``EntryCache.write`` traffic on the cache
  tier until its ``evicted_keys`` grew by ``factor`` (10) times the keys it holds at capacity;
- :class:`DecisionsKept` (the checker): every completed record replays (none answers CLAIMED
  again), no workflow regressed (``get()`` returns the newest version and an older ``set`` is
  refused), every rate-limit window allowed exactly ``min(checks, limit)`` (the checker's check
  lands in the window of the burst: the drill picks a window length with room for the whole run,
  and a check that lands later is reported as not judged and fails), the state tier
  evicted nothing, the cache tier evicted at least ``factor`` x its capacity. Its figures
  (:class:`EvictionFigures`, ``to_dict()`` for the JSON report) say how many decisions were
  checked and lost.

Every loop is bounded in count and in time (``max_*``, ``timeout_s``); a bound reached before
the target is reported (``target_reached`` false fails the verdict), never waited out.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from smoke.drills.checkers import Timeline, Verdict
from smoke.drills.drill import Drill, DrillRun
from smoke.drills.workload import JOIN_TIMEOUT_S, Ack, History
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import EntryCache, sample_entry
from smoke.strategies.idempotency import CompleteOutcome, IdempotencyStore, Outcome
from smoke.strategies.ratelimit import RateLimiter
from smoke.strategies.workflow import WorkflowCache, WorkflowMetadata

# The cache tier must evict at least this many times the keys it holds at capacity.
EVICTION_FACTOR = 10
# How often the flood reads the cache master's INFO stats and DBSIZE.
SAMPLE_S = 0.05
RATE_OPERATION = "EvictionDrill"
# The drill's rate-limit windows: at least this long, and chosen when the drill starts so that the
# window it starts in has RATE_ROOM_MS left (``window_with_room``). Windows are aligned on the
# server's epoch clock, so a fixed length is crossed by a drill that happens to start near its end:
# the checker's second burst then lands in a fresh window and proves nothing (CI of stop 24: all
# 150 ISPBs re-checked in the next window, the reproduction saw no evicted counter). The room is
# far above the drill's own bounds (flood 60 s, workload 120 s); the counters' TTL stays one window.
RATE_WINDOW_MS = 900_000
RATE_ROOM_MS = 600_000


def window_with_room(now_ms: int, room_ms: int = RATE_ROOM_MS, shortest_ms: int = RATE_WINDOW_MS) -> int:
    """The shortest window length from ``shortest_ms`` on whose window holding ``now_ms`` (epoch
    ms, the server's clock) still has ``room_ms`` to run. Each extra millisecond of length moves
    ``now_ms`` to another place in its window, so a length with room turns up within a few tries
    when ``room_ms`` is well below ``shortest_ms``; the search is bounded and says so if it fails."""
    if not 0 < room_ms < shortest_ms:
        raise ValueError(f"room_ms = {room_ms!r}: must be positive and below shortest_ms ({shortest_ms})")
    for window_ms in range(shortest_ms, shortest_ms + 10_000):
        if window_ms - now_ms % window_ms >= room_ms:
            return window_ms
    raise RuntimeError(f"no window length from {shortest_ms} ms leaves {room_ms} ms after {now_ms}")


def server_ms(node: redis.Redis) -> int:
    """The node's clock (``TIME``) in epoch milliseconds: the clock the rate limiter's windows use."""
    seconds, micros = node.time()
    return int(seconds) * 1000 + int(micros) // 1000


def evicted_keys(node: redis.Redis) -> int:
    """``evicted_keys`` from ``INFO stats`` of one node (since its start)."""
    return int(node.info("stats")["evicted_keys"])


class EvictionMeter:
    """``evicted_keys`` of one tier's master, counted from :meth:`start` on. ``master()`` opens
    a client to the tier's current master (an admin connection: ``INFO`` and ``DBSIZE``)."""

    def __init__(self, master: Callable[[], redis.Redis]) -> None:
        self.master = master
        self.base: int | None = None

    def read(self) -> int:
        with self.master() as node:
            return evicted_keys(node)

    def start(self) -> None:
        self.base = self.read()

    def delta(self) -> int:
        if self.base is None:
            raise RuntimeError("EvictionMeter.delta() before start()")
        return self.read() - self.base


@dataclass
class DecisionHistory(History):
    """What :class:`Decisions` was told, per strategy. ``acknowledged`` holds the completed
    idempotency records (the keys that must replay)."""

    # request id -> the response text complete() stored (COMPLETED only)
    completed: dict[str, str] = field(default_factory=dict)
    # workflow id -> the newest version set() applied
    newest: dict[str, int] = field(default_factory=dict)
    # (ispb, window) -> [checks, allowed]
    windows: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def count(self, ispb: str, window: int, allowed: bool) -> None:
        tally = self.windows.setdefault((ispb, window), [0, 0])
        tally[0] += 1
        tally[1] += int(allowed)


class Decisions:
    """A continuous workload of decisions on ``client``: iteration ``n`` claims and completes
    request ``n``, sets workflow ``n // bumps`` to version ``n % bumps + 2`` and checks the rate
    limit of ISPB ``n // (rate_limit + 1)``. So each workflow gets ``bumps`` versions and each
    ISPB's window its limit plus one refused check in a burst, and then nothing more until the
    checker asks again: what an LRU cache evicts first (the least recently used), as a record
    of a request that ran long ago is. ``window_ms``: the rate-limit window's length (the drill
    passes one with room for the whole run, :func:`window_with_room`). Stops at ``stop()``,
    after ``max_iterations`` or after ``timeout_s``, whichever comes first; ``pause_s`` between
    iterations spreads them over the flood. Only confirmed outcomes are recorded as decisions
    (an UNCONFIRMED claim or completion is counted, not judged)."""

    name = "decisions"

    def __init__(
        self,
        client: SentinelClient,
        prefix: str,
        *,
        replicas: int,
        bumps: int = 4,
        rate_limit: int = 3,
        max_iterations: int = 600,
        pause_s: float = 0.002,
        timeout_s: float = 120.0,
        window_ms: int = RATE_WINDOW_MS,
    ) -> None:
        self.prefix = prefix
        self.store = IdempotencyStore(client, prefix, min_replicas=replicas)
        self.workflows = WorkflowCache(client, prefix)
        self.limiter = RateLimiter(client, prefix, limits={RATE_OPERATION: rate_limit}, window_ms=window_ms)
        self.bumps, self.rate_limit = bumps, rate_limit
        self.max_iterations, self.pause_s, self.timeout_s = max_iterations, pause_s, timeout_s
        self.history = DecisionHistory()
        self.iterations = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drill-decisions", daemon=True)

    def request_id(self, n: int) -> str:
        return f"evict-{n}"

    def payload(self, request_id: str) -> dict[str, Any]:
        return {"request_id": request_id, "operation": "CreateClaim", "amount": "10.00"}

    def workflow_id(self, n: int) -> str:
        return f"evict-wf-{n // self.bumps}"

    def ispb(self, n: int) -> str:
        return f"{90000000 + n // (self.rate_limit + 1):08d}"

    def metadata(self, workflow_id: str, version: int) -> WorkflowMetadata:
        return WorkflowMetadata(
            workflow_id, "ClaimWorkflow", "2024-05-01T12:00:00Z", f"claim-{workflow_id}", f"step-{version}"
        )

    def iteration(self, n: int) -> None:
        """One claim + completion, one workflow bump, one rate-limit check; what each answered."""
        history = self.history
        request_id = self.request_id(n)
        claim = self.store.claim(request_id, self.payload(request_id))
        if claim.outcome is Outcome.CLAIMED and claim.owner is not None:
            response = {"request_id": request_id, "status": "OPEN", "n": n}
            done = self.store.complete(request_id, claim.owner, response)
            if done is CompleteOutcome.COMPLETED:
                history.completed[request_id] = _response_text(response)
                history.acknowledged.append(Ack(self.store.key(request_id), time.monotonic()))
            else:
                history.unconfirmed += 1
        else:
            history.unconfirmed += 1
        workflow_id, version = self.workflow_id(n), n % self.bumps + 2
        if self.workflows.set(workflow_id, version, "RUNNING", self.metadata(workflow_id, version)).applied:
            history.newest[workflow_id] = max(version, history.newest.get(workflow_id, 0))
        ispb = self.ispb(n)
        decision = self.limiter.check(ispb, RATE_OPERATION)
        history.count(ispb, decision.window, decision.allowed)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        for n in range(self.max_iterations):
            if self._stop.is_set() or time.monotonic() >= deadline:
                return
            try:
                self.iteration(n)
            except Exception:
                self.history.errors += 1
            self.iterations = n + 1
            self._stop.wait(self.pause_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=JOIN_TIMEOUT_S)


class CacheFlood:
    """Memory pressure, the drill's fault: ``threads`` writers ``EntryCache.write`` distinct
    entries (~1 KB, 3 keys each) on the cache tier until its ``evicted_keys`` grew by ``factor``
    x its capacity (the most keys ``DBSIZE`` showed once it evicted), or ``max_writes`` /
    ``timeout_s`` / ``max_errors`` failed writes is reached first (``reached`` says which;
    ``last_error`` what failed: an ``OOM`` from an ``allkeys-lru`` tier means its ``maxmemory``
    is below what it cannot evict, e.g. a replication backlog as large). ``inject()`` returns
    when it ends; nothing to heal (the flood's entries are cache keys, evicted or expired in
    5 min)."""

    name = "cache flood"

    def __init__(
        self,
        cache: SentinelClient,
        cache_master: Callable[[], redis.Redis],
        prefix: str,
        *,
        factor: int = EVICTION_FACTOR,
        threads: int = 2,
        max_writes: int = 500_000,
        max_errors: int = 100,
        timeout_s: float = 60.0,
    ) -> None:
        # The flood's version markers stay on the cache tier (``markers=cache``, allowed under the
        # smoke prefix): the fault is memory pressure on the cache alone, and 10x the cache's
        # capacity in distinct writes would otherwise put as many markers on the small state tier
        # (one per entry written within 5 min). That markers on the state tier keep the entries'
        # order through this eviction is proved in tests/test_entries.py.
        self.entries = EntryCache(cache, prefix, markers=cache)
        self.cache_master = cache_master
        self.factor, self.threads, self.timeout_s = factor, threads, timeout_s
        self.max_writes, self.max_errors = max_writes, max_errors
        self.writes = 0
        self.errors = 0
        self.last_error: str | None = None
        self.capacity_keys = 0
        self.evicted = 0
        self.reached = False
        self.seconds = 0.0
        self._lock = threading.Lock()
        self._done = threading.Event()

    def _writer(self, tid: int) -> None:
        n = 0
        while not self._done.is_set():
            with self._lock:
                if self.writes >= self.max_writes:
                    break
                self.writes += 1
            entry_id = f"flood-{tid}-{n}"
            try:
                self.entries.write(sample_entry(entry_id, key_value=f"{entry_id}@example.com.br"))
            except Exception as exc:
                with self._lock:
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    if self.errors >= self.max_errors:
                        break
                time.sleep(0.01)
            n += 1

    def inject(self) -> None:
        started = time.monotonic()
        deadline = started + self.timeout_s
        workers = [threading.Thread(target=self._writer, args=(t,), daemon=True) for t in range(self.threads)]
        try:
            with self.cache_master() as node:
                base = evicted_keys(node)
                for worker in workers:
                    worker.start()
                while time.monotonic() < deadline and any(w.is_alive() for w in workers):
                    self.evicted = evicted_keys(node) - base
                    if self.evicted > 0:
                        self.capacity_keys = max(self.capacity_keys, int(node.dbsize()))
                    if self.capacity_keys and self.evicted >= self.factor * self.capacity_keys:
                        self.reached = True
                        break
                    time.sleep(SAMPLE_S)
        finally:
            self._done.set()
            for worker in workers:
                if worker.is_alive() or worker.ident is not None:
                    worker.join(timeout=JOIN_TIMEOUT_S)
            self.seconds = time.monotonic() - started

    def heal(self) -> None:
        """Nothing: the flood's keys are cache entries."""


@dataclass(frozen=True)
class EvictionFigures:
    """What the eviction drill measured (``to_dict()``: the JSON report's ``eviction`` block)."""

    evicted_on_cache: int
    evicted_on_state: int
    cache_capacity_keys: int
    cache_writes: int
    cache_write_errors: int
    target_reached: bool
    decisions_checked: int
    decisions_lost: int
    idempotency_records: int
    claimed_again: int  # completed records that answered CLAIMED (a second execution)
    replays_lost: int  # completed records that did not replay (CLAIMED again or anything else)
    workflows: int
    workflows_regressed: int
    ratelimit_windows: int
    ratelimit_windows_wrong: int  # windows that did not allow exactly min(checks, limit)
    ratelimit_windows_unverified: int  # ISPBs whose second burst fell in a later window: not judged, fails
    workload_errors: int
    unconfirmed: int
    check_errors: int  # decisions the checker could not ask again (an error): not verified, fails

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DecisionsKept:
    """The checker: re-asks every decision :class:`Decisions` was told, on the same client, and
    reads both tiers' eviction counters (see the module docstring). ``figures`` holds the
    :class:`EvictionFigures` of the last check. Its own calls are bounded by what was recorded
    (one claim per completed record, one get and one set per workflow, one check per ISPB)."""

    name = "decisions_kept"

    def __init__(
        self,
        decisions: Decisions,
        flood: CacheFlood,
        cache_meter: EvictionMeter,
        state_meter: EvictionMeter,
        *,
        factor: int = EVICTION_FACTOR,
    ) -> None:
        self.decisions, self.flood, self.factor = decisions, flood, factor
        self.cache_meter, self.state_meter = cache_meter, state_meter
        self.figures: EvictionFigures | None = None

    def check(self, timeline: Timeline) -> Verdict:
        d, history = self.decisions, self.decisions.history
        claimed_again = replays_lost = regressed = errors = unverified = 0
        for request_id, text in history.completed.items():
            try:
                again = d.store.claim(request_id, d.payload(request_id))
            except redis.RedisError:
                errors += 1
                continue
            if again.outcome in (Outcome.CLAIMED, Outcome.UNCONFIRMED):
                claimed_again += 1
            if again.outcome is not Outcome.REPLAY or again.response_json != text:
                replays_lost += 1
        for workflow_id, newest in history.newest.items():
            try:
                state = d.workflows.get(workflow_id)
                older = d.workflows.set(workflow_id, 1, "STALE", d.metadata(workflow_id, 1))
            except redis.RedisError:
                errors += 1
                continue
            if state is None or state.version != newest or older.applied:
                regressed += 1
        bursts: dict[str, set[int]] = {}
        for ispb, window in history.windows:
            bursts.setdefault(ispb, set()).add(window)
        for ispb in sorted(bursts):
            try:
                decision = d.limiter.check(ispb, RATE_OPERATION)  # one more, after the flood
            except redis.RedisError:
                errors += 1
                continue
            if decision.window not in bursts[ispb]:  # a fresh window allows it whatever was evicted
                unverified += 1
                continue
            history.count(ispb, decision.window, decision.allowed)
        wrong = sum(1 for checks, allowed in history.windows.values() if allowed != min(checks, d.rate_limit))
        evicted_cache, evicted_state = self.cache_meter.delta(), self.state_meter.delta()
        checked = len(history.completed) + len(history.newest) + len(history.windows)
        figures = EvictionFigures(
            evicted_on_cache=evicted_cache,
            evicted_on_state=evicted_state,
            cache_capacity_keys=self.flood.capacity_keys,
            cache_writes=self.flood.writes,
            cache_write_errors=self.flood.errors,
            target_reached=self.flood.reached,
            decisions_checked=checked,
            decisions_lost=replays_lost + regressed + wrong,
            idempotency_records=len(history.completed),
            claimed_again=claimed_again,
            replays_lost=replays_lost,
            workflows=len(history.newest),
            workflows_regressed=regressed,
            ratelimit_windows=len(history.windows),
            ratelimit_windows_wrong=wrong,
            ratelimit_windows_unverified=unverified,
            workload_errors=history.errors,
            unconfirmed=history.unconfirmed,
            check_errors=errors,
        )
        self.figures = figures
        enough = figures.cache_capacity_keys > 0 and evicted_cache >= self.factor * figures.cache_capacity_keys
        passed = (
            enough
            and checked > 0
            and figures.decisions_lost == 0
            and evicted_state == 0
            and errors == 0
            and unverified == 0
        )
        flood_error = f"; the flood stopped on {self.flood.last_error}" if not enough and self.flood.last_error else ""
        detail = (
            f"{figures.decisions_lost} of {checked} decisions lost ({claimed_again} records claimed again, "
            f"{regressed} workflows regressed, {wrong} rate-limit windows off their limit); evicted: "
            f"cache {evicted_cache} ({evicted_cache / max(1, figures.cache_capacity_keys):.1f}x its "
            f"{figures.cache_capacity_keys} keys, needed {self.factor}x), state {evicted_state}; "
            f"{errors} decisions could not be asked again, {unverified} rate-limit windows had ended before "
            f"the second burst (not judged){flood_error}"
        )
        return Verdict(self.name, passed, detail, figures.to_dict())


@dataclass(frozen=True)
class EvictionDrillRun:
    run: DrillRun
    figures: EvictionFigures

    @property
    def passed(self) -> bool:
        return self.run.passed


def run_eviction_drill(
    cache: SentinelClient,
    state: SentinelClient,
    cache_master: Callable[[], redis.Redis],
    state_master: Callable[[], redis.Redis],
    prefix: str,
    *,
    replicas: int,
    factor: int = EVICTION_FACTOR,
    decisions: dict[str, Any] | None = None,
    flood: dict[str, Any] | None = None,
) -> EvictionDrillRun:
    """The whole drill: decisions on ``state`` (pass ``cache`` and ``cache_master`` again to
    reproduce issue 13 on one evicting instance), the flood on ``cache``, the checker's verdict
    and figures. ``replicas``: what the idempotency store waits for on the decisions' tier;
    ``decisions``/``flood``: keyword overrides of :class:`Decisions` and :class:`CacheFlood`.
    Keys live under ``prefix`` plus a fresh run id, so runs never judge each other's keys."""
    run_prefix = f"{prefix}eviction-{uuid.uuid4().hex[:8]}:"
    cache_meter, state_meter = EvictionMeter(cache_master), EvictionMeter(state_master)
    with state_master() as node:
        window_ms = window_with_room(server_ms(node))
    workload = Decisions(state, run_prefix, replicas=replicas, **{"window_ms": window_ms, **(decisions or {})})
    pressure = CacheFlood(cache, cache_master, run_prefix, factor=factor, **(flood or {}))
    checker = DecisionsKept(workload, pressure, cache_meter, state_meter, factor=factor)
    cache_meter.start()
    state_meter.start()
    drill = Drill([workload], pressure, [checker], steady_seconds=0.2, settle_seconds=0.0, timeout_seconds=0.0)
    run = drill.run()
    if checker.figures is None:  # the checker could not look: its verdict says why
        raise RuntimeError(f"eviction drill: no figures ({run.verdict(checker.name).detail})")
    return EvictionDrillRun(run, checker.figures)


def _response_text(response: dict[str, Any]) -> str:
    """The text ``IdempotencyStore.complete`` stores for ``response`` (and a replay returns)."""
    return json.dumps(response, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
