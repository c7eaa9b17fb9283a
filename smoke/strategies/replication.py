"""Confirmed writes: the one rule behind every "confirmed" a strategy answers.

**Contract.** A write is *confirmed* when ``WAIT``, sent on the connection that made the write,
saw it acknowledged by every replica that was **in sync** with the master when the write ran, and
by at least ``min_replicas`` (default 1) replicas. In sync means ``INFO replication`` on the
master lists the replica as ``state=online`` with ``lag`` (seconds since its last
acknowledgement) of at most :data:`IN_SYNC_LAG_S`. Replicas acknowledge every second, so 2 s
allows one late acknowledgement before a replica stops counting.

Why this rule and not a fixed count:

* *All configured replicas* (the first version: ``WAIT 2``) made every claim UNCONFIRMED while one
  replica was down, for a routine pod restart or node drain (issue 16: payments stopped for the
  whole restart).
* *Any one replica* is not enough while both are up: Sentinel promotes the replica whose offset it
  last saw highest, from an ``INFO`` up to a second old, so it can promote the one that had not
  received the write; the notes measured ``WAIT 1`` losing claims and ``WAIT``-all losing none.
* *Every replica in sync* keeps ``WAIT``-all's guarantee while the replicas are healthy and drops
  a replica that has stopped acknowledging (killed: its link closes at once; hung: after 2 s)
  instead of waiting for it.

**Fewer replicas than the Sentinels know: confirmed only once the missing ones are accounted
for.** A replica can leave the master because it died, or because the Sentinels promoted it: the
master was hung past down-after and woke up just after the promotion, before the Sentinels
re-pointed its other replica. That replica still acknowledges, and everything it acknowledges is
lost when it is re-pointed to the new master (the master-hang drill lost 185 and 470 confirmed
claims so with down-after 1.5 s). The master cannot tell the two apart; the Sentinels can. So a
write is confirmed only when the ``fence`` (:meth:`SentinelClient.replicas_accounted_for`) says
that every replica the Sentinels know follows this master (its ``INFO replication`` shows it in
sync or syncing: :func:`following_replicas`), or is down for a majority of the Sentinels, or is
this master's replica, not chosen for promotion, in every Sentinel's eyes, and that no Sentinel
shows a failover under way. The healthy path asks nothing more (the known replicas are refreshed
in the background). A replica just killed or hung makes writes unconfirmed until the Sentinels
see it down (down-after); then the others confirm them.

The promise leans on one rule of the servers' side too: a replica is promotable only once it has
synced (``start-redis.sh`` starts replicas at ``replica-priority 0``). A restarted replica misses
every write confirmed since it stopped and its offset says nothing, so Sentinel would otherwise
promote it whenever the replica in sync was down in its eyes.

What can still lose a confirmed write (``docs/smoke-and-strategies.md`` lists it in full): the
master and every replica that acknowledged the write lost together (with one replica already
down, that is the master and the one left), or a replica that a majority of the Sentinels see
down promoted by a leader that does not (a partition between some Sentinels and that replica).

**Every confirmation covers its own write, on every server line.** Since Redis 7.2 (and in
Valkey) ``WAIT`` counts replicas that reached the *calling connection's* last write, so the
script and its ``WAIT`` run on one pinned connection, and a strategy that answers "confirmed"
for a retry has its script write again (see the strategies).

**Round trips: one.** ``INFO replication``, the script and ``WAIT <hint> <timeout>`` go in one
pipeline on one connection; the hint is the number of in-sync replicas this process saw last.
Only when more replicas are in sync than the hint (one has come back) a second ``WAIT`` on the
same connection asks for all of them. When fewer (one has just gone), the first ``WAIT`` waits
its timeout once per process, and the answer is still exact.

Written by hand rather than with redis-py's ``Pipeline``: a pipeline returns its connection to
the pool when it ends, and the second ``WAIT`` must run on the connection that wrote. The call
holds one pooled connection from the pipeline to the second ``WAIT`` and hands it back after.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoScriptError, ResponseError

from smoke.strategies.lua import LuaScript

# A replica counts as in sync while its last acknowledgement is at most this old (seconds).
IN_SYNC_LAG_S = 2
WAIT_TIMEOUT_MS = 500

# slave0:ip=10.0.0.5,port=6379,state=online,offset=1234,lag=0[,type=replica]
# The lag may be -1: the server computes it from its cached clock, which an acknowledgement
# received within the same second can be ahead of (Valkey 8 shows it under a steady stream of
# WAITs). A pattern for digits only skipped those replicas: counted out of sync, a claim then
# waited for fewer replicas than were in sync.
_REPLICA_LINE = re.compile(rb"^slave\d+:ip=([^,\s]+),port=(\d+),state=([a-z_]+),offset=-?\d+,lag=(-?\d+)", re.MULTILINE)


@dataclass(frozen=True)
class _ReplicaLine:
    address: str  # ip:port, as the master sees the replica
    online: bool  # else still syncing from the master (wait_bgsave, send_bulk, ...)
    lag_s: int  # seconds since its last acknowledgement (-1: just now)

    @property
    def in_sync(self) -> bool:
        return self.online and self.lag_s <= IN_SYNC_LAG_S

    @property
    def following(self) -> bool:
        """In sync, or syncing from the master (see :func:`following_replicas`)."""
        return self.in_sync or not self.online


def _replica_lines(info_replication: bytes) -> list[_ReplicaLine]:
    """The master's ``INFO replication`` text, one entry per ``slaveN:`` line."""
    return [
        _ReplicaLine(f"{ip.decode()}:{int(port)}", state == b"online", int(lag))
        for ip, port, state, lag in _REPLICA_LINE.findall(info_replication)
    ]


