"""Partitions, hangs, lost replicas and Sentinels, fast restarts and a rolling restart (issue 16),
drilled on one shared rehearsal: each drill is the failover drill's workloads (plain writes and
WAIT-confirmed claims on the state tier, where the claims live) x a fault from
smoke/drills/faults.py x the checkers (no confirmed claim lost, the plain writes' loss measured,
the outage within a bound derived from the settings, exactly one master at the end, the topology
back in its full shape within a bound, and, where it matters, how long two masters accepted
writes). Every fault heals back to the full shape, so the next drill starts from it; the bounds
and the figures measured are in docs/architecture.md, "Faults drilled"."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

from components.renderers.redis_conf import FULL_SYNC_DELAY_S
from smoke.drills.failover import DrillResult, Observed, outage_limit_s, run_failover_drill, step_down_limit_s
from smoke.drills.faults import (
    Fault,
    HangMaster,
    KillMaster,
    KillReplica,
    KillSentinels,
    Partition,
    RollingRestart,
    Together,
    iptables_problem,
)
from smoke.drills.partition import RECONVERGE_DEPOSED_S, max_lag_s, run_partition_drill
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import SentinelClient

pytestmark = [pytest.mark.redis]

TIER = "state"
# The documented bound (docs/architecture.md, "Partitions"): with min-replicas-max-lag 2 a master
# cut off from its replicas stops acknowledging writes within 2 + 2 s. With the old 10 the drill
# measured 11.1 s (and two masters accepting writes for 8 s).
STEP_DOWN_BOUND_S = 4.0
# Any other fault: every Sentinel's INFO period (10 s) plus a resync.
RECONVERGE_S = 15.0
# The master hang: under the client's 3 s socket timeout, over the dev stack's 1.5 s down-after.
HANG_S = 2.7
# Sentinel's random delay before it starts a failover (SENTINEL_MAX_DESYNC in sentinel.c).
FAILOVER_DESYNC_S = 1.0
# A Sentinel's own start (the start script asks its peers and the masters) before it can vote.
SENTINEL_START_S = 1.0
# A handover (preStop: SENTINEL FAILOVER) waits for the promoted replica's next INFO, once a
# second during a failover, on top of what a failure takes after down-after.
HANDOVER_ALLOWANCE_S = 1.0
# A replica's full resync after a restart: the sync delay, then the transfer and the link.
RESYNC_ALLOWANCE_S = FULL_SYNC_DELAY_S + 1.5


@pytest.fixture(scope="module")
def shared(cluster: LoopbackCluster) -> LoopbackCluster:
    """One topology for every drill of the module (conftest's module-scoped ``cluster``): each
    fault heals back to the full shape."""
    return cluster


@pytest.fixture(scope="module")
def state(shared: LoopbackCluster) -> Iterator[SentinelClient]:
    with SentinelClient(shared.client_config(TIER)) as client:
        client.warm_up()
        yield client


def require_iptables() -> None:
    """A partition needs iptables and root: under CI=true its absence fails, elsewhere it skips."""
    problem = iptables_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the partition drills cannot run: {problem}")
    pytest.skip(f"the partition drills cannot run: {problem}")


def down_after_ms(client: SentinelClient) -> int:
    return int(client.sentinels()[0].sentinel_master(client.config.master_name)["down-after-milliseconds"])


def drill(
    cluster: LoopbackCluster,
    client: SentinelClient,
    fault: Fault,
    *,
    outage_allowance_s: float = 0.0,
    overlap_limit_s: float = 0.0,
    reconverge_limit_s: float = RECONVERGE_S,
    late_ack_limit_s: float | None = None,
    failover_expected: bool = True,
    settle_seconds: float = 2.0,
) -> DrillResult:
    result = run_failover_drill(
        client,
        f"smoke:{uuid.uuid4().hex[:8]}:",
        1,
        fault,
        masters=lambda: [n.address for n in cluster.masters(TIER)],
        settle_seconds=settle_seconds,
        outage_allowance_s=outage_allowance_s,
        observed=Observed.rehearsal(cluster, TIER, overlap_limit_s, reconverge_limit_s),
        late_ack_limit_s=late_ack_limit_s,
        failover_expected=failover_expected,
    )
    print(f"\n{result.fault}: {result}")
    assert result.heal_error is None, result.heal_error
    assert result.acknowledged_writes > 0 and result.lost_acknowledged_writes == 0, result
    assert cluster.converged(), f"{result.fault}: the topology did not come back to its full shape"
    return result


def test_the_partition_cuts_peers_off_and_lets_clients_through(shared: LoopbackCluster) -> None:
    """The rule the partition drills rest on: the pods connect from their own addresses
    (bind-source-addr), the test's clients from 127.0.0.1, and the chain drops only the former;
    the chain is gone after heal."""
    require_iptables()
    cluster = shared
    master = cluster.masters(TIER)[0]
    with cluster.client(master) as c:
        peers = {
            cl["addr"].rsplit(":", 1)[0] for cl in c.client_list() if "S" in cl["flags"] or "sentinel" in cl["name"]
        }
    assert peers and "127.0.0.1" not in peers, f"peers connect from {peers}: bind-source-addr is not in effect"

    def reaches(source: str | None) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            if source:
                s.bind((source, 0))
            try:
                s.connect((master.host, master.port))
            except OSError:
                return False
            return True

    replica = next(n for n in cluster.tier_nodes(TIER) if n is not master)
    with Partition(cluster, 30, TIER) as fault:
        fault.inject()
        assert fault.chain.exists()
        assert reaches(None), "a client from 127.0.0.1 must still reach the cut-off master"
        assert not reaches(replica.host) and not reaches(cluster.sentinels[0].host)
        fault.heal()
        assert not fault.chain.exists()
    assert reaches(replica.host)


def test_a_partitioned_master_stops_acknowledging_within_the_documented_bound(
    shared: LoopbackCluster, state: SentinelClient
) -> None:
    """The state master is cut off from its replicas and the Sentinels for 8 s while the clients
    still reach it. The Sentinels promote a replica after down-after; until the old master
    notices its replicas are gone (min-replicas-max-lag) it acknowledges plain writes that are
    lost when it rejoins. That window must stay within 2 + 2 s (the review: 11 s, with 38 % of
    the writes lost, at min-replicas-max-lag 10), no confirmed claim may be lost, and two masters
    may accept writes at once only for the step-down bound less the Sentinels' detection
    (smoke/drills/partition.py derives each bound). Confirmed entry invalidations run through it
    too, and none may be lost on either tier."""
    require_iptables()
    # The bound is fixed here, not read from the running config, so a default set back to 10
    # fails this test; the drill derives the same figure from the config it runs.
    assert step_down_limit_s(max_lag_s(shared, TIER)) == STEP_DOWN_BOUND_S
    with SentinelClient(shared.client_config()) as cache:
        result = run_partition_drill(
            shared, state, f"smoke:{uuid.uuid4().hex[:8]}:", TIER, invalidations=(cache, state)
        )
    print(f"\n{result.fault}: {result}")
    assert result.heal_error is None, result.heal_error
    assert result.acknowledged_writes > 0 and result.lost_acknowledged_writes == 0, result
    # Entry invalidations ran too: every one answered confirmed kept its tombstone and its marker.
    assert result.confirmed_invalidations and result.lost_confirmed_invalidations == 0, result
    assert result.late_ack_seconds is not None and result.late_ack_seconds <= STEP_DOWN_BOUND_S, result
    assert result.passed, result.detail
    assert shared.converged()


def test_a_master_hung_under_the_client_timeout_loses_no_confirmed_claim(
    shared: LoopbackCluster, state: SentinelClient
) -> None:
    """SIGSTOP of the state master for 2.7 s (under the client's 3 s socket timeout, over the
    dev stack's 1.5 s down-after: the Sentinels fail it over while it is frozen, and it wakes up
    as a master nobody names until they demote it)."""
    result = drill(
        shared,
        state,
        HangMaster(shared, HANG_S, TIER),
        overlap_limit_s=step_down_limit_s(max_lag_s(shared, TIER)),
        # The write in flight waits out the hang, then the client finds the new master. That
        # master accepts writes (min-replicas-to-write 1) once the other replica follows it, and
        # that replica may need a full resync: Sentinel picks the replica whose offset it saw
        # highest in an INFO up to a second old, so the other one can be ahead of it (CI saw
        # 4.28 s against the 3.2 s of hang + 0.5 s).
        outage_allowance_s=max(HANG_S + 0.5 + RESYNC_ALLOWANCE_S - outage_limit_s(down_after_ms(state)), 0.0),
        reconverge_limit_s=RECONVERGE_DEPOSED_S,
    )
    assert result.passed, result.detail


@pytest.mark.parametrize("count", [1, 2])
def test_replicas_lost_for_a_while_lose_nothing_and_writes_return_after_the_resync(
    shared: LoopbackCluster, state: SentinelClient, count: int
) -> None:
    """One or two state replicas SIGKILLed and back 3 s later. With one down, claims stay
    confirmed by the other; with both down, min-replicas-to-write refuses writes until one is
    back and resynced (3 s + the resync)."""
    result = drill(
        shared,
        state,
        KillReplica(shared, TIER, restart_after_s=3.0, count=count),
        failover_expected=False,
        outage_allowance_s=(3.0 + RESYNC_ALLOWANCE_S) if count == 2 else 0.0,
    )
    assert result.passed, result.detail


@pytest.mark.parametrize(("count", "master_fails"), [(1, True), (2, False), (2, True)])
def test_sentinels_lost_with_and_without_a_master_failure(
    shared: LoopbackCluster, state: SentinelClient, count: int, master_fails: bool
) -> None:
    """``count`` of 3 Sentinels SIGKILLed and back 5 s later; with ``master_fails`` the state
    master is SIGKILLed at the same time. One Sentinel lost: the other two still make the quorum
    and the outage is a plain SIGKILL's. Two lost: nothing changes for the clients while the
    master lives; with the master down too no failover is possible until the Sentinels are back
    (5 s), then the usual one."""
    sentinels = KillSentinels(shared, count, restart_after_s=5.0)
    fault: Fault = Together(sentinels, KillMaster(shared, tier=TIER)) if master_fails else sentinels
    allowance = 0.0
    if master_fails:
        # Each Sentinel that sees the master down starts its failover after a random delay of up
        # to 1 s (SENTINEL_MAX_DESYNC, so they do not all ask for votes at once); the first one
        # wins. With three Sentinels the earliest of three draws is short, which the plain
        # SIGKILL bound counts on; with fewer the draw can take the whole second (the review
        # measured up to 3.03 s with one Sentinel lost).
        allowance = FAILOVER_DESYNC_S
    if count == 2 and master_fails:
        allowance += 5.0 + SENTINEL_START_S
    result = drill(
        shared, state, fault, failover_expected=master_fails, outage_allowance_s=allowance, settle_seconds=3.0
    )
    assert result.passed, result.detail


def test_the_old_master_restarted_at_once_after_sigkill_is_no_second_master(
    shared: LoopbackCluster, state: SentinelClient
) -> None:
    """The state master SIGKILLed and its pod back 0.8 s later (inside the 0.4-1.2 s the review
    drew from), before the Sentinels have even marked it down: it must wait for the failover,
    rejoin as a replica, and never accept writes beside the new master."""
    # Back before down-after, the pod may be master again without any failover (the Sentinels
    # never saw it down for long enough), or be failed over: either is right. So the drill waits
    # for the restart, not for another master to be named (that wait ran its whole 60 s timeout
    # whenever there was no failover), then covers a failover and a resync.
    down_after_s = down_after_ms(state) / 1000
    result = drill(
        shared,
        state,
        KillMaster(shared, tier=TIER, restart_after_s=0.8),
        outage_allowance_s=RESYNC_ALLOWANCE_S,
        failover_expected=False,
        settle_seconds=outage_limit_s(down_after_ms(state)) + RESYNC_ALLOWANCE_S + down_after_s,
    )
    assert result.two_writable_seconds == 0.0, result
    assert result.passed, result.detail


def test_a_rolling_restart_through_the_prestop_hook(shared: LoopbackCluster, state: SentinelClient) -> None:
    """The state tier's pods restarted 2, 1, 0 as a StatefulSet update does, each through the
    rendered preStop hook and readiness: the master hands over before it stops, so the outage
    is a handover's, not a failure's, and no second master accepts writes."""
    result = drill(shared, state, RollingRestart(shared, TIER, (2, 1, 0)), outage_allowance_s=HANDOVER_ALLOWANCE_S)
    assert result.two_writable_seconds == 0.0, result
    assert result.passed, result.detail
