"""Workloads: clients doing real work during a drill, each recording what it was told.

A workload has ``start()`` (continuous workloads begin writing in a thread of their own;
one-shot workloads do their writes before returning) and ``stop()`` (the thread ends and is
joined, within a bound). What it records is its :class:`History`: the Redis key and the time of
every acknowledged write, and counts of the writes that were not confirmed or failed. Checkers
read histories; they never drive clients themselves.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from smoke.strategies.claims import ClaimCache, sample_claim
from smoke.strategies.client import SentinelClient, sentinel_address
from smoke.strategies.entries import EntryCache, sample_entry
from smoke.strategies.idempotency import IdempotencyStore, Outcome
from smoke.strategies.ratelimit import RateLimiter
from smoke.strategies.workflow import WorkflowCache

# A writer that hits an error waits this long before the next attempt (no hot loop on a dead master).
ERROR_PAUSE_S = 0.02
# How long stop() waits for a writer thread to notice and finish its last call.
JOIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Ack:
    """One acknowledged write: the key it created and when the acknowledgement arrived
    (``time.monotonic()``)."""

    key: str
    at: float


@dataclass
class History:
    """What a workload's clients were told."""

    acknowledged: list[Ack] = field(default_factory=list)
    unconfirmed: int = 0  # the server answered, but the write is not confirmed (e.g. WAIT short)
    errors: int = 0  # the call raised (connection lost, no master, NOREPLICAS, ...)

    @property
    def keys(self) -> list[str]:
        return [ack.key for ack in self.acknowledged]


class Workload(Protocol):
    name: str
    history: History

    def start(self) -> None: ...

    def stop(self) -> None: ...


class _Writer:
    """A continuous workload: ``attempt(n)`` in a loop on its own thread until ``stop()``.

    ``attempt`` returns the key of a confirmed write, or None for an unconfirmed one; an
    exception counts as an error. The loop ends on stop, so it is bounded by the drill's own
    timeline (the drill stops every workload in a ``finally``)."""

    name = "writer"

    def __init__(self) -> None:
        self.history = History()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"drill-{self.name}", daemon=True)

    def attempt(self, n: int) -> str | None:
        raise NotImplementedError

    def _loop(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                key = self.attempt(n)
            except Exception:
                self.history.errors += 1
                time.sleep(ERROR_PAUSE_S)
            else:
                if key is None:
                    self.history.unconfirmed += 1
                else:
                    self.history.acknowledged.append(Ack(key, time.monotonic()))
            n += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=JOIN_TIMEOUT_S)


class PlainWrites(_Writer):
    """Plain ``SET key value EX 600`` through the Sentinel client: acknowledged by the master
    alone, so asynchronous replication may lose some of them in a failover (the count says how
    many). The outage is measured on these."""

    name = "plain-writes"

    def __init__(self, client: SentinelClient, prefix: str) -> None:
        super().__init__()
        self.client, self.prefix = client, prefix

    def attempt(self, n: int) -> str | None:
        key = f"{self.prefix}drill:plain:drill-{n}"
        self.client.run(lambda r: r.set(key, f"drill-{n}", ex=600), idempotent=True)
        return key


class ConfirmedClaims(_Writer):
    """Idempotency claims through the real strategy: acknowledged only when ``claim()`` answers
    CLAIMED, i.e. every replica in sync (at least ``min_replicas``) confirmed it with ``WAIT``.
    None of these may ever be lost."""

    name = "confirmed-claims"

    def __init__(self, client: SentinelClient, prefix: str, min_replicas: int = 1) -> None:
        super().__init__()
        # The lock must outlive the drill: the claims are looked for after the failover.
        self.store = IdempotencyStore(client, prefix, min_replicas=min_replicas, lock_ttl_ms=300_000)

    def attempt(self, n: int) -> str | None:
        request_id = f"drill-{n}"
        if self.store.claim(request_id, {"drill": request_id}).outcome is Outcome.CLAIMED:
            return self.store.key(request_id)
        return None


