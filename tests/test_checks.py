"""Every named check of the smoke suite, one by one, against the real topology.

The runner runs the same checks; this is where each is proven to pass on a healthy cluster, in
a short time, with a one-line detail for the report. (Each strategy's test module proves, in
turn, that its checks fail on a broken implementation.)
"""

from __future__ import annotations

import time

import pytest

from smoke.checks import REGISTRY, Check, CheckContext, run_check
from smoke.checks.runner import load_checks

pytestmark = pytest.mark.redis

load_checks()

# The operation every check of these strategies times for the report's latency table. (Entry and
# claim checks that only inspect keys time nothing; their operations are asserted in
# test_entries/test_claims with all checks sharing one prefix.)
TIMED_BY_EVERY_CHECK = {
    "workflow": ("workflow.set", "workflow.get"),
    "idempotency": ("idempotency.claim",),
    "ratelimit": ("ratelimit.check",),
}


def test_every_strategy_and_the_topology_have_checks() -> None:
    assert {c.strategy for c in REGISTRY} == {"topology", "entry", "claim", "workflow", "idempotency", "ratelimit"}


@pytest.mark.parametrize("item", REGISTRY, ids=lambda c: f"{c.strategy}.{c.name}")
def test_check_passes_quickly_with_a_one_line_detail(item: Check, ctx: CheckContext) -> None:
    started = time.monotonic()
    result = run_check(item, ctx)
    assert result.passed, result.detail
    assert result.detail and "\n" not in result.detail
    assert time.monotonic() - started < 3.0, f"{item.name} took too long"
    if item.strategy in TIMED_BY_EVERY_CHECK:
        assert any(ctx.latencies_ms.get(op) for op in TIMED_BY_EVERY_CHECK[item.strategy])
