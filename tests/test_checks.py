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
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import SentinelClient

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


def test_a_client_listing_one_sentinel_of_three_fails_the_topology_check_naming_both_counts(
    cluster: LoopbackCluster,
) -> None:
    """A single address in front of three Sentinels (a Service) would let the confirmation fence
    take one Sentinel's view for a majority; the fence now fails closed, and this check says why."""
    first = cluster.sentinels[0]
    one = {"sentinels": [(first.host, first.port)], "watch_sentinels": False}
    item = next(c for c in REGISTRY if (c.strategy, c.name) == ("topology", "client_lists_every_sentinel"))
    with (
        SentinelClient(cluster.client_config("cache", **one)) as cache,
        SentinelClient(cluster.client_config("state", **one)) as state,
    ):
        result = run_check(item, CheckContext(client=cache, prefix="smoke:one-sentinel:", state_client=state))
    assert not result.passed
    assert "the client lists 1 Sentinel address(es)" in result.detail and "the Sentinels know 3" in result.detail
