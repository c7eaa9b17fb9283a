"""All five strategies in one running workload, each on its tier, while both tiers' masters are
killed under them."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import Counter

import pytest
import redis

from smoke.drills.checkers import NewMasterHeard, Timeline
from smoke.drills.failover import NEW_MASTER_WAIT_MARGIN_MS, SENTINEL_WAIT_INTERVAL_S
from smoke.drills.workload import master_wait_observers
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.claims import ClaimCache, sample_claim
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import EntryCache, sample_entry
from smoke.strategies.idempotency import IdempotencyStore
from smoke.strategies.ratelimit import RateLimiter
from smoke.strategies.workflow import WorkflowCache, WorkflowMetadata

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]


def test_every_strategy_survives_a_master_failure_on_each_tier_mid_run(fresh_cluster: LoopbackCluster) -> None:
    cluster = fresh_cluster
    prefix = f"smoke:{uuid.uuid4().hex[:8]}:"
    with SentinelClient(cluster.client_config()) as client, SentinelClient(cluster.client_config("state")) as state:
        entries, claims = EntryCache(client, prefix, markers=state), ClaimCache(client, prefix)
        workflow, limiter = WorkflowCache(state, prefix), RateLimiter(state, prefix, default_limit=100_000)
        store = IdempotencyStore(state, prefix)
        stop = threading.Event()
        errors: Counter[str] = Counter()
        done: list[tuple[float, str]] = []
        # (highest version confirmed before the read was sent, version the read found)
        reads: list[tuple[int, int]] = []
        confirmed = [0]

        def set_workflow(n: int) -> None:
            meta = WorkflowMetadata("w-1", "ClaimWorkflow", "2026-11-25T00:00:00Z", "c", "a")
            if workflow.set("w-1", n, "RUNNING", meta).confirmed:
                confirmed[0] = n

        def workload() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                steps = {
                    "entry": lambda n=n: entries.write(sample_entry("e-1", version=n)),
                    "claim": lambda n=n: claims.put(sample_claim(f"c-{n}", "e-1")),
                    "workflow": lambda n=n: set_workflow(n),
                    "ratelimit": lambda: limiter.check("12345678", "CreateEntry"),
                    "idempotency": lambda n=n: store.claim(f"r-{n}", {"n": n}),
                }
                for name, step in steps.items():
                    try:
                        step()
                        done.append((time.monotonic(), name))
                    except redis.RedisError as exc:
                        kind = type(exc).__name__
                        if isinstance(exc, redis.ResponseError):
                            kind += ":" + str(exc).split()[0]
                        errors[kind] += 1
                try:
                    floor = confirmed[0]
                    state = workflow.get("w-1")
                    if state is not None:
                        reads.append((floor, state.version))
                except redis.RedisError:
                    errors["read"] += 1

        worker = threading.Thread(target=workload, daemon=True)
        # How long each Sentinel waits for the new master's first answer, on both tiers.
        waits = {
            tier: master_wait_observers(c.sentinels(), c.config.master_name, SENTINEL_WAIT_INTERVAL_S)
            for tier, c in (("cache", client), ("state", state))
        }
        observers = [observer for per_tier in waits.values() for observer in per_tier]
        for observer in observers:
            observer.start()
        worker.start()
        try:
            time.sleep(1.0)
            for tier in cluster.tiers:
                cluster.kill_node(cluster.masters(tier)[0], signal.SIGKILL)
            killed_at = time.monotonic()
            for tier in cluster.tiers:
                cluster.wait_for(f"a new {tier} master", lambda t=tier: len(cluster.masters(t)) == 1, timeout=30)
            time.sleep(3.0)
        finally:
            stop.set()
            worker.join(timeout=30)
            for observer in observers:
                observer.stop()

        # One failover per tier: no Sentinel saw the new master down and failed it over again
        # (down-after below DOWN_AFTER_FLOOR_MS did, in 1 run of 7: writes refused for seconds).
        for tier in cluster.tiers:
            name = cluster.tier_master_name(tier)
            for sentinel in cluster.sentinels:
                switches = cluster.log_matching(sentinel, f"+switch-master {name} ").splitlines()
                assert len(switches) == 1, (tier, sentinel.name, switches)
            down_after = int(state.sentinels()[0].sentinel_master(name)["down-after-milliseconds"])
            heard = NewMasterHeard([o.samples for o in waits[tier]], down_after, NEW_MASTER_WAIT_MARGIN_MS)
            verdict = heard.check(Timeline(killed_at, None, time.monotonic()))
            assert verdict.passed and verdict.figures["sentinels_switched"] == len(cluster.sentinels), verdict

        # Every strategy works again on the new master, after the kill.
        recovered = {name for at, name in done if at > killed_at + 0.5}
        assert recovered == {"entry", "claim", "workflow", "ratelimit", "idempotency"}, (recovered, errors)
        # Only connection-level failures surfaced (nothing crashed on a reply it did not expect).
        # (NOREPLICAS while the remaining replica re-attaches: min-replicas-to-write at work.)
        expected = {"ConnectionError", "OutcomeUnknown", "TimeoutError", "MasterNotFoundError", "read"}
        assert set(errors) <= expected | {"NoReplicasInSync:NOREPLICAS", "SentinelsUnreachable"}, errors
        # No read ever found less than a version already confirmed, across the failover included.
        # (A version applied but not yet confirmed may be taken back by the failover: CI once read
        # 1258 three times, then 1257. That is why set() confirms, and why this counts only those.)
        assert reads and confirmed[0] > 0
        assert [(floor, seen) for floor, seen in reads if seen < floor] == []
        # Nothing written through the failover lacks a TTL, on either tier.
        for tier in cluster.tiers:
            with cluster.client(cluster.masters(tier)[0]) as c:
                keys = list(c.scan_iter(match=f"{prefix}*", count=1000))
                assert keys, tier
                assert [k for k in keys if c.ttl(k) == -1] == [], tier
