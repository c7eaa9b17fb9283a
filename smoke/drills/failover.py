"""The failover drill: the master fails under load; what do clients see?

Composition: workloads :class:`PlainWrites` and :class:`ConfirmedClaims` (WAIT-confirmed
idempotency claims) x a fault that takes the master away (:class:`KillMaster` on the rehearsal,
:class:`SentinelFailover` on a deployed cluster) x checkers: no confirmed claim lost, the plain
writes' loss counted (asynchronous replication may lose some), the outage within
``down-after-milliseconds + 1.5 s``, and, where the nodes can be asked, exactly one master once
healed. Recovery is the Sentinels naming another master.

The outage is measured on the plain writes, counting only writes that survived (a claim may
legitimately spend its WAIT timeout once a replica is gone, which says nothing about
availability), so a ``SENTINEL FAILOVER`` (the old master keeps answering for a while) is
measured as honestly as a SIGKILL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import redis

from components.settings import SENTINEL_TICK_MS
from smoke.drills.checkers import (
    Checker,
    LateAcknowledgements,
    Lost,
    MasterOverlap,
    NewMasterHeard,
    OneMaster,
    Outage,
    Reconverged,
    Survivors,
)
from smoke.drills.drill import Drill, DrillRun
from smoke.drills.faults import Fault
from smoke.drills.workload import (
    ConfirmedClaims,
    PlainWrites,
    TopologyObserver,
    Workload,
    master_wait_observers,
    roles_probe,
)
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import SentinelClient

# The outage bound: Sentinel's down-after plus this much for the vote, the promotion and the
# clients' rediscovery.
OUTAGE_MARGIN_S = 1.5
# A master cut off from its replicas stops acknowledging writes at most this long after
# min-replicas-max-lag: the replicas' last acknowledgement may have been up to 1 s before the
# cut, the lag is counted in whole seconds (up to 1 s more), and the master recounts its replicas
# in sync once a second (up to 1 s more). See docs/architecture.md, "Partitions".
STEP_DOWN_MARGIN_S = 2.0
# How often the observers look: roles (one INFO per data node) and the topology's shape.
ROLES_INTERVAL_S = 0.1
CONVERGED_INTERVAL_S = 0.25
# How often the Sentinels are asked how long they have waited for the master's answer, and how
# much of down-after that wait must leave once they name a new master: two of Sentinel's timer
# ticks (it judges on a tick, so a wait this close to down-after may already be a down).
SENTINEL_WAIT_INTERVAL_S = 0.05
NEW_MASTER_WAIT_MARGIN_MS = 2 * SENTINEL_TICK_MS


@dataclass(frozen=True)
class DrillResult:
    down_after_ms: int
    rto_seconds: float | None  # None: no write survived after the master went down
    acknowledged_writes: int  # WAIT-confirmed claims
    lost_acknowledged_writes: int
    unconfirmed_claims: int
    plain_writes: int
    lost_plain_writes: int
    errors: int
    old_master: str
    new_master: str
    passed: bool
    detail: str  # the verdicts that failed, or the outage line when all held
    heal_error: str | None = None
    # With claims_outage: the longest stretch without a confirmed claim (None: not measured,
    # or no claim confirmed after the fault).
    claims_outage_seconds: float | None = None
    # How long after the fault writes were still acknowledged and then lost (0: none lost).
    late_ack_seconds: float | None = None
    # How long a Sentinel that switched waited for the new master's first answer at most, and
    # the longest gap between two samples of it (NewMasterHeard: the resolution of that figure).
    new_master_wait_ms: float | None = None
    sentinel_sample_gap_ms: float | None = None
    # With an observer (``Observed``): how long two nodes said master, how long two masters
    # accepted writes at once, and how long the topology took to converge after the fault ended.
    two_masters_seconds: float | None = None
    two_writable_seconds: float | None = None
    reconverged_seconds: float | None = None
    fault: str = ""
    # With an invalidations workload (``ConfirmedInvalidations`` in ``more``): how many
    # invalidations were confirmed, and how many of them were lost on either tier.
    confirmed_invalidations: int | None = None
    lost_confirmed_invalidations: int | None = None

    def as_report(self) -> dict[str, object]:
        return asdict(self)


# The name prefix of the checkers that judge confirmed invalidations, one per tier.
INVALIDATIONS_CHECKER = "confirmed_invalidations"


def outage_limit_s(down_after_ms: int) -> float:
    return down_after_ms / 1000 + OUTAGE_MARGIN_S


def step_down_limit_s(min_replicas_max_lag_s: int) -> float:
    """How long a master cut off from every replica may still acknowledge writes."""
    return min_replicas_max_lag_s + STEP_DOWN_MARGIN_S


@dataclass(frozen=True)
class Observed:
    """What the drill may watch besides the clients (the rehearsal, where every node can be
    asked): ``nodes()`` gives a short-timeout admin client per data node of the tier (for the
    two-master windows), ``converged()`` says whether the whole topology has its full shape.
    ``overlap_limit_s`` bounds the time two masters accept writes at once, ``reconverge_limit_s``
    the time from the fault's end to the full shape."""

    nodes: Callable[[], dict[str, redis.Redis]]
    converged: Callable[[], bool]
    overlap_limit_s: float
    reconverge_limit_s: float

    @classmethod
    def rehearsal(
        cls, cluster: LoopbackCluster, tier: str, overlap_limit_s: float, reconverge_limit_s: float
    ) -> Observed:
        """Observe one tier of the rehearsal: an admin client per node with a 0.25 s timeout and
        no retries (a hung node costs one sample a quarter of a second, not the drill)."""
        no_retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
        clients = {
            n.name: cluster.client(n, socket_timeout=0.25, socket_connect_timeout=0.25, retry=no_retry)
            for n in cluster.tier_nodes(tier)
        }
        return cls(lambda: clients, cluster.converged, overlap_limit_s, reconverge_limit_s)


