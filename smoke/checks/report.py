"""The smoke run's results: the summary table people read and the JSON report tools read."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from smoke.checks import CheckResult
from smoke.drills.failover import DrillResult


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample list."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(latencies_ms: Mapping[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        op: {q: round(percentile(values, p), 3) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))}
        for op, values in sorted(latencies_ms.items())
        if values
    }


@dataclass
class SmokeReport:
    target: str
    down_after_ms: int | None
    server: str | None = None  # "valkey 8.0.1", "redis 7.0.15": what the master said it runs (HELLO)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    checks: list[CheckResult] = field(default_factory=list)
    # The failover drill of the cache tier, and of each tier by name ("cache", "state").
    failover: DrillResult | None = None
    failovers: dict[str, DrillResult] = field(default_factory=dict)
    # The eviction drill's figures (smoke/drills/eviction.py EvictionFigures); None: not run.
    eviction: dict[str, object] | None = None
    # The partition drill (rehearsal only): {"run": False, "reason": ...} when it could not run,
    # else "run": True and the DrillResult's figures (smoke/drills/partition.py). None: not tried.
    partition: dict[str, object] | None = None
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def as_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "started_at": self.started_at,
            "down_after_ms": self.down_after_ms,
            "server": self.server,
            "passed": self.passed,
            "checks": [
                {"strategy": c.strategy, "name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks
            ],
            "failover": _failover_json(self.failover),
            "eviction": self.eviction,
            "failover_by_tier": {tier: _failover_json(result) for tier, result in self.failovers.items()},
            "partition": self.partition,
            "latency_ms": self.latency_ms,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")


def summary_table(checks: Iterable[CheckResult]) -> str:
    """Per-strategy counts and the failed checks, for the end of the run."""
    by_strategy: dict[str, list[CheckResult]] = {}
    for c in checks:
        by_strategy.setdefault(c.strategy, []).append(c)
    lines = [f"{'strategy':<12} {'passed':>6} {'failed':>6}"]
    for strategy, results in by_strategy.items():
        failed = sum(not c.passed for c in results)
        lines.append(f"{strategy:<12} {len(results) - failed:>6} {failed:>6}")
    failures = [c for results in by_strategy.values() for c in results if not c.passed]
    if failures:
        lines.append("")
        lines.append("failed:")
        lines.extend(f"  {c.strategy}.{c.name}: {c.detail}" for c in failures)
    return "\n".join(lines)


def _failover_json(result: DrillResult | None) -> dict[str, object] | None:
    if result is None:
        return None
    return {
        "rto_seconds": result.rto_seconds,
        "acknowledged_writes": result.acknowledged_writes,
        "lost_acknowledged_writes": result.lost_acknowledged_writes,
        "lost_plain_writes": result.lost_plain_writes,
        "plain_writes": result.plain_writes,
        "unconfirmed_claims": result.unconfirmed_claims,
        "errors": result.errors,
        "old_master": result.old_master,
        "new_master": result.new_master,
    }
