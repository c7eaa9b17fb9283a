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

from collections.abc import Callable
from dataclasses import asdict, dataclass

from smoke.drills.checkers import Checker, Lost, OneMaster, Outage, Survivors
from smoke.drills.drill import Drill
from smoke.drills.faults import Fault
from smoke.drills.workload import ConfirmedClaims, PlainWrites
from smoke.strategies.client import SentinelClient

# The outage bound: Sentinel's down-after plus this much for the vote, the promotion and the
# clients' rediscovery.
OUTAGE_MARGIN_S = 1.5


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

    def as_report(self) -> dict[str, object]:
        return asdict(self)


def outage_limit_s(down_after_ms: int) -> float:
    return down_after_ms / 1000 + OUTAGE_MARGIN_S


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
) -> DrillResult:
    """Run the composition once. ``min_replicas``: the least number of replicas a claim is
    confirmed by (:mod:`smoke.strategies.replication`). ``masters`` (the addresses of the nodes
    that say they are master) adds the one-master checker; ``fault.heal()`` runs before it is
    asked. ``outage_allowance_s`` widens the outage bound for a fault that adds a known delay of
    its own (a replica's full resync); ``claims_outage`` also judges the claims' availability:
    the longest stretch without a confirmed claim must stay within the bound plus one ``WAIT``
    timeout (the one wait a client spends on a replica that has just gone)."""
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
    if masters is not None:
        checkers.append(OneMaster(masters))
    run = Drill(
        [claims, plain],
        fault,
        checkers,
        recovered=new_master_named,
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
    )