class TopologyObserver:
    """Not a writer: a thread that asks ``probe()`` every ``interval_s`` what the topology looks
    like and records each answer with its time (``samples``), from ``start()`` to ``stop()``.
    With :func:`roles_probe` an answer is each data node's role and whether, as a master, it
    accepts writes; with the rehearsal's ``converged`` it is whether the topology has its full
    shape. A probe that raises records None. Its history stays empty: it writes nothing."""

    name = "observer"

    def __init__(self, probe: Callable[[], Any], interval_s: float = 0.1) -> None:
        self.probe, self.interval_s = probe, interval_s
        self.history = History()
        self.samples: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drill-observer", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                seen = self.probe()
            except Exception:
                seen = None
            self.samples.append((time.monotonic(), seen))
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=JOIN_TIMEOUT_S)


# What a data node said when the observer asked: "master" (accepting writes), "master-refusing"
# (master, but fewer replicas in sync than min-replicas-to-write: it refuses writes), "slave",
# or None (no answer within the timeout: down, hung).
NodeRole = str | None


def node_role(node: redis.Redis) -> NodeRole:
    """One node's role for :class:`TopologyObserver`; a master counts as accepting writes unless
    its ``min_slaves_good_slaves`` is below its ``min-replicas-to-write`` (the field Redis and
    Valkey show in ``INFO replication`` when both min-replicas settings are on)."""
    try:
        info = node.info("replication")
    except redis.RedisError:
        return None
    if info.get("role") != "master":
        return str(info.get("role"))
    good = info.get("min_slaves_good_slaves")
    if good is None:
        return "master"
    wanted = int(node.config_get("min-replicas-to-write").get("min-replicas-to-write", 0))
    return "master" if int(good) >= wanted else "master-refusing"


def roles_probe(nodes: Callable[[], dict[str, redis.Redis]]) -> Callable[[], dict[str, NodeRole]]:
    """A probe for :class:`TopologyObserver`: :func:`node_role` of every node ``nodes()`` gives
    (name -> a client with a short timeout), asked one after the other."""

    def probe() -> dict[str, NodeRole]:
        return {name: node_role(client) for name, client in nodes().items()}

    return probe


# What one Sentinel said of the master when the observer asked: (the master's "ip:port", how
# long in ms it has been waiting for the master's answer to a PING: 0 when none is pending), or
# None (no answer).
SentinelSight = tuple[str, int] | None


def master_wait_probe(sentinel: redis.Redis, master_name: str) -> Callable[[], dict[str, SentinelSight]]:
    """A probe for :class:`TopologyObserver`: one Sentinel's (by address) master and its
    ``last-ping-sent`` (``SENTINEL MASTER``: the age of the oldest unanswered PING, the figure
    Sentinel compares with down-after). One Sentinel per probe (:func:`master_wait_observers`)."""
    where = sentinel_address(sentinel)

    def probe() -> dict[str, SentinelSight]:
        try:
            state = sentinel.sentinel_master(master_name)
            return {where: (f"{state['ip']}:{state['port']}", int(state["last-ping-sent"]))}
        except (redis.RedisError, KeyError, ValueError):
            return {where: None}

    return probe


def master_wait_observers(
    sentinels: Sequence[redis.Redis], master_name: str, interval_s: float
) -> list[TopologyObserver]:
    """One :class:`TopologyObserver` per Sentinel with :func:`master_wait_probe`: a hung Sentinel
    holds up only its own samples (asked one after the other, each round waited out its timeout,
    and the others were sampled twice a second instead of every ``interval_s``)."""
    return [TopologyObserver(master_wait_probe(sentinel, master_name), interval_s) for sentinel in sentinels]


# --- a known dataset, written once (the backup drill) --------------------------------------------

# Written and read back in pipelines of this many keys.
BATCH = 2000


@dataclass(frozen=True)
class Expected:
    kind: str  # redis type
    value: Any
    ttl_ms: int


