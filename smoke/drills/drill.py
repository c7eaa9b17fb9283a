"""The drill runner: one workload x fault x checker composition, start to verdicts.

``Drill(...).run()``:

1. start every workload;
2. after ``steady_seconds`` of load, inject the fault;
3. poll ``recovered`` (when given) until it holds or ``timeout_seconds`` pass, then let the
   workloads run ``settle_seconds`` more;
4. stop the workloads (also when anything above raised), heal the fault;
5. ask every checker for its verdict over the histories.

Every wait is bounded; a heal that fails is reported in the run, and the checkers still judge
(a checker that cannot look fails).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smoke.drills.checkers import Checker, Timeline, Verdict
from smoke.drills.faults import Fault
from smoke.drills.workload import Workload

POLL_S = 0.05


@dataclass(frozen=True)
class DrillRun:
    fault: str
    timeline: Timeline
    verdicts: list[Verdict]
    heal_error: str | None

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def verdict(self, name: str) -> Verdict:
        return next(v for v in self.verdicts if v.name == name)


@dataclass
class Drill:
    workloads: Sequence[Workload]
    fault: Fault
    checkers: Sequence[Checker]
    recovered: Callable[[], bool] | None = None
    steady_seconds: float = 1.0
    settle_seconds: float = 3.0
    timeout_seconds: float = 60.0

    def run(self) -> DrillRun:
        started: list[Workload] = []
        try:
            for workload in self.workloads:
                workload.start()
                started.append(workload)
            time.sleep(self.steady_seconds)
            injected_at = time.monotonic()
            self.fault.inject()
            recovered_at = self._await_recovery(injected_at + self.timeout_seconds)
            time.sleep(self.settle_seconds)
            ended_at = time.monotonic()
        finally:
            for workload in started:
                workload.stop()
        heal_error, healed_at = None, None
        try:
            self.fault.heal()
            healed_at = time.monotonic()
        except Exception as exc:
            heal_error = f"{type(exc).__name__}: {exc}"
        timeline = Timeline(injected_at, recovered_at, ended_at, healed_at)
        verdicts = [_judge(checker, timeline) for checker in self.checkers]
        return DrillRun(self.fault.name, timeline, verdicts, heal_error)

    def _await_recovery(self, deadline: float) -> float | None:
        if self.recovered is None:
            return time.monotonic()
        while time.monotonic() < deadline:
            if self.recovered():
                return time.monotonic()
            time.sleep(POLL_S)
        return None


def _judge(checker: Checker, timeline: Timeline) -> Verdict:
    """The checker's verdict; a checker that cannot look (no master to ask) fails, it does not crash."""
    try:
        return checker.check(timeline)
    except Exception as exc:
        return Verdict(checker.name, False, f"could not check: {type(exc).__name__}: {exc}")