# The fence: given the master's "ip:port" (as this client reached it) and the "ip:port" of every
# replica following it, whether a write they acknowledged may be called confirmed (see the
# module docstring).
Fence = Callable[[str, frozenset[str]], bool]


def following_replicas(info_replication: bytes) -> frozenset[str]:
    """``ip:port`` of the replicas the master's ``INFO replication`` text shows following it: in
    sync (online, acknowledged within :data:`IN_SYNC_LAG_S`) or syncing from it (a full sync,
    so unpromotable: ``start-redis.sh``). One online but silent longer is not among them: it may
    be hung, or it may have been promoted while this master was hung itself and has not yet
    seen its link close (the master-hang drill lost a confirmed claim so)."""
    return _following(_replica_lines(info_replication))


def in_sync_replicas(info_replication: bytes) -> int:
    """How many replicas the master's ``INFO replication`` text shows online and acknowledging."""
    return _in_sync(_replica_lines(info_replication))


# Over lines parsed once (a confirmed write needs both answers from one INFO).
def _following(lines: list[_ReplicaLine]) -> frozenset[str]:
    return frozenset(line.address for line in lines if line.following)


def _in_sync(lines: list[_ReplicaLine]) -> int:
    return sum(1 for line in lines if line.in_sync)


@dataclass(frozen=True)
class Acknowledgement:
    """``acked`` replicas reached the write; ``required`` had to (the in-sync ones, at least the
    minimum). ``fenced``: enough acknowledged, but a replica the Sentinels know had left the
    master without being down in their eyes (it may have been promoted), so it is not confirmed."""

    acked: int
    required: int
    fenced: bool = False

    @property
    def confirmed(self) -> bool:
        return self.acked >= self.required and not self.fenced


class Confirmation:
    """Runs a script and confirms its write by the in-sync replicas (the module's contract).

    One per strategy instance; thread-safe (the hint is a plain int, a stale one only costs time).
    """

    def __init__(self, min_replicas: int = 1, timeout_ms: int = WAIT_TIMEOUT_MS, fence: Fence | None = None) -> None:
        if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 1:
            raise ValueError(
                f"min_replicas {min_replicas!r}: a whole number of at least 1 (a write no replica has is not confirmed)"
            )
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 1:
            raise ValueError(f"wait timeout {timeout_ms!r} ms: a whole number of milliseconds of at least 1")
        self.min_replicas = min_replicas
        self.timeout_ms = timeout_ms
        # None: no Sentinels to ask (a plain client in a test); the strategies pass their client's.
        self.fence = fence
        self._hint = min_replicas

    def run(
        self,
        r: redis.Redis,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        wrote: Callable[[Any], bool] = lambda reply: True,
    ) -> tuple[Any, Acknowledgement | None]:
        """Run ``script`` and ``WAIT`` for the in-sync replicas, on one connection.

        Returns the script's (undecoded) reply and, when ``wrote(reply)`` says the script wrote
        what is to be confirmed, the :class:`Acknowledgement`; None otherwise (nothing to confirm).
        A script error (e.g. ``OOM`` on a full state tier) is raised, as a ``NOSCRIPT`` is
        handled: the script is loaded and run again (``NOSCRIPT`` proves it did not run).
        """
        # The pool's connection itself, held for the call (not a single-connection client: building
        # a redis.Redis per call cost more client time than the rest of the call's own work).
        pool = r.connection_pool
        connection = pool.get_connection()
        try:
            for attempt in (1, 2):
                hint = self._hint
                info, reply, acked = _pipeline(
                    connection,
                    [
                        ("INFO", "replication"),
                        ("EVALSHA", script.sha, len(keys), *keys, *args),
                        ("WAIT", hint, self.timeout_ms),
                    ],
                )
                if isinstance(reply, NoScriptError) and attempt == 1:
                    _command(connection, "SCRIPT", "LOAD", script.source)
                    continue
                for result in (info, reply, acked):
                    if isinstance(result, Exception):
                        raise result
                break
            replicas = _replica_lines(info)  # parsed once for the count and the fence
            required = max(self.min_replicas, _in_sync(replicas))
            self._hint = required
            if not wrote(reply):
                return reply, None
            acked = int(acked)
            if acked < required and hint < required:
                # More are in sync than the hint asked for: wait for them too, on this connection.
                acked = int(_command(connection, "WAIT", required, self.timeout_ms))
            # Asked only when the replicas acknowledged: the fence may ask the Sentinels.
            master = f"{connection.host}:{connection.port}"
            fenced = acked >= required and self.fence is not None and not self.fence(master, _following(replicas))
            return reply, Acknowledgement(acked, required, fenced)
        except BaseException:
            # A reply left unread would be read by the next command on this connection.
            connection.disconnect()
            raise
        finally:
            pool.release(connection)


def _command(connection: redis.connection.AbstractConnection, *command: Any) -> Any:
    """One command on ``connection`` and its reply, undecoded; an error reply is raised."""
    connection.send_command(*command)
    return connection.read_response(disable_decoding=True)


def _pipeline(connection: redis.connection.AbstractConnection, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one write and read every reply, undecoded; error replies are returned
    as exceptions (all replies are read, so the connection stays in step)."""
    connection.send_packed_command(connection.pack_commands(commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(connection.read_response(disable_decoding=True))
        except ResponseError as exc:
            replies.append(exc)
    return replies
