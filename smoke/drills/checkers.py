"""Checkers: what must hold after a drill, judged from the workloads' histories.

Each checker's ``check(timeline)`` gives a :class:`Verdict`: whether its property held, the
figures it measured and one line saying so. Checkers look at the topology only to read it (which
acknowledged keys exist on the current master, which nodes say they are master).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from smoke.drills.workload import BATCH, Dataset, History, NodeRole, SentinelSight
from smoke.strategies.client import SentinelClient


@dataclass(frozen=True)
class Timeline:
    """When the fault was injected, when recovery was seen (None: never) and when the workloads
    stopped, all ``time.monotonic()``."""

    injected_at: float
    recovered_at: float | None
    ended_at: float
    # When fault.heal() returned (None: it failed, or the drill did not record it).
    healed_at: float | None = None


@dataclass(frozen=True)
class Verdict:
    name: str
    passed: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


class Checker(Protocol):
    name: str

    def check(self, timeline: Timeline) -> Verdict: ...


def existing_keys(client: SentinelClient, keys: list[str]) -> set[str]:
    """The subset of ``keys`` present on the current master (pipelined ``EXISTS``)."""
    if not keys:
        return set()

    def exists(r: redis.Redis) -> list[int]:
        found: list[int] = []
        for start in range(0, len(keys), BATCH * 10):
            pipe = r.pipeline(transaction=False)
            for key in keys[start : start + BATCH * 10]:
                pipe.exists(key)
            found.extend(pipe.execute())
        return found

    found = client.run(exists, idempotent=True)
    return {key for key, hit in zip(keys, found, strict=True) if hit}


class Survivors:
    """Which acknowledged keys of each history exist on the current master, looked up once per
    history and shared by the checkers that need it."""

    def __init__(self, client: SentinelClient) -> None:
        self.client = client
        self._cache: dict[int, set[str]] = {}

    def of(self, history: History) -> set[str]:
        if id(history) not in self._cache:
            self._cache[id(history)] = existing_keys(self.client, history.keys)
        return self._cache[id(history)]


def longest_gap(finished: list[float], start: float, end: float) -> float | None:
    """The longest stretch in [start, end] without a surviving write (None: none after start)."""
    after = sorted(t for t in finished if start <= t <= end)
    if not after:
        return None
    # The stretch after the last write counts too: an outage that lasts to the end is one.
    points = [start, *after, end]
    return max(b - a for a, b in itertools.pairwise(points))


class Lost:
    """Acknowledged writes of a history missing on the current master. With ``allowed`` the
    loss is measured, not judged (plain writes are asynchronous); without it, one lost
    acknowledged write fails the drill."""

    def __init__(self, name: str, history: History, survivors: Survivors, *, allowed: bool = False) -> None:
        self.name, self.history, self.survivors, self.allowed = name, history, survivors, allowed

    def check(self, timeline: Timeline) -> Verdict:
        acknowledged = len(self.history.acknowledged)
        lost = acknowledged - len(self.survivors.of(self.history))
        return Verdict(
            self.name,
            self.allowed or lost == 0,
            f"{lost} of {acknowledged} acknowledged writes lost",
            {"acknowledged": acknowledged, "lost": lost},
        )


class Outage:
    """The longest stretch from the fault on with no *surviving* acknowledged write of a
    history (a write acknowledged by a deposed master and then lost was no service at all).
    Passes when it is finite and at most ``limit_s``."""

    def __init__(self, history: History, survivors: Survivors, limit_s: float, *, name: str = "outage") -> None:
        self.history, self.survivors, self.limit_s, self.name = history, survivors, limit_s, name

    def check(self, timeline: Timeline) -> Verdict:
        kept = self.survivors.of(self.history)
        finished = [ack.at for ack in self.history.acknowledged if ack.key in kept]
        gap = longest_gap(finished, timeline.injected_at, timeline.ended_at)
        seconds = None if gap is None else round(gap, 3)
        shown = "no surviving write" if seconds is None else f"{seconds:.2f} s"
        return Verdict(
            self.name,
            seconds is not None and seconds <= self.limit_s,
            f"outage {shown} (limit {self.limit_s:.1f} s)",
            {"seconds": seconds, "limit_seconds": self.limit_s},
        )


class OneMaster:
    """Exactly one node says it is master once the fault is healed."""

    name = "one_master"

    def __init__(self, masters: Callable[[], list[str]]) -> None:
        self.masters = masters

    def check(self, timeline: Timeline) -> Verdict:
        found = self.masters()
        return Verdict(self.name, len(found) == 1, f"masters: {', '.join(found) or 'none'}", {"masters": found})


class LateAcknowledgements:
    """How long after the fault writes were still acknowledged that did not survive: the window
    in which a deposed (cut-off, hung, killed) master acknowledged what the cluster then lost.
    From the fault to the last lost acknowledgement; 0 when nothing acknowledged after the fault
    was lost. Passes when at most ``limit_s`` (None: measured, not judged)."""

    def __init__(
        self, history: History, survivors: Survivors, limit_s: float | None, *, name: str = "late_acks"
    ) -> None:
        self.history, self.survivors, self.limit_s, self.name = history, survivors, limit_s, name

    def check(self, timeline: Timeline) -> Verdict:
        kept = self.survivors.of(self.history)
        lost = [a.at for a in self.history.acknowledged if a.key not in kept and a.at >= timeline.injected_at]
        window = round(max(lost) - timeline.injected_at, 3) if lost else 0.0
        limit = "" if self.limit_s is None else f" (limit {self.limit_s:.1f} s)"
        return Verdict(
            self.name,
            self.limit_s is None or window <= self.limit_s,
            f"{len(lost)} writes acknowledged after the fault were lost, the last {window:.2f} s in{limit}",
            {"seconds": window, "lost_after_fault": len(lost), "limit_seconds": self.limit_s},
        )


def overlap_seconds(samples: list[tuple[float, dict[str, NodeRole] | None]], roles: tuple[str, ...]) -> float:
    """The time, summed over the observer's samples, during which more than one node had one of
    ``roles``; each sample counts until the next one (the last counts for nothing)."""
    total = 0.0
    for (at, seen), (after, _) in itertools.pairwise(samples):
        if seen and sum(1 for role in seen.values() if role in roles) > 1:
            total += after - at
    return total


class MasterOverlap:
    """From a :class:`~smoke.drills.workload.TopologyObserver` with ``roles_probe``: how long two
    nodes said they were master (``two_masters_seconds``: a deposed master that has not heard
    yet) and how long two masters *accepted writes* at once (``two_writable_seconds``: the
    split-brain window in which both acknowledge, the one ``min-replicas-max-lag`` bounds).
    Passes when the writable overlap is at most ``limit_s``."""

    name = "master_overlap"

    def __init__(self, samples: list[tuple[float, dict[str, NodeRole] | None]], limit_s: float) -> None:
        self.samples, self.limit_s = samples, limit_s

    def check(self, timeline: Timeline) -> Verdict:
        two = round(overlap_seconds(self.samples, ("master", "master-refusing")), 2)
        writable = round(overlap_seconds(self.samples, ("master",)), 2)
        return Verdict(
            self.name,
            writable <= self.limit_s,
            f"two masters for {two:.2f} s, both accepting writes for {writable:.2f} s (limit {self.limit_s:.1f} s)",
            {"two_masters_seconds": two, "two_writable_seconds": writable, "limit_seconds": self.limit_s},
        )


class NewMasterHeard:
    """From :class:`~smoke.drills.workload.TopologyObserver` samples with ``master_wait_probe`` (one
    list per observer: :func:`~smoke.drills.workload.master_wait_observers`): once a
    Sentinel names another master than before the fault, the longest it then waited for that
    master's answer (``last-ping-sent``). Sentinel calls a master down when that wait passes
    down-after; the new master is healthy, so a wait that comes near down-after is a second
    failover in the making (components/settings.py, ``DOWN_AFTER_FLOOR_MS``: Sentinel reaches the
    new master only up to 1.1 s after the switch). Samples only show the wait at their moments:
    the peak can be up to the longest gap between two of a switched Sentinel's answered samples
    above the highest seen. Passes when the highest wait plus that gap leaves at least
    ``margin_ms`` of ``down_after_ms`` (also when no Sentinel switched); the gap is a figure of
    its own (the checker's resolution)."""

    name = "new_master_heard"

    def __init__(
        self,
        samples: Sequence[list[tuple[float, dict[str, SentinelSight] | None]]],
        down_after_ms: int,
        margin_ms: int,
    ) -> None:
        self.samples, self.down_after_ms, self.margin_ms = samples, down_after_ms, margin_ms

    def check(self, timeline: Timeline) -> Verdict:
        before: dict[str, str] = {}
        longest: dict[str, int] = {}
        last_at: dict[str, float] = {}  # a switched Sentinel's previous answered sample
        gap_s = 0.0
        # Every state below is per Sentinel, and each Sentinel's samples are in one list, in order.
        for at, seen in itertools.chain.from_iterable(self.samples):
            for sentinel, sight in (seen or {}).items():
                if sight is None:
                    continue
                master, waited_ms = sight
                if at < timeline.injected_at:
                    before[sentinel] = master
                elif sentinel in before and master != before[sentinel]:
                    longest[sentinel] = max(longest.get(sentinel, 0), waited_ms)
                    if sentinel in last_at:
                        gap_s = max(gap_s, at - last_at[sentinel])
                    last_at[sentinel] = at
        gap_ms = round(gap_s * 1000)
        limit = self.down_after_ms - self.margin_ms
        worst = max(longest.values(), default=0)
        waits = ", ".join(f"{s} {ms} ms" for s, ms in sorted(longest.items())) or "no Sentinel switched"
        return Verdict(
            self.name,
            worst + gap_ms <= limit,
            f"longest wait for the new master's answer: {waits}, sampled at most {gap_ms} ms apart "
            f"(limit {limit} ms: down-after {self.down_after_ms} ms less {self.margin_ms} ms)",
            {"longest_wait_ms": worst, "sample_gap_ms": gap_ms, "limit_ms": limit, "sentinels_switched": len(longest)},
        )


class Reconverged:
    """The topology back in its full shape (one master, every replica linked, every Sentinel
    agreeing) within ``limit_s`` of the fault ending: from ``ended_at()`` (when the fault stopped
    acting by itself; None: the heal's start, i.e. when the workloads stopped) to the first
    converged sample of a :class:`~smoke.drills.workload.TopologyObserver` with the rehearsal's
    ``converged`` as probe, else to the heal's return."""

    name = "reconverged"

    def __init__(
        self, samples: list[tuple[float, bool | None]], ended_at: Callable[[], float | None], limit_s: float
    ) -> None:
        self.samples, self.ended_at, self.limit_s = samples, ended_at, limit_s

    def check(self, timeline: Timeline) -> Verdict:
        start = self.ended_at() or timeline.ended_at
        seen = next((at for at, converged in self.samples if at >= start and converged), None)
        back = seen if seen is not None else timeline.healed_at
        seconds = None if back is None else round(max(back - start, 0.0), 2)
        shown = "never" if seconds is None else f"after {seconds:.2f} s"
        return Verdict(
            self.name,
            seconds is not None and seconds <= self.limit_s,
            f"converged {shown} (limit {self.limit_s:.1f} s)",
            {"seconds": seconds, "limit_seconds": self.limit_s},
        )


class DatasetRestored:
    """Every key of a :class:`Dataset` on ``node()``: type, value, absolute expiry
    (``PEXPIRETIME``, kept exactly by RDB) and a remaining TTL in (0, the TTL it was written
    with]. Figures: ``restored``, ``mismatches`` and the first 20 mismatches described."""

    name = "dataset_restored"

    def __init__(self, dataset: Dataset, node: Callable[[], redis.Redis]) -> None:
        self.dataset, self.node = dataset, node

    def check(self, timeline: Timeline) -> Verdict:
        with self.node() as node:
            restored, samples = self._compare(node)
        written = len(self.dataset.rows)
        return Verdict(
            self.name,
            restored == written,
            f"{restored} of {written} keys restored",
            {"restored": restored, "mismatches": written - restored, "samples": samples},
        )

    def _compare(self, node: redis.Redis) -> tuple[int, list[str]]:
        rows, expiry = self.dataset.rows, self.dataset.expiry
        restored, samples, count = 0, [], 0
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            pipe = node.pipeline(transaction=False)
            for _, key, exp in chunk:
                pipe.type(key)
                if exp.kind == "zset":
                    pipe.zrange(key, 0, -1, withscores=True)
                elif exp.kind == "hash":
                    pipe.hgetall(key)
                else:
                    pipe.get(key)
                pipe.execute_command("PEXPIRETIME", key)
                pipe.pttl(key)
            replies = pipe.execute()
            for n, (_, key, exp) in enumerate(chunk):
                kind, value, expires_at, pttl = replies[4 * n : 4 * n + 4]
                if exp.kind == "zset":
                    value = [[member, score] for member, score in value]
                problem = None
                if kind != exp.kind:
                    problem = f"type {kind!r}, expected {exp.kind!r}"
                elif value != exp.value:
                    problem = f"value {str(value)[:80]!r} differs"
                elif int(expires_at) != expiry[key]:
                    problem = f"expires at {expires_at}, written to expire at {expiry[key]}"
                elif not 0 < int(pttl) <= exp.ttl_ms:
                    problem = f"TTL {pttl} ms outside (0, {exp.ttl_ms}]"
                if problem is None:
                    restored += 1
                else:
                    count += 1
                    if len(samples) < 20:
                        samples.append(f"{key}: {problem}")
        if count > len(samples):
            samples.append(f"... {count - len(samples)} more")
        return restored, samples
