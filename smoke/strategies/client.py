"""A Sentinel client that follows the Sentinel client spec, on top of redis-py.

redis-py's stock ``Sentinel.master_for`` falls short of the spec in ways that were measured to
cost seconds or duplicate writes in a failover (notes/cache-strategies.md): it discovers the
master with ``SENTINEL MASTERS`` (which non-leader Sentinels update late) instead of
``SENTINEL GET-MASTER-ADDR-BY-NAME``, never confirms the node with ``ROLE``, has no retries of
its own, and when given retries it re-sends any command, also one that may already have run.
This module keeps redis-py's connection handling and changes exactly those points:

* discovery asks each Sentinel ``GET-MASTER-ADDR-BY-NAME`` and moves the one that answered first;
* every new connection is confirmed with ``ROLE`` and dropped if the node is not a master;
* :meth:`SentinelClient.run` retries with backoff and re-discovers on connection errors,
  timeouts, ``READONLY`` and ``NOREPLICAS``; a non-idempotent operation is retried only when
  the error proves it never ran, otherwise :class:`OutcomeUnknown` is raised.
* the pool follows the Sentinels' ``+promoted-slave``/``+switch-master`` announcements at once
  (:class:`_MasterWatch`), so a deposed master that still answers gets no more writes;
* errors whose cause is known say it: :class:`SentinelsUnreachable` (no Sentinel, or no
  majority, answered: each one named with its reason) and :class:`NoReplicasInSync` (the master
  refused writes with ``NOREPLICAS``).

Text in both directions. redis-py applies one ``encoding_errors`` to what it sends and to what it
decodes. Replies are decoded with ``replace``: a foreign value that is not UTF-8 must not raise
half-way through a reply (that would leave the rest of it unread on a pooled connection). What is
*sent* is encoded strictly: with ``replace`` a lone surrogate (``json.loads('"\\udc80"')`` makes
one) went out as ``?``, so two distinct ids shared one key. An argument that is not UTF-8 text
raises ``UnicodeEncodeError`` (a ``ValueError``) before anything is sent, and the connection stays
usable; the strategies check their ids first with :func:`encodable`, whose error names the
argument.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, TimeoutError
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
# While a Sentinel keeps failing the replica roster's question, a warning at most this often.
ROSTER_WARN_EVERY_S = 60.0


class OutcomeUnknown(RedisConnectionError):
    """A non-idempotent operation failed after it may have reached the master: it may or may not
    have run, and retrying it blindly could run it twice."""


class PoolTimeout(RedisConnectionError):
    """Every pooled connection stayed busy for ``pool_timeout`` seconds."""


class SentinelsUnreachable(MasterNotFoundError):
    """Discovery failed because too few Sentinels answered: none at all (``cannot reach any
    Sentinel``), or fewer than a majority and none of those named a master (``no Sentinel
    majority reachable``). The message names every Sentinel that did not answer, with its
    address and the reason (refused, timed out, TLS, ...), never a password. A
    ``MasterNotFoundError`` (a ``ConnectionError``) as before: retried by
    :meth:`SentinelClient.run`, and proven not to have run anything."""


class NoReplicasInSync(ResponseError):
    """The master refused a write with ``NOREPLICAS``: fewer replicas than
    ``min-replicas-to-write`` acknowledged it within ``min-replicas-max-lag`` (replicas down,
    re-syncing or cut off). Raised by :meth:`SentinelClient.run` once its retries are spent, in
    place of the server's bare ``NOREPLICAS`` reply; the message still starts with ``NOREPLICAS``
    and names the master (its Sentinel name and address). The write did not run: retry later."""


@dataclass(frozen=True)
class ClientConfig:
    """The seed's go-redis options (pool 100, min idle 10, 3 retries, dial 5 s, read/write 3 s,
    pool wait 4 s), mapped onto redis-py."""

    sentinels: Sequence[tuple[str, int]]
    master_name: str = "mymaster"
    password: str | None = None
    sentinel_password: str | None = None
    # The ACL user on the data nodes (None: the ``default`` user, which the stack disables).
    username: str | None = None
    # TLS: the CA that signed the servers' certificates; set, every connection (Sentinels and data
    # nodes) uses TLS and verifies the certificate and the host name against it.
    tls_ca_file: str | None = None
    pool_size: int = 100
    min_idle: int = 10
    max_retries: int = 3
    dial_timeout: float = 5.0
    # redis-py has one socket timeout for reads and writes; the larger of the two is used.
    read_timeout: float = 3.0
    write_timeout: float = 3.0
    pool_timeout: float = 4.0
    # Retry backoff: short, because during a failover each retry is also a new question to the
    # Sentinels, and the sooner one is asked after the switch the shorter the outage.
    backoff_base: float = 0.02
    backoff_cap: float = 0.2
    # Seconds one operation may spend in retries before the last error is raised.
    deadline: float = 10.0
    # Seconds one Sentinel has to connect and to answer during discovery (no retries): well below
    # the data nodes' timeouts, so a hung Sentinel delays a discovery by at most this, once.
    sentinel_timeout: float = 0.5
    # Subscribe to every Sentinel's master-change announcements and move the pool at once
    # (_MasterWatch); a silent subscription is PINGed after watch_interval seconds.
    watch_sentinels: bool = True
    watch_interval: float = 1.0

    def __post_init__(self) -> None:
        if not self.sentinels:
            raise ValueError("sentinels: give at least one Sentinel as (host, port)")
        for name in ("pool_size", "max_retries", "min_idle"):
            if getattr(self, name) < 0 or (name == "pool_size" and self.pool_size < 1):
                raise ValueError(f"{name} = {getattr(self, name)}: must be positive")
        if not 0 < self.sentinel_timeout <= 5:
            raise ValueError(f"sentinel_timeout = {self.sentinel_timeout}: must be above 0 and at most 5 seconds")
        if not 0.05 <= self.watch_interval <= 60:
            raise ValueError(f"watch_interval = {self.watch_interval}: must be between 0.05 and 60 seconds")
        if self.min_idle > self.pool_size:
            raise ValueError(f"min_idle = {self.min_idle}: must not exceed pool_size = {self.pool_size}")


def read_password(env: str = "REDIS_PASSWORD", file_env: str = "REDIS_PASSWORD_FILE") -> str | None:
    """The password from ``$REDIS_PASSWORD`` or the file named by ``$REDIS_PASSWORD_FILE``: never
    from a command line, where any user of the machine could read it. The file's first line is
    the password to send (during a rotation a second line lists the other accepted one)."""
    if os.environ.get(env):
        return os.environ[env]
    path = os.environ.get(file_env)
    if path:
        try:
            lines = Path(path).read_text().splitlines()
            return lines[0].strip() if lines and lines[0].strip() else None
        except OSError as exc:
            raise ValueError(f"{file_env}={path}: cannot read the password file ({exc.strerror})") from None
    return None


# No CLIENT SETINFO on connect (redis-py sends two by default): two more round trips per new
# connection, and on Redis 7.2 a NOPERM for the application ACL user that would fill the ACL LOG
# the tests and operators read for real denials (Redis 7.0 has no such command to allow).
_NO_SETINFO: dict[str, object] = {"driver_info": None}


# Discovery rounds when the watch moves the pool during one (each move means a newer answer).
DISCOVERY_ROUNDS = 3


class _SpecSentinel(Sentinel):
    """Discovery by ``GET-MASTER-ADDR-BY-NAME``: the answer the failover leader updates first
    (redis/redis#2615), where ``SENTINEL MASTERS`` on other Sentinels lags by seconds.

    A dead or hung Sentinel cannot stall it: each Sentinel connection has a short timeout
    (``ClientConfig.sentinel_timeout``) and no retries of its own, so one that accepts and never
    answers costs at most that, once: the Sentinel that answered is asked first from then on.
    The order is changed by replacing the list under a lock, never in place, so a thread that is
    iterating its own snapshot is never disturbed (redis-py's own discover_master swaps entries
    of the shared list while other threads iterate it)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._order = threading.Lock()
        # How many times the watch (:class:`_MasterWatch`) moved the pool. A discovery that
        # overlapped a move may carry the answer of a Sentinel not yet told of the failover.
        self.moves = 0

    def discover_master(self, service_name: str) -> tuple[str, int]:
        """The master's address. When the watch moved the pool while the Sentinels were being
        asked (between the failover leader's ``+promoted-slave`` and a slower Sentinel's own
        ``+switch-master``, that Sentinel still names the deposed master, which still says
        ``master`` to ``ROLE`` if it was cut off), the answer is thrown away and the Sentinels are
        asked again, the announcing one first: at most :data:`DISCOVERY_ROUNDS` times."""
        for _ in range(DISCOVERY_ROUNDS):
            moves = self.moves
            address = self._ask(service_name)
            if self.moves == moves:
                return address
        return address

    def _ask(self, service_name: str) -> tuple[str, int]:
        unreachable: list[str] = []
        answered = 0
        for index, sentinel in enumerate(list(self.sentinels)):
            try:
                address = sentinel.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", service_name)
            except redis.AuthenticationError:
                raise  # a wrong password: asking the next Sentinel will not help
            except (RedisConnectionError, TimeoutError) as exc:
                unreachable.append(f"{sentinel_address(sentinel)}: {type(exc).__name__}: {exc}")
                continue
            answered += 1
            if address:
                if index:
                    self.prefer(sentinel)
                host, port = address
                return (host.decode() if isinstance(host, bytes) else host), int(port)
        total = len(unreachable) + answered
        majority = total // 2 + 1
        down = "; ".join(unreachable)
        if answered == 0:
            raise SentinelsUnreachable(
                f"master {service_name!r}: cannot reach any Sentinel (no Sentinel majority reachable, 0 of "
                f"{total} answered): {down}"
            )
        if answered < majority:
            raise SentinelsUnreachable(
                f"master {service_name!r}: no Sentinel majority reachable ({answered} of {total} answered, "
                f"a majority is {majority}, and none named a master); unreachable: {down}"
            )
        detail = f"; unreachable: {down}" if unreachable else ""
        raise MasterNotFoundError(
            f"no master found for {service_name!r}: none of the {answered} Sentinels that answered knows it{detail}"
        )

    def prefer(self, sentinel: redis.Redis) -> None:
        """Ask ``sentinel`` first from now on (it answered, or it announced a new master)."""
        with self._order:
            self.sentinels = [sentinel, *(s for s in self.sentinels if s is not sentinel)]


def sentinel_address(sentinel: redis.Redis) -> str:
    """``host:port`` of a Sentinel client (for messages: never its password)."""
    kwargs = sentinel.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


# What the Sentinels publish when the master changes (each on a channel of that name):
# ``+promoted-slave`` (the failover leader, the moment the replica it promoted answers as master:
# ``slave <ip:port> <ip> <port> @ <name> <old ip> <old port>``) and ``+switch-master`` (every
# Sentinel, once it has adopted the new configuration: ``<name> <old ip> <old port> <ip> <port>``).
WATCHED_CHANNELS = ("+promoted-slave", "+switch-master")


def announced_master(channel: str, data: str) -> tuple[str, tuple[str, int]] | None:
    """(master name, new master address) from a Sentinel announcement on ``channel``, or None for
    anything else (another event, a malformed message)."""
    words = data.split()
    try:
        if channel == "+switch-master" and len(words) == 5:
            return words[0], (words[3], int(words[4]))
        if channel == "+promoted-slave" and len(words) == 8 and words[0] == "slave" and words[4] == "@":
            return words[5], (words[2], int(words[3]))
    except ValueError:
        return None
    return None


class _MasterWatch:
    """Listens to every Sentinel for the news that the master changed, and moves the pool at once.

    Why: the pool confirms a node with ``ROLE`` only when a connection opens, and drops a
    connection only after an error; a deposed master that still answers (cut off from its
    replicas and Sentinels but not from this client, within ``min-replicas-max-lag``; or demoted
    while its last replica is still attached) kept acknowledging writes that the failover then
    discards. Re-checking ``ROLE`` would not help (such a master still says ``master``) and would
    cost a round trip; only the Sentinels know.

    How: one daemon thread per configured Sentinel subscribes to :data:`WATCHED_CHANNELS` with the
    Sentinels' own options (password, TLS, ``sentinel_timeout``). An announcement for this
    client's master name that names another address than the pool's: the announcing Sentinel is
    asked first from then on, the pool's master address becomes the announced one, idle
    connections are closed (they reconnect, re-discover and confirm with ``ROLE``), and each
    connection in use is closed when it is handed back (redis-py's pool keeps only connections to
    its current master address). Nothing is added to a command: reads stay one round trip.

    Liveness, all bounded: a subscription that has heard nothing for ``interval`` seconds sends a
    ``PING``; none answered within ``3 * interval`` (a hung Sentinel), or any error, closes it and
    subscribes again after a backoff doubling from 0.1 s up to ``interval * 2``. After every
    subscription (the first included) that Sentinel is asked for the master once (an announcement may have been
    missed meanwhile); a different answer resets the pool's address, so the next connection
    discovers the master afresh. :meth:`stop` ends every thread (their sockets are shut, so none
    waits for a timeout) and joins them within ``2 * sentinel_timeout + 1`` seconds.
    """

    def __init__(self, sentinel: _SpecSentinel, pool: SentinelConnectionPool, name: str, interval: float) -> None:
        self._sentinel, self._pool, self._name, self._interval = sentinel, pool, name, interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._subscriptions: dict[int, redis.client.PubSub] = {}
        # Announcements that moved the pool: (monotonic time, new address). For tests and logs.
        self.switches: list[tuple[float, tuple[str, int]]] = []
        self._threads = [
            threading.Thread(target=self._watch, args=(s,), name=f"sentinel-watch-{sentinel_address(s)}", daemon=True)
            for s in list(sentinel.sentinels)
        ]
        for thread in self._threads:
            thread.start()

    def subscribed(self) -> int:
        """How many Sentinels this client is subscribed to right now."""
        with self._lock:
            return len(self._subscriptions)

    def stop(self, timeout: float) -> None:
        self._stop.set()
        with self._lock:
            subscriptions = list(self._subscriptions.values())
        for pubsub in subscriptions:
            connection = pubsub.connection
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.disconnect()  # shuts the socket: the thread's wait ends now
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _watch(self, sentinel: redis.Redis) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            pubsub = sentinel.pubsub()
            try:
                pubsub.subscribe(*WATCHED_CHANNELS)
                with self._lock:
                    self._subscriptions[id(sentinel)] = pubsub
                # Also after the first subscription: a failover announced between the pool's
                # first discovery and this subscription would otherwise go unheard.
                self._resync(sentinel)
                backoff = 0.1
                self._listen(sentinel, pubsub)
            except Exception as exc:  # any failure: subscribe again, after the backoff
                if not self._stop.is_set():
                    log.debug("Sentinel watch on %s: %s: %s", sentinel_address(sentinel), type(exc).__name__, exc)
            finally:
                with self._lock:
                    self._subscriptions.pop(id(sentinel), None)
                with contextlib.suppress(Exception):
                    pubsub.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self._interval * 2)

    def _listen(self, sentinel: redis.Redis, pubsub: redis.client.PubSub) -> None:
        heard = pinged = time.monotonic()
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=self._interval / 4)
            now = time.monotonic()
            if message is not None:
                heard = now
                if message["type"] == "message":
                    self._announced(sentinel, _str(message["channel"]), _str(message["data"]))
            elif now - heard > 3 * self._interval:
                raise TimeoutError(f"no answer to PING for {now - heard:.1f} s")
            if now - max(heard, pinged) >= self._interval:
                pubsub.ping()
                pinged = now

    def _announced(self, sentinel: redis.Redis, channel: str, data: str) -> None:
        news = announced_master(channel, data)
        if news is None or news[0] != self._name:
            return
        address = news[1]
        if self._pool.master_address == address:
            return
        self._sentinel.prefer(sentinel)
        self._move(address)
        where = sentinel_address(sentinel)
        log.info("Sentinel %s announced %s: master %s is now %s:%d", where, channel, self._name, *address)

    def _resync(self, sentinel: redis.Redis) -> None:
        known = self._pool.proxy.master_address
        if known is None:  # nothing discovered yet: the first connection asks anyway
            return
        address = sentinel.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self._name)
        if address and (_str(address[0]), int(address[1])) != known:
            self._move(None)

    def _move(self, address: tuple[str, int] | None) -> None:
        """Point the pool at ``address`` (None: unknown, the next connection discovers it) and close
        the idle connections; connections in use are closed when released (not owned any more)."""
        self._sentinel.moves += 1  # before the address: a discovery in flight sees it and asks again
        self._pool.proxy.master_address = address
        self._pool.disconnect(inuse_connections=False)
        if address is not None:
            self.switches.append((time.monotonic(), address))


