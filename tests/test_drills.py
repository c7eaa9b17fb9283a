"""The drill runner's own promises (its parts against real servers run in the smoke and bench tests):
workloads always stop, a failed heal is reported, a checker that cannot look fails instead of crashing,
and the drills are compositions, not loops of their own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from smoke.drills.checkers import NewMasterHeard, Timeline, Verdict, longest_gap
from smoke.drills.drill import Drill
from smoke.drills.workload import History

ROOT = Path(__file__).resolve().parent.parent


class Counting:
    """A workload that only records that it was started and stopped."""

    name = "counting"

    def __init__(self) -> None:
        self.history = History()
        self.events: list[str] = []

    def start(self) -> None:
        self.events.append("start")

    def stop(self) -> None:
        self.events.append("stop")


class Fault:
    name = "toy"

    def __init__(self, *, inject_error: bool = False, heal_error: bool = False) -> None:
        self.inject_error, self.heal_error, self.healed = inject_error, heal_error, False

    def inject(self) -> None:
        if self.inject_error:
            raise RuntimeError("inject failed")

    def heal(self) -> None:
        self.healed = True
        if self.heal_error:
            raise RuntimeError("heal failed")


class Broken:
    name = "broken"

    def check(self, timeline: Timeline) -> Verdict:
        raise ConnectionError("no master to ask")


class Holds:
    name = "holds"

    def check(self, timeline: Timeline) -> Verdict:
        return Verdict(self.name, timeline.recovered_at is not None, "recovered")


def test_workloads_stop_even_when_the_fault_cannot_be_injected() -> None:
    workload = Counting()
    with pytest.raises(RuntimeError, match="inject failed"):
        Drill([workload], Fault(inject_error=True), [], steady_seconds=0, settle_seconds=0).run()
    assert workload.events == ["start", "stop"]


def test_a_failed_heal_is_reported_and_the_checkers_still_judge() -> None:
    fault = Fault(heal_error=True)
    run = Drill([Counting()], fault, [Holds(), Broken()], steady_seconds=0, settle_seconds=0).run()
    assert fault.healed and run.heal_error == "RuntimeError: heal failed"
    assert run.verdict("holds").passed
    broken = run.verdict("broken")
    assert not broken.passed and "no master to ask" in broken.detail
    assert not run.passed


def test_recovery_that_never_comes_is_bounded_and_recorded_as_none() -> None:
    run = Drill(
        [Counting()],
        Fault(),
        [Holds()],
        recovered=lambda: False,
        steady_seconds=0,
        settle_seconds=0,
        timeout_seconds=0.2,
    ).run()
    assert run.timeline.recovered_at is None and not run.passed


def test_the_outage_is_the_longest_stretch_without_a_surviving_write() -> None:
    assert longest_gap([0.5, 1.0, 3.5, 4.0], start=1.0, end=5.0) == pytest.approx(2.5)
    assert longest_gap([0.5, 1.2, 1.4], start=1.0, end=5.0) == pytest.approx(3.6)  # down to the end
    assert longest_gap([0.5], start=1.0, end=5.0) is None  # nothing survived after the fault
    assert longest_gap([9.0], start=1.0, end=5.0) is None  # nor within the drill


@pytest.mark.parametrize("path", ["smoke/drills/failover.py", "smoke/drills/backup.py", "smoke/bench/failover.py"])
def test_each_drill_is_a_composition_without_a_write_or_verify_loop_of_its_own(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "threading" not in imported
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.While)]
    uses = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert uses & {"Drill", "run_failover_drill"}


def test_new_master_heard_counts_its_own_sampling_gap_against_the_limit() -> None:
    """A Sentinel's wait for the new master's answer is seen only at the samples' moments: the
    peak can be one sampling gap above the highest seen, so the gap counts against the limit
    (down-after less the margin), and is reported."""
    def samples(every_s: float, peak_ms: int) -> list[tuple[float, dict[str, tuple[str, int] | None]]]:
        before = [(0.5, {"s1": ("m-old", 0)})]
        after = [(1.0 + i * every_s, {"s1": ("m-new", min(peak_ms, round(i * every_s * 1000)))}) for i in range(6)]
        return before + after + [(9.0, {"s1": None})]  # a sample without an answer is no gap's end

    timeline = Timeline(1.0, None, 10.0)
    dense = NewMasterHeard([samples(0.05, 250)], down_after_ms=1500, margin_ms=200).check(timeline)
    assert dense.passed and dense.figures == {
        "longest_wait_ms": 250,
        "sample_gap_ms": 50,
        "limit_ms": 1300,
        "sentinels_switched": 1,
    }
    sparse = NewMasterHeard([samples(0.5, 1000)], down_after_ms=1500, margin_ms=200).check(timeline)
    assert not sparse.passed and sparse.figures["sample_gap_ms"] == 500
    assert "sampled at most 500 ms apart" in sparse.detail
