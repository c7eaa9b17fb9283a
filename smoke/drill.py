"""The failover drill: take the master down under load and measure what clients see.

Two writers run through the failover: one makes WAIT-confirmed idempotency claims, the other
plain ``SET``s. The outage is measured on the plain writes (a claim may legitimately spend its
WAIT timeout once a replica is gone, which says nothing about availability): from the moment the
master is gone to the end of the first plain write that started after it and succeeded. Once a
new master is in place, the drill counts acknowledged writes missing there: confirmed claims must
never be lost; plain writes may be (asynchronous replication), and the count says how many.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from smoke.client import SentinelClient


class ClaimTarget(Protocol):
    """What the drill needs from the idempotency strategy."""

    def claim(self, request_id: str) -> bool:
        """Claim ``request_id``; True only when the claim is confirmed by the replicas."""
        ...

    def present(self, request_ids: list[str]) -> set[str]:
        """The subset of ``request_ids`` whose claim exists on the current master."""
        ...


@dataclass(frozen=True)
class DrillResult:
    down_after_ms: int
    rto_seconds: float
    acknowledged_writes: int  # WAIT-confirmed claims
    lost_acknowledged_writes: int
    unconfirmed_claims: int
    plain_writes: int
    lost_plain_writes: int
    errors: int
    old_master: str
    new_master: str

    def as_report(self) -> dict[str, object]:
        return asdict(self)


def run_failover_drill(
    client: SentinelClient,
    prefix: str,
    target: ClaimTarget,
    force_down: Callable[[], None],
    *,
    settle_seconds: float = 3.0,
    timeout: float = 60.0,
) -> DrillResult:
    """Run the writer, call ``force_down()`` after a second of steady load, wait for the new
    master plus ``settle_seconds``, then verify. ``force_down`` is how the target loses its
    master: SIGKILL locally, ``SENTINEL FAILOVER`` on a deployed cluster."""
    name = client.config.master_name
    down_after = int(client.sentinels()[0].sentinel_master(name)["down-after-milliseconds"])
    old = "{}:{}".format(*client.sentinel_master_address())

    stop = threading.Event()
    confirmed: list[str] = []
    plain: list[str] = []
    successes: list[tuple[float, float]] = []  # (started, finished) of every successful plain write
    counters = {"errors": 0, "unconfirmed": 0}

    def claims() -> None:
        n = 0
        while not stop.is_set():
            request_id = f"drill-{n}"
            n += 1
            try:
                if target.claim(request_id):
                    confirmed.append(request_id)
                else:
                    counters["unconfirmed"] += 1
            except Exception:
                counters["errors"] += 1
                time.sleep(0.02)

    def plain_writes() -> None:
        n = 0
        while not stop.is_set():
            key = f"drill-{n}"
            n += 1
            started = time.monotonic()
            try:
                client.run(lambda r, k=key: r.set(f"{prefix}drill:plain:{k}", k, ex=600), idempotent=True)
                plain.append(key)
                successes.append((started, time.monotonic()))
            except Exception:
                counters["errors"] += 1
                time.sleep(0.02)

    threads = [
        threading.Thread(target=claims, name="drill-claims", daemon=True),
        threading.Thread(target=plain_writes, name="drill-plain-writes", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        force_down()
        # Measured from when the master is gone (force_down returns after the kill), so writes
        # that slipped in before the kill landed do not count as recovery.
        down_at = time.monotonic()
        deadline = down_at + timeout
        new = old
        while time.monotonic() < deadline:
            try:
                new = "{}:{}".format(*client.sentinel_master_address())
            except Exception:
                new = old
            recovered = any(start > down_at for start, _ in successes[-50:])
            if new != old and recovered:
                break
            time.sleep(0.05)
        time.sleep(settle_seconds)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    after = [finished for started, finished in successes if started > down_at]
    rto = (min(after) - down_at) if after else float("inf")
    present = target.present(confirmed)

    def plain_present(keys: list[str]) -> set[str]:
        def exists(r):  # type: ignore[no-untyped-def]
            pipe = r.pipeline(transaction=False)
            for key in keys:
                pipe.exists(f"{prefix}drill:plain:{key}")
            return pipe.execute()

        found = client.run(exists, idempotent=True) if keys else []
        return {key for key, hit in zip(keys, found, strict=True) if hit}

    return DrillResult(
        down_after_ms=down_after,
        rto_seconds=round(rto, 3),
        acknowledged_writes=len(confirmed),
        lost_acknowledged_writes=len(confirmed) - len(present),
        unconfirmed_claims=counters["unconfirmed"],
        plain_writes=len(plain),
        lost_plain_writes=len(plain) - len(plain_present(plain)),
        errors=counters["errors"],
        old_master=old,
        new_master=new,
    )