def _str(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def sentinels_known(state: Mapping[str, Any]) -> int:
    """How many Sentinels one Sentinel's ``SENTINEL MASTER`` answer says it knows: its peers
    (``num-other-sentinels``) and itself."""
    return int(state.get("num-other-sentinels", 0)) + 1


def _replicas(sentinel: redis.Redis, name: str) -> dict[str, dict[str, object]]:
    """One Sentinel's replicas of master ``name``: ``ip:port`` -> its ``SENTINEL REPLICAS`` entry."""
    return {f"{_str(r['ip'])}:{int(r['port'])}": r for r in sentinel.sentinel_slaves(name)}


def _follows(entry: dict[str, object], master: str) -> bool:
    """Whether a Sentinel's replica entry reports ``master`` (``ip:port``) as its own master and
    is not the replica a failover leader chose to promote."""
    flags = entry.get("flags", ())
    if "promoted" in (flags if isinstance(flags, (set, frozenset)) else str(flags).split(",")):
        return False
    host, port = entry.get("master-host"), entry.get("master-port")
    return host is not None and port is not None and f"{_str(host)}:{int(port)}" == master  # type: ignore[arg-type, call-overload]


class _ReplicaRoster:
    """Every replica the Sentinels know for one master name (the union of their lists), asked
    every ``interval`` seconds by a daemon thread, so that a confirmed write pays nothing for it
    while every known replica follows the master (:meth:`SentinelClient.replicas_accounted_for`). A
    Sentinel that does not answer keeps what it said last, and is logged as a warning when it
    stops answering and then at most every :data:`ROSTER_WARN_EVERY_S` (a steady cause, such as a
    wrong Sentinel password, would otherwise show only as UNCONFIRMED writes); :meth:`stop` ends
    the thread."""

    def __init__(self, sentinel: _SpecSentinel, name: str, interval: float) -> None:
        self._sentinel, self._name, self._interval = sentinel, name, interval
        self._lists: dict[str, frozenset[str]] = {}  # per Sentinel, what it said last
        self._known: frozenset[str] | None = None  # their union, made once per round
        self._failing_since: dict[str, float] = {}  # per Sentinel: last warning, while it fails
        # Its keys, as a value other threads may read while this one changes the dict.
        self._silent: frozenset[str] = frozenset()
        self._fresh = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"replica-roster-{name}", daemon=True)
        self._thread.start()

    def known(self, timeout: float) -> frozenset[str] | None:
        """The known replicas; None when no Sentinel has answered yet (waits up to ``timeout`` for
        the first round)."""
        self._fresh.wait(timeout)
        return self._known

    def silent(self) -> frozenset[str]:
        """``host:port`` of the Sentinels that failed the last round (the fence's slow path does
        not wait for them: a vote not asked for is a vote missing, which only ever refuses)."""
        return self._silent

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for sentinel in list(self._sentinel.sentinels):
                self._ask(sentinel)
            if self._lists:
                self._known = frozenset().union(*self._lists.values())
            self._fresh.set()
            self._stop.wait(self._interval)

    def _ask(self, sentinel: redis.Redis) -> None:
        where = sentinel_address(sentinel)
        try:
            self._lists[where] = frozenset(_replicas(sentinel, self._name))
        except Exception as exc:  # any failure: keep what it said last, and say so
            now = time.monotonic()
            warned = self._failing_since.get(where)
            if warned is None or now - warned >= ROSTER_WARN_EVERY_S:
                self._failing_since[where] = now
                self._silent = frozenset(self._failing_since)
                log.warning(
                    "replica roster of %s: Sentinel %s did not list the replicas (%s: %s); its last list "
                    "is kept, and a write is UNCONFIRMED while a replica it lists is not following",
                    self._name,
                    where,
                    type(exc).__name__,
                    exc,
                )
            return
        if self._failing_since.pop(where, None) is not None:
            self._silent = frozenset(self._failing_since)
            log.info("replica roster of %s: Sentinel %s answers again", self._name, where)


