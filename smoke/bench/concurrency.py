"""Concurrency: rate-limit exactness under concurrent clients, and mixed-workload throughput.

*Exactness*: ``clients`` threads, each with a Sentinel client (and so a connection) of its own,
hammer one (ISPB, operation) with ``attempts`` checks each, more than the limit in total; the
number allowed must equal the limit exactly (the check is one atomic script, so it should). The
run starts at least ``margin`` seconds before the end of the master's current one-minute window,
so all of it falls into one window.

*Throughput*: 1, 4 and 16 threads share one Sentinel client (one pool), as the threads of an
application do, and run a mix of operations for a fixed time. The mix follows what a DICT
directory sees: lookups dominate, writes are rare.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis

from smoke.bench.dataset import entries
from smoke.bench.measure import BenchError, percentiles_us
from smoke.strategies.claims import ClaimCache, sample_claim
from smoke.strategies.client import ClientConfig, SentinelClient
from smoke.strategies.entries import EntryCache
from smoke.strategies.ratelimit import RateLimiter
from smoke.strategies.workflow import WorkflowCache, WorkflowMetadata

# (operation, weight in %): the mixed workload.
MIX = (
    ("entry.get_by_id", 35),
    ("entry.get_by_key", 20),
    ("ratelimit.check", 20),
    ("claim.status", 8),
    ("workflow.get", 7),
    ("entry.write", 5),
    ("claim.create", 3),
    ("workflow.set", 2),
)


def rate_limit_exactness(
    config: ClientConfig, prefix: str, *, clients: int, attempts: int, limit: int, margin: float = 5.0
) -> dict[str, Any]:
    """Allowed vs limit with ``clients`` concurrent clients on one (ISPB, operation)."""
    if clients * attempts <= limit:
        raise BenchError(f"{clients} x {attempts} attempts cannot exceed the limit {limit}")
    ispb = f"{random.randrange(10**8):08d}"
    barrier = threading.Barrier(clients)
    windows: Counter[int] = Counter()
    decided: Counter[bool] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    with SentinelClient(config) as probe:
        # Wait for a fresh window if this one ends within ``margin`` (the master's clock decides).
        seconds, micros = probe.run(lambda r: r.time(), idempotent=True)
        into = (seconds % 60) + micros / 1e6
        if 60 - into < margin:
            time.sleep(60 - into + 0.2)

    def hammer() -> None:
        with SentinelClient(config) as client:
            limiter = RateLimiter(client, prefix, limits={"CreateEntry": limit})
            limiter.check("00000000", "Warmup")  # connection open and script loaded before the start
            barrier.wait()
            for _ in range(attempts):
                try:
                    decision = limiter.check(ispb, "CreateEntry")
                except redis.RedisError as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    decided[decision.allowed] += 1
                    if decision.allowed:
                        windows[decision.window] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=hammer, name=f"ratelimit-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "clients": clients,
        "attempts": clients * attempts,
        "limit": limit,
        "allowed": decided[True],
        "rejected": decided[False],
        "errors": len(errors),
        "windows": len(windows),
        "exact": decided[True] == limit and len(windows) == 1 and not errors,
        "seconds": round(time.perf_counter() - started, 2),
    }


class MixedWorkload:
    """The operations of :data:`MIX` on prepared data, shared by every thread."""

    def __init__(
        self, client: SentinelClient, prefix: str, seed: int = 3, *, state: SentinelClient | None = None
    ) -> None:
        # Each strategy on its tier: entries and claims on ``client`` (the cache tier), the
        # decisions and the entries' version markers on ``state`` (None: all on ``client``).
        self.entries = EntryCache(client, prefix, markers=state)
        self.claims = ClaimCache(client, prefix)
        self.workflow = WorkflowCache(state or client, prefix)
        self.limiter = RateLimiter(state or client, prefix, limits={"GetEntry": 10**12})
        self.pool = list(entries(seed, 0, 500))
        for entry in self.pool:
            self.entries.write(entry)
        self.claim_ids = []
        for entry in self.pool[:100]:
            claim = sample_claim(f"claim-{uuid.uuid4().hex[:12]}", entry.id)
            self.claims.put(claim)
            self.claim_ids.append(claim.id)
        self.workflow_ids = [f"wf-{uuid.uuid4().hex[:12]}" for _ in range(100)]
        for workflow_id in self.workflow_ids:
            self.workflow.set(workflow_id, 1, "RUNNING", self.metadata(workflow_id))
        self.versions = iter(range(2, 10**12))  # next() on a range iterator is atomic under the GIL
        names, weights = zip(*MIX, strict=True)
        self.names, self.weights = list(names), list(weights)

    @staticmethod
    def metadata(workflow_id: str) -> WorkflowMetadata:
        return WorkflowMetadata(workflow_id, "ClaimWorkflow", "2025-11-25T12:00:00.000Z", "claim", "Notify")

    def operation(self, name: str, rng: random.Random) -> Callable[[], Any]:
        entry = rng.choice(self.pool)
        if name == "entry.get_by_id":
            return lambda: self.entries.get_by_id(entry.id)
        if name == "entry.get_by_key":
            return lambda: self.entries.get_by_key(entry.key_type, entry.key_value)
        if name == "ratelimit.check":
            return lambda: self.limiter.check(entry.account.ispb, "GetEntry")
        if name == "claim.status":
            return lambda: self.claims.status(rng.choice(self.claim_ids))
        if name == "workflow.get":
            return lambda: self.workflow.get(rng.choice(self.workflow_ids))
        if name == "entry.write":
            return lambda: self.entries.write(entry)
        if name == "claim.create":
            return lambda: self.claims.put(sample_claim(f"claim-{uuid.uuid4().hex[:12]}", entry.id))
        workflow_id = rng.choice(self.workflow_ids)
        return lambda: self.workflow.set(workflow_id, next(self.versions), "RUNNING", self.metadata(workflow_id))

    def run(self, threads: int, seconds: float) -> dict[str, Any]:
        """Every thread runs the mix as fast as it can for ``seconds``."""
        latencies, errors, elapsed = self.timed_run(threads, seconds)
        return {
            "threads": threads,
            "seconds": round(elapsed, 2),
            "operations": len(latencies),
            "errors": errors,
            "ops_per_second": round(len(latencies) / elapsed),
            **(percentiles_us(latencies) if latencies else {}),
        }

    def timed_run(
        self, threads: int, seconds: float, start: Callable[[], None] = lambda: None
    ) -> tuple[list[float], int, float]:
        """The mix on ``threads`` threads for ``seconds`` once ``start()`` returns (the threads are
        up and ready by then): every call's latency in microseconds, the errors, the elapsed time."""
        stop = threading.Event()
        errors: list[int] = [0] * threads
        latencies: list[list[float]] = [[] for _ in range(threads)]
        barrier = threading.Barrier(threads + 1)

        def worker(index: int) -> None:
            rng = random.Random(index)
            barrier.wait()
            while not stop.is_set():
                call = self.operation(rng.choices(self.names, self.weights)[0], rng)
                started = time.perf_counter()
                try:
                    call()
                except redis.RedisError:
                    errors[index] += 1
                    continue
                latencies[index].append((time.perf_counter() - started) * 1e6)

        workers = [threading.Thread(target=worker, args=(i,), name=f"mixed-{i}") for i in range(threads)]
        for thread in workers:
            thread.start()
        try:
            start()
        except BaseException:
            stop.set()  # the threads stop as soon as the barrier lets them go
            raise
        finally:
            barrier.wait()
        started = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for thread in workers:
            thread.join()
        elapsed = time.perf_counter() - started
        return [value for values in latencies for value in values], sum(errors), elapsed


def measure_concurrency(
    config: ClientConfig,
    client: SentinelClient,
    prefix: str,
    *,
    thread_counts: list[int],
    seconds: float,
    exactness_attempts: int,
    state: SentinelClient | None = None,
) -> dict[str, Any]:
    """``config``: the client configuration of the tier the rate limiter runs on (the state tier);
    ``client``/``state``: the cache and the state tier's clients of the mixed workload."""
    exactness = rate_limit_exactness(config, prefix, clients=8, attempts=exactness_attempts, limit=100)
    workload = MixedWorkload(client, prefix, state=state)
    return {
        "ratelimit_exactness": exactness,
        "mix": {name: weight for name, weight in MIX},
        "throughput": [workload.run(threads, seconds) for threads in thread_counts],
    }