def strategy_dataset(client: SentinelClient, units: int, min_ttl_s: int) -> Iterator[tuple[str, str, Expected]]:
    """(strategy, key, expected) for ``units`` units of 10 keys shaped like the five strategies,
    named by their own key builders. No TTL is shorter than ``min_ttl_s``: a key that expires
    during a drill is not a loss."""
    entries, claims = EntryCache(client), ClaimCache(client)
    workflows, idem = WorkflowCache(client), IdempotencyStore(client)
    limiter = RateLimiter(client)

    def ttl(ms: int) -> int:
        return max(ms, min_ttl_s * 1000)

    for i in range(units):
        eid, cid, wid = f"e{i:07d}", f"c{i:07d}", f"w{i:07d}"
        entry = sample_entry(eid, key_value=f"user{i}@example.com.br")
        entry_ttl = ttl(entries.ttl_ms)
        yield "entries", entries.id_key(eid), Expected("string", entry.to_value(), entry_ttl)
        yield "entries", entries.pointer_key(entry.key_type, entry.key_value), Expected("string", eid, entry_ttl)
        # The version marker lives on the state tier (smoke/strategies/entries.py).
        marker = {"floor": str(entry.version), "inv_floor": "0", "inv_seq": "0"}
        yield "entry-markers", entries.marker_key(eid), Expected("hash", marker, ttl(entries.marker_ttl_ms))
        claim = sample_claim(cid, eid)
        claim_ttl = ttl(claims.ttl_ms)
        yield "claims", claims.object_key(cid), Expected("string", claim.to_json(), claim_ttl)
        yield "claims", claims.status_key(cid), Expected("string", claim.status, claim_ttl)
        yield "claims", claims.index_key(eid), Expected("zset", [[cid, float(1_700_000_000_000 + i)]], claim_ttl)
        status = json.dumps({"status": "WAITING_RESOLUTION", "version": 1}, separators=(",", ":"))
        meta = {"workflow_id": wid, "workflow_type": "ClaimWorkflow", "started_at": "2024-05-01T12:00:00Z"}
        meta_json = json.dumps({**meta, "claim_id": cid, "current_activity": "notify", "version": 1})
        yield "workflow", workflows.status_key(wid), Expected("string", status, ttl(workflows.status_ttl_s * 1000))
        yield "workflow", workflows.metadata_key(wid), Expected("string", meta_json, workflows.metadata_ttl_s * 1000)
        record = json.dumps({"state": "completed", "owner": f"o{i}", "fp": f"{i:064x}", "response": "{}"})
        yield "idempotency", idem.key(f"r{i:07d}"), Expected("string", record, ttl(idem.record_ttl_s * 1000))
        ispb = f"{60701190 + i % 500:08d}"
        counter_key = limiter.key_base(ispb, "GetEntry") + str(28_000_000 + i)
        yield "ratelimit", counter_key, Expected("string", str(1 + i % 500), ttl(limiter.window_ms))


def wait_replicated(master: redis.Redis, replicas: int, timeout_s: float = 10.0) -> None:
    """Wait until ``replicas`` replicas have acknowledged everything the master had written when
    this was called (their acknowledged offsets reach its ``master_repl_offset``).

    Not ``WAIT``: since Redis 7.2 (and on Valkey) ``WAIT`` covers only the calling connection's
    own last write, so from a connection that wrote nothing it returns at once. Replicas
    acknowledge once a second; a ``TimeoutError`` after ``timeout_s``."""
    target = int(master.info("replication")["master_repl_offset"])
    deadline = time.monotonic() + timeout_s
    while True:
        info = master.info("replication")
        links = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        if sum(1 for link in links if int(link.get("offset", -1)) >= target) >= replicas:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{replicas} replicas did not reach offset {target} within {timeout_s:g} s: {links}")
        time.sleep(0.05)


def server_of(node: redis.Redis) -> str:
    """What a node runs, from HELLO (every ACL user may send it): 'valkey 8.0.1', 'redis 7.0.15'.
    Not INFO's ``redis_version``, which Valkey sets to 7.2.4 (the Redis it is compatible with)."""
    reply = node.execute_command("HELLO")
    fields = dict(zip(reply[::2], reply[1::2], strict=False)) if isinstance(reply, list) else dict(reply)

    def text(value: object) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    named = {text(k): text(v) for k, v in fields.items()}
    return f"{named.get('server', '?')} {named.get('version', '?')}"