def encodable(what: str, value: str) -> str:
    """``value``, if it can be sent to Redis as it is: text that encodes as UTF-8.

    A ``ValueError`` naming the argument otherwise, e.g. for a lone surrogate, which
    ``json.loads`` accepts from a request body (``"\\udc80"``) and which would otherwise reach
    Redis as another id's key. Every public method of the strategies that takes an id or key
    calls this before it sends anything.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what}: a str, not {type(value).__name__} ({value!r})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} {value!r} cannot be encoded as UTF-8 ({exc.reason} at index {exc.start}): "
            "refused before anything was sent to Redis"
        ) from None
    return value


class _StrictArgumentsEncoder(Encoder):
    """Encodes command arguments strictly, whatever ``encoding_errors`` says; decodes replies
    with ``encoding_errors`` (``replace`` here). See the module docstring."""

    __slots__ = ()

    def encode(self, value: object) -> bytes | bytearray | memoryview:
        if isinstance(value, str):
            return value.encode(self.encoding, "strict")
        return super().encode(value)  # type: ignore[no-any-return]


class _RoleCheckedConnection(SentinelManagedConnection):
    """Confirms with ``ROLE`` that the node Sentinel named really is a master before using it
    (a demoted master keeps accepting connections until Sentinel reconfigures it). Arguments
    are encoded strictly, replies decoded leniently (:class:`_StrictArgumentsEncoder`)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        encoder = self.encoder
        self.encoder = _StrictArgumentsEncoder(encoder.encoding, encoder.encoding_errors, encoder.decode_responses)
        # The packer holds the encode() it was built with: rebuild it on ours (also in place of
        # hiredis's packer, should hiredis be installed, so that one encoder decides).
        self._command_packer = PythonRespSerializer(self._buffer_cutoff, self.encoder.encode)

    def connect(self) -> None:
        # The pool calls connect() before every command: an open connection returns at once,
        # without redis-py's retry wrapper around a check that would return at once too.
        if self._sock is None:
            super().connect()

    def connect_to(self, address: tuple[str, int]) -> None:
        super().connect_to(address)
        self.send_command("ROLE")
        role = self.read_response()
        kind = role[0].decode() if isinstance(role[0], bytes) else role[0]
        if kind != "master":
            self.disconnect()
            raise RedisConnectionError(f"{address[0]}:{address[1]} is not a master (ROLE says {kind})")


