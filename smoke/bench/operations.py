"""Cost per operation: every strategy operation next to a raw redis-py ``GET`` and ``SET EX``.

Each operation is prepared outside the timing (the data it reads is written first, the ids it
writes are made up first) and then run through the real strategy object on the shared Sentinel
client, as an application would. Every reply is checked (a get must hit, a write must store, a
claim must be confirmed), so the figures are for the path named and not for a miss or an error.

Two passes: a *counted* pass (round trips by socket writes, commands by ``INFO commandstats``
deltas) and *timed* rounds. The timed rounds interleave every operation and both baselines,
``rounds`` times, so a burst of load from the other tenants of the machine hits all of them
alike instead of one unlucky operation.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis

from smoke.bench.dataset import entries, fill_our_layout
from smoke.bench.measure import (
    BenchError,
    command_calls,
    commands_between,
    count_round_trips,
    percentiles_us,
    time_calls,
)
from smoke.strategies.claims import ClaimCache, sample_claim
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import EntryCache
from smoke.strategies.idempotency import CompleteOutcome, IdempotencyStore, Outcome
from smoke.strategies.ratelimit import RateLimiter
from smoke.strategies.workflow import WorkflowCache, WorkflowMetadata

# The replies each operation must give; anything else means the benchmark measured the wrong path.
Check = Callable[[Any], bool]
POOL = 64  # distinct keys a read operation cycles through


@dataclass(frozen=True)
class Operation:
    name: str  # "<strategy>.<op>", the key in bench.json
    baseline: str  # "get" or "setex": the raw call whose p99 it is held against
    round_trip_target: int
    prepare: Callable[[int], list[Callable[[], Any]]]  # n ready-to-run calls; setup done here
    check: Check


class Workload:
    """The five strategies on one client and key prefix, and the data each operation needs."""

    def __init__(
        self,
        client: SentinelClient,
        prefix: str,
        replicas: int,
        seed: int = 1,
        *,
        state: SentinelClient | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        # Each strategy on its tier: entries and claims on ``client`` (the cache tier), the
        # decisions and the entries' version markers on ``state`` (None: all on ``client``).
        decisions = state or client
        self.entries = EntryCache(client, prefix, markers=state)
        self.claims = ClaimCache(client, prefix)
        self.workflow = WorkflowCache(decisions, prefix)
        self.idempotency = IdempotencyStore(decisions, prefix, min_replicas=replicas)
        # A limit no benchmark reaches: the measured path is the counting one (INCR), not a rejection.
        self.limiter = RateLimiter(decisions, prefix, limits={"GetEntry": 10**12})
        self.seed = seed
        self._next = itertools.count()
        self._sequence = itertools.count(1)

    def fresh_entries(self, n: int) -> list[Any]:
        return list(entries(self.seed, next(self._next) * 1_000_000, n))

    def unique(self, kind: str) -> str:
        return f"{kind}-{uuid.uuid4().hex[:16]}"

    # --- preparations, one per operation --------------------------------------------------------
    def _entry_pool(self) -> list[Any]:
        pool = self.fresh_entries(POOL)
        for entry in pool:
            self.entries.write(entry)
        return pool

    def get_by_id(self, n: int) -> list[Callable[[], Any]]:
        pool = self._entry_pool()
        return [partial(self.entries.get_by_id, pool[i % POOL].id) for i in range(n)]

    def get_by_key(self, n: int) -> list[Callable[[], Any]]:
        pool = self._entry_pool()
        return [partial(self.entries.get_by_key, pool[i % POOL].key_type, pool[i % POOL].key_value) for i in range(n)]

    def write(self, n: int) -> list[Callable[[], Any]]:
        return [partial(self.entries.write, entry) for entry in self.fresh_entries(n)]

    def invalidate(self, n: int) -> list[Callable[[], Any]]:
        batch = self.fresh_entries(n)
        # Entries to invalidate: the cache tier's half is all an invalidation needs to find.
        self.client.run(lambda r: fill_our_layout(r, self.entries, batch, cache_tier_only=True), idempotent=True)
        # As a writer invalidates after its commit: with the version it committed (the recommended
        # form: 2 round trips; without it, an entry only ever filled costs a third).
        return [partial(self.entries.invalidate, entry.id, committed_version=entry.version + 1) for entry in batch]

    def claim_create(self, n: int) -> list[Callable[[], Any]]:
        entry_ids = [self.unique("entry") for _ in range(POOL)]
        return [partial(self.claims.put, sample_claim(self.unique("claim"), entry_ids[i % POOL])) for i in range(n)]

    def _claim_pool(self, per_entry: int) -> list[Any]:
        pool = [sample_claim(self.unique("claim"), self.unique("entry")) for _ in range(POOL // per_entry)]
        pool = [
            c
            for first in pool
            for c in [first, *(sample_claim(self.unique("claim"), first.entry_id) for _ in range(per_entry - 1))]
        ]
        for claim in pool:
            self.claims.put(claim)
        return pool

    def claim_status(self, n: int) -> list[Callable[[], Any]]:
        pool = self._claim_pool(1)
        return [partial(self.claims.status, pool[i % len(pool)].id) for i in range(n)]

    def claim_list(self, n: int) -> list[Callable[[], Any]]:
        pool = self._claim_pool(2)  # a typical entry has one claim, a contested one two
        entry_ids = sorted({c.entry_id for c in pool})
        return [partial(self.claims.list_for_entry, entry_ids[i % len(entry_ids)]) for i in range(n)]

    def _metadata(self, workflow_id: str) -> WorkflowMetadata:
        return WorkflowMetadata(
            workflow_id, "ClaimWorkflow", "2025-11-25T12:00:00.000Z", self.unique("claim"), "NotifyDonorParticipant"
        )

    def workflow_set(self, n: int) -> list[Callable[[], Any]]:
        calls = []
        for _ in range(n):
            workflow_id = self.unique("wf")
            calls.append(
                partial(self.workflow.set, workflow_id, next(self._sequence), "RUNNING", self._metadata(workflow_id))
            )
        return calls

    def workflow_get(self, n: int) -> list[Callable[[], Any]]:
        pool = [self.unique("wf") for _ in range(POOL)]
        for workflow_id in pool:
            self.workflow.set(workflow_id, 1, "RUNNING", self._metadata(workflow_id))
        return [partial(self.workflow.get, pool[i % POOL]) for i in range(n)]

    @staticmethod
    def _request(request_id: str) -> dict[str, Any]:
        return {"operation": "CreateEntry", "request_id": request_id, "ispb": "60701190", "key_type": "EMAIL"}

    def idem_claim(self, n: int) -> list[Callable[[], Any]]:
        ids = [self.unique("req") for _ in range(n)]
        return [partial(self.idempotency.claim, rid, self._request(rid)) for rid in ids]

    def idem_complete(self, n: int) -> list[Callable[[], Any]]:
        calls = []
        for _ in range(n):
            rid = self.unique("req")
            claimed = self.idempotency.claim(rid, self._request(rid))
            if claimed.owner is None:
                raise BenchError(f"idempotency.complete: preparing claim {rid} gave {claimed.outcome}")
            response = {"status": 201, "entry_id": str(uuid.uuid4()), "request_id": rid}
            calls.append(partial(self.idempotency.complete, rid, claimed.owner, response))
        return calls

    def idem_replay(self, n: int) -> list[Callable[[], Any]]:
        pool = []
        for complete in self.idem_complete(POOL):
            if complete() is not CompleteOutcome.COMPLETED:
                raise BenchError("idempotency.replay: preparing a completed request failed")
            pool.append(complete.args[0])
        return [partial(self.idempotency.claim, pool[i % POOL], self._request(pool[i % POOL])) for i in range(n)]

    def ratelimit_check(self, n: int) -> list[Callable[[], Any]]:
        ispbs = [f"{i:08d}" for i in range(POOL)]
        return [partial(self.limiter.check, ispbs[i % POOL], "GetEntry") for i in range(n)]

    def operations(self) -> list[Operation]:
        def is_claimed(result: Any) -> bool:
            return result.outcome is Outcome.CLAIMED

        return [
            Operation("entry.get_by_id", "get", 1, self.get_by_id, lambda e: e is not None),
            Operation("entry.get_by_key", "get", 1, self.get_by_key, lambda e: e is not None),
            # Two round trips each: the markers' tier, then the cache tier (smoke.strategies.entries),
            # each step pipelined with its WAIT.
            Operation("entry.write", "setex", 2, self.write, lambda written: written.outcome == "stored"),
            Operation("entry.invalidate", "setex", 2, self.invalidate, lambda done: done.removed == 2),
            Operation("claim.create", "setex", 1, self.claim_create, lambda put: put.index_size >= 1),
            Operation("claim.status", "get", 1, self.claim_status, lambda status: status == "OPEN"),
            Operation("claim.list", "get", 1, self.claim_list, lambda claims: len(claims) == 2),
            Operation("workflow.set", "setex", 1, self.workflow_set, lambda result: result.applied),
            Operation("workflow.get", "get", 1, self.workflow_get, lambda state: state and state.status == "RUNNING"),
            Operation("idempotency.claim", "setex", 1, self.idem_claim, is_claimed),
            Operation(
                "idempotency.complete",
                "setex",
                1,
                self.idem_complete,
                lambda outcome: outcome is CompleteOutcome.COMPLETED,
            ),
            Operation(
                "idempotency.replay", "get", 1, self.idem_replay, lambda result: result.outcome is Outcome.REPLAY
            ),
            Operation("ratelimit.check", "setex", 1, self.ratelimit_check, lambda decision: decision.allowed),
        ]


def baselines(raw: redis.Redis, prefix: str, value: str) -> list[Operation]:
    """Raw redis-py on its own connection to the master: ``GET`` of an entry-sized value and
    ``SET EX`` of one, the cheapest a one-round-trip operation can be from Python."""
    keys = [f"{prefix}baseline:{i}" for i in range(POOL)]
    for key in keys:
        raw.set(key, value, ex=3600)

    def gets(n: int) -> list[Callable[[], Any]]:
        return [partial(raw.get, keys[i % POOL]) for i in range(n)]

    def setexs(n: int) -> list[Callable[[], Any]]:
        return [partial(raw.set, keys[i % POOL], value, ex=3600) for i in range(n)]

    return [
        Operation("get", "get", 1, gets, lambda v: v is not None),
        Operation("setex", "setex", 1, setexs, lambda ok: ok is True),
    ]


def run_checked(op: Operation, calls: list[Callable[[], Any]], timed: bool) -> list[float]:
    """Run the calls (timed or not) and check every reply."""
    results: list[Any] = []
    wrapped = [partial(_keep, results, call) for call in calls]
    if timed:
        samples = time_calls(wrapped)
    else:
        samples = []
        for call in wrapped:
            call()
    bad = [r for r in results if not op.check(r)]
    if bad:
        raise BenchError(f"{op.name}: {len(bad)} of {len(results)} replies were not the measured path, e.g. {bad[0]!r}")
    return samples


def _keep(results: list[Any], call: Callable[[], Any]) -> None:
    results.append(call())


def count_costs(op: Operation, masters: list[redis.Redis], n: int) -> dict[str, float]:
    """Round trips and commands per call of ``op``, averaged over ``n`` calls; commands summed
    over ``masters`` (each data tier's: an operation may span both)."""
    calls = op.prepare(n)
    before = [command_calls(master) for master in masters]
    with count_round_trips() as trips:
        run_checked(op, calls, timed=False)
    after = [command_calls(master) for master in masters]
    commands = sum(commands_between(b, a) for b, a in zip(before, after, strict=True))
    return {"round_trips": round(trips[0] / n, 2), "commands": round(commands / n, 2)}


def measure(
    ops: list[Operation], masters: list[redis.Redis], *, samples: int, rounds: int, counted: int
) -> dict[str, dict[str, float]]:
    """Round trips, commands (on every tier's master) and p50/p95/p99 for each operation
    (baselines included)."""
    for op in ops:  # warm-up: scripts loaded, pool connections open
        run_checked(op, op.prepare(5), timed=False)
    costs = {op.name: count_costs(op, masters, counted) for op in ops}
    latencies: dict[str, list[float]] = {op.name: [] for op in ops}
    per_round = max(1, samples // rounds)
    for _ in range(rounds):
        for op in ops:
            latencies[op.name] += run_checked(op, op.prepare(per_round), timed=True)
    return {op.name: {**costs[op.name], **percentiles_us(latencies[op.name])} for op in ops}
