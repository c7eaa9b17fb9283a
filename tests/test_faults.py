"""Faults beyond SIGKILL (issue 16), drilled on the rehearsal: each is a composition of the drill
framework (smoke/drills): the failover drill's workloads and checkers x a fault from
smoke/drills/faults.py."""

from __future__ import annotations

import uuid

import pytest

from smoke.drills.failover import outage_limit_s, run_failover_drill
from smoke.drills.faults import HangSentinel, KillMaster, Together
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import ClientConfig, SentinelClient

pytestmark = [pytest.mark.redis]


def test_a_hung_first_sentinel_does_not_stretch_a_master_failover_beyond_the_sigkill_bound(
    fresh_cluster: LoopbackCluster,
) -> None:
    """The client's first Sentinel accepts connections and never answers (SIGSTOP), then the
    master is SIGKILLed. Discovery must not wait on the hung peer: the outage stays within the
    bound of a plain SIGKILL (down-after + 1.5 s). The review measured 14.7-30.4 s: redis-py's
    default retries on the Sentinel connections and a 1 s timeout per try."""
    cluster = fresh_cluster
    with SentinelClient(cluster.client_config()) as client:
        client.warm_up()
        first = client.config.sentinels[0]
        assert (cluster.sentinels[0].host, cluster.sentinels[0].port) == first
        fault = Together(HangSentinel(cluster, 0), KillMaster(cluster))
        result = run_failover_drill(
            client,
            f"smoke:{uuid.uuid4().hex[:8]}:",
            len(cluster.redis_nodes) - 1,
            fault,
            masters=lambda: [n.address for n in cluster.masters()],
        )
    assert result.heal_error is None, result.heal_error
    assert result.lost_acknowledged_writes == 0, result
    limit = outage_limit_s(result.down_after_ms)
    assert result.rto_seconds is not None and result.rto_seconds <= limit, result.detail
    assert result.passed, result.detail


@pytest.mark.parametrize("seconds", [0, -1, 6])
def test_a_sentinel_timeout_outside_its_range_is_refused_in_words(seconds: float) -> None:
    with pytest.raises(ValueError, match=rf"sentinel_timeout = {seconds}: must be above 0 and at most 5 seconds"):
        ClientConfig(sentinels=[("127.0.0.1", 26379)], sentinel_timeout=seconds)