class _RoleCheckedSSLConnection(_RoleCheckedConnection, SentinelManagedSSLConnection):
    """The same ``ROLE`` check over TLS."""


def tls_options(config: ClientConfig) -> dict[str, object]:
    """redis-py connection options for TLS with certificate and host name verification (empty
    without a CA file)."""
    if not config.tls_ca_file:
        return {}
    return {"ssl": True, "ssl_ca_certs": config.tls_ca_file, "ssl_cert_reqs": "required", "ssl_check_hostname": True}


# Errors that prove the command was not executed: it never left the client (no connection, no
# master known: redis-py words these "Error ... connecting to" and "Timeout connecting"), or the
# server refused it without running it (READONLY, NOREPLICAS, LOADING, MASTERDOWN). redis-py has
# no error types for these distinctions, so the messages are matched.
_NOT_SENT_MARKERS = ("connecting to", "Timeout connecting", "is not a master", "previous master is now a slave")
_REFUSED = ("NOREPLICAS", "READONLY", "LOADING", "MASTERDOWN")


def _never_ran(exc: Exception) -> bool:
    if isinstance(exc, (MasterNotFoundError, PoolTimeout, redis.BusyLoadingError)):
        return True
    if isinstance(exc, ResponseError) and str(exc).startswith(_REFUSED):
        return True
    return any(marker in str(exc) for marker in _NOT_SENT_MARKERS)


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, redis.AuthenticationError):
        return False  # a wrong password stays wrong
    if isinstance(exc, (RedisConnectionError, TimeoutError)):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_REFUSED)


