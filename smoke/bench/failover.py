"""Failover: ``runs`` forced master failures (SIGKILL) with writers running, through the drill.

Each run is the failover drill composition (:mod:`smoke.drills.failover`) that ``make local``
runs: a plain-``SET`` writer and a WAIT-confirmed idempotency-claim writer while the
:class:`~smoke.drills.faults.KillMaster` fault SIGKILLs the current master. Healing the fault
starts the killed node again and waits until it has rejoined as a replica, so every run starts
from 1 master + 2 replicas.
"""

from __future__ import annotations

import math
import signal
import statistics
import uuid
from collections.abc import Callable
from typing import Any

from smoke.bench.measure import BenchError
from smoke.checks import SMOKE_KEY_PREFIX
from smoke.drills.failover import DrillResult, outage_limit_s, run_failover_drill
from smoke.drills.faults import KillMaster
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import SentinelClient


def measure_failover(
    cluster: LoopbackCluster,
    client: SentinelClient,
    runs: int,
    say: Callable[[str], None] = print,
    tier: str = "cache",
) -> tuple[dict[str, Any], list[DrillResult]]:
    """``{"down_after_ms", "outage_seconds", "lost_plain_writes", "lost_confirmed_claims"}`` and
    the per-run drill results, SIGKILLing the master of ``tier`` (``client`` is that tier's)."""
    replicas = len(cluster.tier_nodes(tier)) - 1
    results: list[DrillResult] = []
    for run in range(runs):
        prefix = f"{SMOKE_KEY_PREFIX}bench:failover:{uuid.uuid4().hex[:8]}:"
        result = run_failover_drill(client, prefix, replicas, KillMaster(cluster, signal.SIGKILL, tier=tier))
        if result.heal_error is not None:
            raise BenchError(f"failover {run + 1}: the killed master did not rejoin: {result.heal_error}")
        results.append(result)
        outage = "none" if result.rto_seconds is None else f"{result.rto_seconds:.2f} s"
        say(
            f"  failover {run + 1}/{runs} ({tier} tier): outage {outage}; "
            f"lost {result.lost_plain_writes}/{result.plain_writes} plain, "
            f"{result.lost_acknowledged_writes}/{result.acknowledged_writes} confirmed claims; "
            f"{result.old_master} -> {result.new_master}"
        )
    return (
        {
            "down_after_ms": results[0].down_after_ms if results else None,
            # None: no write survived after the kill (no finite outage to report).
            "outage_seconds": [r.rto_seconds for r in results],
            "lost_plain_writes": sum(r.lost_plain_writes for r in results),
            "lost_confirmed_claims": sum(r.lost_acknowledged_writes for r in results),
        },
        results,
    )


def summary(failover: dict[str, Any], results: list[DrillResult]) -> dict[str, Any]:
    """Median and max outage against the target, and the denominators of the lost counts."""
    outages = [math.inf if s is None else s for s in failover["outage_seconds"]]
    limit = outage_limit_s(failover["down_after_ms"])
    median = statistics.median(outages)
    return {
        "median": median,
        "max": max(outages),
        "limit": limit,
        "met": median <= limit and failover["lost_confirmed_claims"] == 0,
        "plain_writes": sum(r.plain_writes for r in results),
        "confirmed_claims": sum(r.acknowledged_writes for r in results),
        "unconfirmed_claims": sum(r.unconfirmed_claims for r in results),
    }