def expiry_times(node: redis.Redis, keys: list[str]) -> list[int]:
    """Each key's absolute expiry in ms (``PEXPIRETIME``), pipelined."""
    times: list[int] = []
    for start in range(0, len(keys), BATCH):
        pipe = node.pipeline(transaction=False)
        for key in keys[start : start + BATCH]:
            pipe.execute_command("PEXPIRETIME", key)
        times.extend(int(t) for t in pipe.execute())
    return times


class Dataset:
    """A one-shot workload: ``start()`` writes every row to the master with its TTL, waits until
    ``replicas`` replicas acknowledged it, and records each key's absolute expiry as the master
    set it. Every row is acknowledged (a failed write raises: the drill cannot start without it)."""

    name = "dataset"

    def __init__(self, rows: list[tuple[str, str, Expected]], master: Callable[[], redis.Redis], replicas: int) -> None:
        self.rows, self._master, self.replicas = rows, master, replicas
        self.history = History()
        self.expiry: dict[str, int] = {}
        self.write_seconds = 0.0
        self.server_version = ""

    def by_strategy(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for strategy, _, _ in self.rows:
            counts[strategy] = counts.get(strategy, 0) + 1
        return counts

    def start(self) -> None:
        started = time.monotonic()
        with self._master() as master:
            for start in range(0, len(self.rows), BATCH):
                pipe = master.pipeline(transaction=False)
                for _, key, exp in self.rows[start : start + BATCH]:
                    if exp.kind == "zset":
                        pipe.delete(key)
                        pipe.zadd(key, dict(exp.value))
                        pipe.pexpire(key, exp.ttl_ms)
                    elif exp.kind == "hash":
                        pipe.delete(key)
                        pipe.hset(key, mapping=exp.value)
                        pipe.pexpire(key, exp.ttl_ms)
                    else:
                        pipe.set(key, exp.value, px=exp.ttl_ms)
                pipe.execute()
            keys = [key for _, key, _ in self.rows]
            self.expiry = dict(zip(keys, expiry_times(master, keys), strict=True))
            wait_replicated(master, self.replicas)
            self.server_version = server_of(master)
        now = time.monotonic()
        self.history.acknowledged = [Ack(key, now) for key in keys]
        self.write_seconds = now - started

    def stop(self) -> None:
        """Nothing runs in the background."""


class ConfirmedInvalidations(_Writer):
    """Entry invalidations through the real strategy (``EntryCache.invalidate``), each of an entry
    id of its own, with the version its writer committed: acknowledged only when the result is
    ``confirmed`` (the marker and epoch on the state tier and the tombstone on the cache tier
    reached every in-sync replica of their tier). None of these may ever be lost.

    The proof that one survived is what it left, looked for on each tier's master after the
    fault: ``history`` holds the tombstone keys (cache tier: a :class:`Lost` checker with the
    cache tier's :class:`~smoke.drills.checkers.Survivors`), ``markers`` the version-marker keys
    (state tier: a second ``Lost`` with the state tier's). The ids are never written, so the only
    value at an id key is the tombstone: a key that exists proves the invalidation, not an entry
    it failed to remove. Tombstones are made to live ``TOMBSTONE_MS`` (10 min), longer than any
    drill, so one that is missing was lost, not expired; a drill that fills the cache tier until
    LRU evicts is not one to run this in (eviction would remove tombstones too)."""

    name = "confirmed-invalidations"
    TOMBSTONE_MS = 600_000

    def __init__(
        self, client: SentinelClient, prefix: str, *, markers: SentinelClient | None = None, min_replicas: int = 1
    ) -> None:
        super().__init__()
        self.cache = EntryCache(
            client, prefix, markers=markers, tombstone_ms=self.TOMBSTONE_MS, min_replicas=min_replicas
        )
        self.markers = History()

    def attempt(self, n: int) -> str | None:
        entry_id = f"drill-inv-{n}"
        if not self.cache.invalidate(entry_id, committed_version=n + 1).confirmed:
            return None
        self.markers.acknowledged.append(Ack(self.cache.marker_key(entry_id), time.monotonic()))
        return self.cache.id_key(entry_id)
