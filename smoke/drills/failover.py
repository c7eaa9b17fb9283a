"""The failover drill: take the master down under load and measure what clients see.

Two writers run through the failover: one makes WAIT-confirmed idempotency claims, the other
plain ``SET``s. Once a new master is in place, the drill counts acknowledged writes missing
there: confirmed claims must never be lost; plain writes may be (asynchronous replication), and
the count says how many.

The outage is measured on the plain writes (a claim may legitimately spend its WAIT timeout once
a replica is gone, which says nothing about availability), counting only writes that survived:
a write acknowledged by a deposed master and then lost is no service at all. It is the longest
stretch, from the moment the master is taken down, with no surviving acknowledged write. So a
``SENTINEL FAILOVER`` (the old master keeps answering for a while) is measured as honestly as a
SIGKILL.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import redis

from smoke.strategies.client import SentinelClient


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
    rto_seconds: float | None  # None: no write survived after the master went down
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
    successes: list[tuple[float, str]] = []  # (finished, key) of every acknowledged plain write
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
            try:
                client.run(lambda r, k=key: r.set(f"{prefix}drill:plain:{k}", k, ex=600), idempotent=True)
                plain.append(key)
                successes.append((time.monotonic(), key))
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
        down_at = time.monotonic()
        force_down()
        deadline = down_at + timeout
        new = old
        while time.monotonic() < deadline:
            try:
                new = "{}:{}".format(*client.sentinel_master_address())
            except Exception:
                new = old
            if new != old:
                break
            time.sleep(0.05)
        time.sleep(settle_seconds)
        ended_at = time.monotonic()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    present = target.present(confirmed)
    surviving = existing_keys(client, [f"{prefix}drill:plain:{key}" for key in plain])
    kept = [finished for finished, key in successes if f"{prefix}drill:plain:{key}" in surviving]
    rto = longest_gap(kept, down_at, ended_at)

    return DrillResult(
        down_after_ms=down_after,
        rto_seconds=None if rto is None else round(rto, 3),
        acknowledged_writes=len(confirmed),
        lost_acknowledged_writes=len(confirmed) - len(present),
        unconfirmed_claims=counters["unconfirmed"],
        plain_writes=len(plain),
        lost_plain_writes=len(plain) - len(surviving),
        errors=counters["errors"],
        old_master=old,
        new_master=new,
    )


def longest_gap(finished: list[float], start: float, end: float) -> float | None:
    """The longest stretch in [start, end] without a surviving write (None: none after start)."""
    after = sorted(t for t in finished if t >= start)
    if not after:
        return None
    points = [start, *after]
    return max(b - a for a, b in itertools.pairwise(points))


def existing_keys(client: SentinelClient, keys: list[str]) -> set[str]:
    """The subset of ``keys`` present on the current master (one pipelined round trip)."""
    if not keys:
        return set()

    def exists(r: redis.Redis) -> list[int]:
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return pipe.execute()

    found = client.run(exists, idempotent=True)
    return {key for key, hit in zip(keys, found, strict=True) if hit}
