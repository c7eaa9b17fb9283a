"""Faults beyond SIGKILL (issue 16), drilled on the rehearsal: each is a composition of the drill
framework (smoke/drills): the failover drill's workloads and checkers x a fault from
smoke/drills/faults.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from components.renderers.redis_conf import FULL_SYNC_DELAY_S
from smoke.drills.failover import DrillResult, outage_limit_s, run_failover_drill
from smoke.drills.faults import (
    Fault,
    HangMaster,
    HangReplica,
    HangSentinel,
    KillMaster,
    KillReplica,
    StartAgain,
    Together,
)
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
    print(f"\n{result.fault}: {result}")  # pytest -s
    assert result.heal_error is None, result.heal_error
    assert result.lost_acknowledged_writes == 0, result
    limit = outage_limit_s(result.down_after_ms)
    assert result.rto_seconds is not None and result.rto_seconds <= limit, result.detail
    assert result.passed, result.detail
    # The other Sentinels' waits for the new master are sampled as often with one hung: a probe
    # that asked them one after the other waited out the hung one's timeout (0.5 s) every round,
    # so its gaps were at least that; the observers' 50 ms rounds leave room for a stall below it.
    gap_limit_ms = 0.8 * client.config.sentinel_timeout * 1000
    assert result.sentinel_sample_gap_ms is not None and result.sentinel_sample_gap_ms < gap_limit_ms, result


def state_tier_drill(cluster: LoopbackCluster, state: SentinelClient, fault: Fault, **options: Any) -> DrillResult:
    """The failover drill on the state tier: claims confirmed by at least 1 replica, one master at the end."""
    masters = lambda: [n.address for n in cluster.masters("state")]  # noqa: E731
    result = run_failover_drill(state, f"smoke:{uuid.uuid4().hex[:8]}:", 1, fault, masters=masters, **options)
    print(f"\n{result.fault}: {result}")  # the figures docs/architecture.md quotes (pytest -s)
    return result


# A replica's full resync: the sync delay, then the transfer and the link (a small dataset here).
RESYNC_ALLOWANCE_S = FULL_SYNC_DELAY_S + 1.5


def test_claims_stay_confirmed_with_a_replica_down_and_survive_the_master_failing_next(
    fresh_cluster: LoopbackCluster,
) -> None:
    """A state-tier replica is SIGKILLed (a pod restart), the master is SIGKILLed 4 s later, and
    the replica comes back 0.5 s after that, while the failover runs. Claims meanwhile must be
    confirmed by the replica left in sync (the review: with WAIT for "all 2", every claim was
    UNCONFIRMED while one replica was down), none of them may be lost when that replica is
    promoted, and writes must come back once the restarted replica has resynced: with the
    server's 5 s repl-diskless-sync-delay, min-replicas-to-write refused every write for 5 s
    more (the review measured 11 s with two replicas down)."""
    cluster = fresh_cluster
    with SentinelClient(cluster.client_config("state")) as state:
        state.warm_up()
        fault = Together(
            KillReplica(cluster, "state", restart_after_s=4.5), KillMaster(cluster, tier="state"), gap_s=4.0
        )
        result = state_tier_drill(
            cluster, state, fault, settle_seconds=6.0, outage_allowance_s=RESYNC_ALLOWANCE_S, claims_outage=True
        )
    assert result.heal_error is None, result.heal_error
    assert result.acknowledged_writes > 0 and result.lost_acknowledged_writes == 0, result
    assert result.claims_outage_seconds is not None, result.detail
    assert result.passed, result.detail


def test_a_restarted_replica_that_has_not_synced_is_never_promoted_over_the_claims_it_missed(
    fresh_cluster: LoopbackCluster,
) -> None:
    """The replica-down drill with the race it leaves to chance made certain. A state-tier
    replica is SIGKILLed, and claims are confirmed by the other one alone. Then the replica in
    sync hangs (SIGSTOP, 6 s), the master hangs (8 s), and the killed replica restarts from its
    own files as a replica of the hung master: it cannot sync. While the Sentinels choose, the
    replica in sync is down in their eyes and the restarted one answers, with an offset that says
    nothing (it never synced) and without any claim confirmed since its kill. Promoted, it would
    have the other two resync from it and erase those claims (CI once lost 4,248 of 5,519 so,
    the replica in sync excluded by chance). A replica is promotable only once it has synced
    (start-redis.sh), so the Sentinels find no replica to promote and the master resumes when
    its hang ends: no confirmed claim is lost."""
    cluster = fresh_cluster
    with SentinelClient(cluster.client_config("state")) as state:
        state.warm_up()
        killed = KillReplica(cluster, "state")
        # 4 s after the kill the replica in sync hangs; 1.5 s later (the Sentinels see it down by
        # then) the master hangs, and 0.1 s after that the killed replica is back. Both hangs
        # outlast the Sentinels' choice (the master's down-after, then ~0.5 s).
        master_hangs = Together(HangMaster(cluster, 8.0, tier="state"), StartAgain(killed), gap_s=0.1)
        fault = Together(killed, Together(HangReplica(cluster, 6.0, tier="state"), master_hangs, gap_s=1.5), gap_s=4.0)
        result = state_tier_drill(cluster, state, fault, settle_seconds=3.0, failover_expected=False)
    assert result.heal_error is None, result.heal_error
    assert result.acknowledged_writes > 0 and result.lost_acknowledged_writes == 0, result
    restarted = killed.killed[0]
    assert result.new_master != restarted.address, result
    # Not luck: the Sentinels chose while the restarted replica was unpromotable, and found none.
    aborts = [cluster.log_matching(s, "-failover-abort-no-good-slave") for s in cluster.sentinels]
    assert any(aborts), "\n".join(cluster.log_matching(s, "selected-slave", "switch-master") for s in cluster.sentinels)
    said = cluster.log_matching(restarted, "promotable")
    assert said.count("unpromotable (replica-priority 0)") == 2 and said.count("100: promotable") == 2, said


@pytest.mark.parametrize("seconds", [0, -1, 6])
def test_a_sentinel_timeout_outside_its_range_is_refused_in_words(seconds: float) -> None:
    with pytest.raises(ValueError, match=rf"sentinel_timeout = {seconds}: must be above 0 and at most 5 seconds"):
        ClientConfig(sentinels=[("127.0.0.1", 26379)], sentinel_timeout=seconds)