def run_failover_drill(
    client: SentinelClient,
    prefix: str,
    min_replicas: int,
    fault: Fault,
    *,
    masters: Callable[[], list[str]] | None = None,
    settle_seconds: float = 3.0,
    timeout: float = 60.0,
    outage_allowance_s: float = 0.0,
    claims_outage: bool = False,
    observed: Observed | None = None,
    late_ack_limit_s: float | None = None,
    failover_expected: bool = True,
    more: Sequence[tuple[Workload, Sequence[Checker]]] = (),
) -> DrillResult:
    """Run the composition once. ``min_replicas``: the least number of replicas a claim is
    confirmed by (:mod:`smoke.strategies.replication`). ``masters`` (the addresses of the nodes
    that say they are master) adds the one-master checker; ``fault.heal()`` runs before it is
    asked. ``outage_allowance_s`` widens the outage bound for a fault that adds a known delay of
    its own (a replica's full resync); ``claims_outage`` also judges the claims' availability:
    the longest stretch without a confirmed claim must stay within the bound plus one ``WAIT``
    timeout (the one wait a client spends on a replica that has just gone). ``observed`` adds
    the observers and their checkers (two masters accepting writes, reconvergence);
    ``late_ack_limit_s`` judges how long after the fault lost writes were still acknowledged
    (always measured). ``failover_expected=False`` (a fault that leaves the master in place: a
    replica or Sentinels lost, a short hang) waits for the fault to end instead of for the
    Sentinels to name another master. ``more``: further workloads under the same fault, each with
    the checkers that judge it (e.g. confirmed invalidations, and ``Lost`` on each tier)."""
    name = client.config.master_name
    down_after = int(client.sentinels()[0].sentinel_master(name)["down-after-milliseconds"])
    old = "{}:{}".format(*client.sentinel_master_address())
    seen = {"master": old}

    def new_master_named() -> bool:
        try:
            seen["master"] = "{}:{}".format(*client.sentinel_master_address())
        except Exception:
            return False
        return seen["master"] != old

    plain = PlainWrites(client, prefix)
    claims = ConfirmedClaims(client, prefix, min_replicas)
    survivors = Survivors(client)
    limit = outage_limit_s(down_after) + outage_allowance_s
    checkers: list[Checker] = [
        Lost("confirmed_claims_kept", claims.history, survivors),
        Lost("plain_writes_lost", plain.history, survivors, allowed=True),
        Outage(plain.history, survivors, limit),
    ]
    if claims_outage:
        wait_s = claims.store.wait_timeout_ms / 1000
        checkers.append(Outage(claims.history, survivors, limit + wait_s, name="claims_outage"))
    checkers.append(LateAcknowledgements(plain.history, survivors, late_ack_limit_s))
    sentinels = master_wait_observers(client.sentinels(), name, SENTINEL_WAIT_INTERVAL_S)
    checkers.append(NewMasterHeard([s.samples for s in sentinels], down_after, NEW_MASTER_WAIT_MARGIN_MS))
    workloads: list[Workload] = [claims, plain, *sentinels]
    for workload, judges in more:
        workloads.append(workload)
        checkers.extend(judges)
    if observed is not None:
        roles = TopologyObserver(roles_probe(observed.nodes), ROLES_INTERVAL_S)
        shape = TopologyObserver(observed.converged, CONVERGED_INTERVAL_S)
        workloads += [roles, shape]
        checkers.append(MasterOverlap(roles.samples, observed.overlap_limit_s))
        ended = lambda: getattr(fault, "ended_at", None)  # noqa: E731
        checkers.append(Reconverged(shape.samples, ended, observed.reconverge_limit_s))
    if masters is not None:
        checkers.append(OneMaster(masters))

    def fault_over() -> bool:
        return getattr(fault, "ended_at", None) is not None

    run = Drill(
        workloads,
        fault,
        checkers,
        recovered=new_master_named if failover_expected else fault_over,
        settle_seconds=settle_seconds,
        timeout_seconds=timeout,
    ).run()

    kept, lost_plain, outage = (run.verdict(n) for n in ("confirmed_claims_kept", "plain_writes_lost", "outage"))
    failed = [f"{v.name}: {v.detail}" for v in run.verdicts if not v.passed]
    return DrillResult(
        down_after_ms=down_after,
        rto_seconds=outage.figures["seconds"],
        acknowledged_writes=kept.figures["acknowledged"],
        lost_acknowledged_writes=kept.figures["lost"],
        unconfirmed_claims=claims.history.unconfirmed,
        plain_writes=lost_plain.figures["acknowledged"],
        lost_plain_writes=lost_plain.figures["lost"],
        errors=claims.history.errors + plain.history.errors,
        old_master=old,
        new_master=seen["master"],
        passed=run.passed,
        detail="; ".join(failed) if failed else outage.detail,
        heal_error=run.heal_error,
        claims_outage_seconds=run.verdict("claims_outage").figures["seconds"] if claims_outage else None,
        late_ack_seconds=run.verdict("late_acks").figures["seconds"],
        new_master_wait_ms=_figure(run, "new_master_heard", "longest_wait_ms"),
        sentinel_sample_gap_ms=_figure(run, "new_master_heard", "sample_gap_ms"),
        two_masters_seconds=_figure(run, "master_overlap", "two_masters_seconds"),
        two_writable_seconds=_figure(run, "master_overlap", "two_writable_seconds"),
        reconverged_seconds=_figure(run, "reconverged", "seconds"),
        fault=fault.name,
        **_invalidation_figures(run),
    )


def _invalidation_figures(run: DrillRun) -> dict[str, int]:
    """``confirmed_invalidations`` and ``lost_confirmed_invalidations`` from the ``Lost`` checkers
    named ``confirmed_invalidations_<tier>`` (nothing when the drill had none)."""
    found = [v for v in run.verdicts if v.name.startswith(INVALIDATIONS_CHECKER)]
    if not found:
        return {}
    return {
        "confirmed_invalidations": found[0].figures["acknowledged"],
        "lost_confirmed_invalidations": sum(v.figures["lost"] for v in found),
    }


def _figure(run: DrillRun, checker: str, figure: str) -> float | None:
    """A checker's figure, None when the checker was not part of the run."""
    found = [v for v in run.verdicts if v.name == checker]
    return found[0].figures.get(figure) if found else None
