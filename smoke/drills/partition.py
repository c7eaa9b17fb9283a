"""The partition drill: a tier's master cut off from its replicas and the Sentinels while the
clients still reach it (:class:`smoke.drills.faults.Partition`, rehearsal only: iptables on
loopback), under the failover drill's workloads and checkers, with the observers.

The bounds, derived from the settings (docs/architecture.md, "Partitions"):

- writes acknowledged and then lost: only within ``min-replicas-max-lag + 2 s`` of the cut
  (:func:`smoke.drills.failover.step_down_limit_s`), after which the old master refuses them;
- the outage (no surviving write): the later of the failover's bound (down-after + 1.5 s) and
  that step-down, since the clients write to the old master until it refuses;
- two masters accepting writes at once: at most the step-down less down-after (the new master
  exists only after down-after);
- the topology back in its full shape within ``RECONVERGE_DEPOSED_S`` of the partition's end;
- no confirmed claim lost, exactly one master at the end;
- with ``invalidations`` (the cache and state tiers' clients): entry invalidations run too, and
  not one confirmed invalidation is lost on either tier (its tombstone on the cache tier, its
  version marker on the state tier). While the state master is cut off its replicas cannot
  acknowledge, so an invalidation it takes is answered unconfirmed, never confirmed and lost.
"""

from __future__ import annotations

from smoke.drills.checkers import Checker, Lost, Survivors
from smoke.drills.failover import (
    INVALIDATIONS_CHECKER,
    DrillResult,
    Observed,
    outage_limit_s,
    run_failover_drill,
    step_down_limit_s,
)
from smoke.drills.faults import Partition
from smoke.drills.workload import ConfirmedInvalidations, Workload
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import SentinelClient

# Long enough for the failover (1.5 s down-after on the dev stack, ~3 s in all) and for the old
# master to step down (2 + 2 s) well inside it.
PARTITION_S = 8.0
# A deposed master back in reach (a partition lifted, a hang over): a Sentinel converts it to a
# replica once it has reported the wrong role for 8 s (4 x its 2 s hello period), seen at its
# next INFO (every 10 s at most), then the replica resyncs: 8 + 10 + 2 s.
RECONVERGE_DEPOSED_S = 20.0


def max_lag_s(cluster: LoopbackCluster, tier: str) -> int:
    """The tier's ``min-replicas-max-lag`` as its master runs it."""
    with cluster.client(cluster.masters(tier)[0]) as c:
        return int(c.config_get("min-replicas-max-lag")["min-replicas-max-lag"])


def invalidations_under_fault(
    cache: SentinelClient, state: SentinelClient, prefix: str
) -> tuple[Workload, list[Checker]]:
    """Confirmed entry invalidations as one more workload of a drill, judged on both tiers."""
    workload = ConfirmedInvalidations(cache, prefix, markers=state)
    return workload, [
        Lost(f"{INVALIDATIONS_CHECKER}_cache", workload.history, Survivors(cache)),
        Lost(f"{INVALIDATIONS_CHECKER}_state", workload.markers, Survivors(state)),
    ]


def run_partition_drill(
    cluster: LoopbackCluster,
    client: SentinelClient,
    prefix: str,
    tier: str = "state",
    seconds: float = PARTITION_S,
    *,
    invalidations: tuple[SentinelClient, SentinelClient] | None = None,
) -> DrillResult:
    """Cut the ``tier``'s master off for ``seconds`` under load; ``client`` is that tier's client.
    ``invalidations``: the (cache, state) clients to run confirmed invalidations with as well.
    The iptables chain is removed whatever happens (the fault is a context manager)."""
    more = [invalidations_under_fault(*invalidations, prefix)] if invalidations else []
    step_down = step_down_limit_s(max_lag_s(cluster, tier))
    down_after_ms = int(client.sentinels()[0].sentinel_master(client.config.master_name)["down-after-milliseconds"])
    with Partition(cluster, seconds, tier) as fault:
        return run_failover_drill(
            client,
            prefix,
            1,
            fault,
            masters=lambda: [n.address for n in cluster.masters(tier)],
            settle_seconds=seconds,
            outage_allowance_s=max(step_down - outage_limit_s(down_after_ms), 0.0),
            observed=Observed.rehearsal(
                cluster, tier, max(step_down - down_after_ms / 1000, 0.0), RECONVERGE_DEPOSED_S
            ),
            late_ack_limit_s=step_down,
            more=more,
        )