class SentinelClient:
    """One per process: a pooled client to the current master, found and re-found through Sentinel.

    Close it (``close()``, or use it as a context manager): with ``watch_sentinels`` (the
    default) it runs one daemon thread per Sentinel that holds the pool and a Sentinel
    connection, and always one more that refreshes the replicas the Sentinels know (the fence of
    confirmed writes: :meth:`replicas_accounted_for`), so a client that is dropped without
    closing keeps them until the process ends."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        socket_timeout = max(config.read_timeout, config.write_timeout)
        tls = tls_options(config)
        self._sentinel = _SpecSentinel(
            list(config.sentinels),
            sentinel_kwargs={
                "password": config.sentinel_password,
                "socket_timeout": config.sentinel_timeout,
                "socket_connect_timeout": config.sentinel_timeout,
                # No retries inside redis-py: a hung Sentinel must cost one timeout, not several
                # with backoff in between (redis-py's default); the next Sentinel is asked instead.
                "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
                **tls,
                **_NO_SETINFO,
            },
            username=config.username,
            password=config.password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=config.dial_timeout,
            socket_keepalive=True,
            **_NO_SETINFO,
            **{k: v for k, v in tls.items() if k != "ssl"},
        )
        # No retries inside redis-py: they would re-send non-idempotent commands (see run()).
        self.master: redis.Redis = self._sentinel.master_for(
            config.master_name,
            connection_pool_class=SentinelConnectionPool,
            connection_class=_RoleCheckedSSLConnection if tls else _RoleCheckedConnection,
            max_connections=config.pool_size,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
            decode_responses=True,
            # Replies only: a foreign value that is not UTF-8 must not raise in the middle of a
            # reply (that would return the connection to the pool with the rest of it unread).
            # Arguments are encoded strictly by the connection class (_StrictArgumentsEncoder).
            encoding_errors="replace",
        )
        # redis-py's pool raises at once when exhausted; go-redis waits. A queue of pool_size
        # tokens waits: a taken token is a connection in use (a SimpleQueue, written in C, costs
        # ~0.2 us per call where a threading.Semaphore, in Python, cost ~1.8 us).
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(config.pool_size):
            self._slots.put(None)
        pool = self.master.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        self.watch: _MasterWatch | None = (
            _MasterWatch(self._sentinel, pool, config.master_name, config.watch_interval)
            if config.watch_sentinels
            else None
        )
        self._roster = _ReplicaRoster(self._sentinel, config.master_name, config.watch_interval)

    # --- lifecycle ----------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Open ``min_idle`` connections now (go-redis MinIdleConns), so the first requests after
        start do not pay for the handshake."""
        pool = self.master.connection_pool
        connections = [pool.get_connection() for _ in range(self.config.min_idle)]
        for connection in connections:
            pool.release(connection)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop(timeout=2 * self.config.sentinel_timeout + 1)
        self._roster.stop(timeout=len(self._sentinel.sentinels) * self.config.sentinel_timeout + 1)
        self.master.connection_pool.disconnect()
        for sentinel in self._sentinel.sentinels:
            sentinel.close()

    def __enter__(self) -> SentinelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sentinel_master_address(self) -> tuple[str, int]:
        return self._sentinel.discover_master(self.config.master_name)

    def sentinels(self) -> list[redis.Redis]:
        """A client per configured Sentinel, for topology checks (not for data)."""
        return list(self._sentinel.sentinels)

    def replicas_accounted_for(self, master: str, following: frozenset[str]) -> bool:
        """The fence of a confirmed write (:mod:`smoke.strategies.replication`): True when every
        node the Sentinels know as a replica of this master name, other than ``master`` (the
        ``ip:port`` the write went to), is accounted for: in ``following`` (``ip:port`` of the
        replicas the master's ``INFO replication`` shows following it), or down, or provably
        still this master's replica.

        A replica that left the master while it is up may have been promoted (the master was hung
        and woke up during a failover): what the other replicas acknowledge is then lost when the
        Sentinels re-point them. The healthy path (every known replica following) asks nothing: the
        known replicas come from a background refresh. Otherwise every Sentinel is asked now (each
        within ``sentinel_timeout``; not one that failed the refresh's last round, which would cost
        every write its timeout while it is hung, and counts as not answering), and a replica
        missing from ``following`` is accounted for when either

        * a majority of the Sentinels see it down: its replica entry ``s_down``, or it is the
          master they name and that is down (before they switch, the old master of a failover is
          not in their replica lists); or
        * every Sentinel answered, names ``master`` as the master with no failover in
          progress and no down flag, and lists the replica, not flagged ``promoted``, as reporting
          ``master`` as its own master: a replica restarting (loading its files), reconnecting or
          cut off from the master alone. The failover leader flags the replica it chose
          ``promoted`` and the master ``failover_in_progress`` before it sends ``REPLICAOF NO
          ONE``, so while it answers, a promotion is seen.

        "The Sentinels" are as many as the client is configured with or as many as any answering
        Sentinel knows (``num-other-sentinels`` + 1), whichever is more: a client given one address
        of three (a Service in front of them, say) must not let one Sentinel's view be a majority.
        It then never confirms on this path (fails closed), and the smoke check
        ``topology.client_lists_every_sentinel`` names the misconfiguration.

        Whatever the replicas' flags: a Sentinel that shows a failover in progress, or names a
        master other than ``master`` that it does not see down, makes it a False (a replica seen
        down may be one promoted and then lost). Anything else, or too few answers, is a False:
        unconfirmed, never a guess. Also False when the Sentinels have never answered (nothing
        known to compare with)."""
        known = self._roster.known(timeout=len(self._sentinel.sentinels) * self.config.sentinel_timeout)
        if known is None:
            return False
        missing = known - following - {master}
        if not missing:
            return True
        sentinels = list(self._sentinel.sentinels)
        silent = self._roster.silent()
        name = self.config.master_name
        down_votes = dict.fromkeys(missing, 0)
        ours_votes = dict.fromkeys(missing, 0)
        total = len(sentinels)
        for sentinel in sentinels:
            if sentinel_address(sentinel) in silent:
                continue
            try:
                state = sentinel.sentinel_master(name)
                replicas = _replicas(sentinel, name)
            except (RedisConnectionError, TimeoutError, ResponseError, KeyError, ValueError) as exc:
                log.debug("fence: Sentinel %s: %s: %s", sentinel_address(sentinel), type(exc).__name__, exc)
                continue
            named = f"{_str(state['ip'])}:{int(state['port'])}"
            total = max(total, sentinels_known(state))
            master_down = bool(state.get("is_sdown") or state.get("is_odown"))
            failing_over = "failover_in_progress" in state.get("flags", ())
            if failing_over or (named != master and not master_down):
                # A failover under way, or another master named that is not down: whatever the
                # replicas' flags say, the write may be on the losing side of it.
                return False
            steady = named == master and not master_down
            for address in missing:
                entry = replicas.get(address)
                # Down: its replica entry says so, or it is the master this Sentinel still names.
                seen = entry if entry is not None else (state if named == address else {})
                down_votes[address] += bool(seen.get("is_sdown") or seen.get("is_odown"))
                if steady and entry is not None and _follows(entry, master):
                    ours_votes[address] += 1
        majority = total // 2 + 1
        return all(down_votes[a] >= majority or ours_votes[a] == total for a in missing)

    def node(self, host: str, port: int) -> redis.Redis:
        """A plain client to one data node, e.g. a replica, for checks that inspect it directly."""
        cfg = self.config
        return redis.Redis(
            host=host,
            port=port,
            username=cfg.username,
            password=cfg.password,
            **tls_options(cfg),  # type: ignore[arg-type]
            socket_timeout=max(cfg.read_timeout, cfg.write_timeout),
            socket_connect_timeout=cfg.dial_timeout,
            decode_responses=True,
            **_NO_SETINFO,  # type: ignore[arg-type]
        )

    # --- operations ---------------------------------------------------------------------------
    def _explained(self, exc: Exception) -> Exception:
        """The error to raise in place of ``exc`` when its cause is known and redis-py's words do
        not say it: a bare ``NOREPLICAS`` becomes :class:`NoReplicasInSync` naming the master."""
        norep = isinstance(exc, ResponseError) and str(exc).startswith("NOREPLICAS")
        if not norep or isinstance(exc, NoReplicasInSync):
            return exc
        address = self.master.connection_pool.master_address
        at = f" at {address[0]}:{address[1]}" if address else ""
        return NoReplicasInSync(
            f"NOREPLICAS master {self.config.master_name!r}{at} has no replicas in sync "
            "(min-replicas-to-write): it refuses writes until enough replicas are linked and "
            f"acknowledging; the write did not run, retry later (server: {exc})"
        )

    def run(self, operation: Callable[[redis.Redis], T], *, idempotent: bool) -> T:
        """Run ``operation(master)`` with bounded retries and re-discovery.

        ``idempotent=False`` (a counter, a claim): retried only when the error proves it never
        ran; otherwise :class:`OutcomeUnknown` is raised for the caller to decide.
        """
        cfg = self.config
        deadline = time.monotonic() + cfg.deadline
        attempt = 0
        while True:
            try:
                self._slots.get(timeout=cfg.pool_timeout)
            except queue.Empty:
                raise PoolTimeout(f"all {cfg.pool_size} connections busy for {cfg.pool_timeout}s") from None
            try:
                return operation(self.master)
            except Exception as exc:
                if not _retryable(exc):
                    raise
                if not idempotent and not _never_ran(exc):
                    raise OutcomeUnknown(f"outcome unknown after {type(exc).__name__}: {exc}") from exc
                attempt += 1
                if attempt > cfg.max_retries or time.monotonic() >= deadline:
                    explained = self._explained(exc)
                    if explained is exc:
                        raise
                    raise explained from exc
                # Drop the idle connections (the failed one redis-py has closed already): the next
                # connection asks Sentinel for the master again. Connections other threads are
                # using are left alone; they fail, or not, on their own.
                self.master.connection_pool.disconnect(inuse_connections=False)
            finally:
                self._slots.put(None)
            time.sleep(min(cfg.backoff_cap, cfg.backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
