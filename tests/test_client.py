"""The Sentinel client on real Redis and Sentinel: discovery, ROLE, retries, and no blind retry."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.sentinel import MasterNotFoundError

from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import (
    ClientConfig,
    NoReplicasInSync,
    OutcomeUnknown,
    PoolTimeout,
    SentinelClient,
    SentinelsUnreachable,
    _never_ran,
    announced_master,
)
from tests.support import failover_to_a_deposed_master_that_accepts_writes

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]


def config_for(cluster: LoopbackCluster, **overrides: object) -> ClientConfig:
    return cluster.client_config(**{"min_idle": 0, **overrides})


@pytest.fixture
def key() -> Iterator[str]:
    yield f"smoke:client:{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("error", "never_ran"),
    [
        (redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), True),
        (redis.TimeoutError("Timeout connecting to server"), True),
        (redis.ResponseError("NOREPLICAS Not enough good replicas to write."), True),
        (redis.ResponseError("READONLY You can't write against a read only replica."), True),
        (redis.BusyLoadingError("Redis is loading the dataset in memory"), True),
        (redis.ConnectionError("Connection closed by server."), False),
        (redis.TimeoutError("Timeout reading from socket"), False),
    ],
)
def test_errors_are_classified_as_never_ran_only_when_that_is_proven(error: Exception, never_ran: bool) -> None:
    assert _never_ran(error) is never_ran


def test_a_timed_out_non_idempotent_command_is_reported_not_repeated(cluster: LoopbackCluster, key: str) -> None:
    # Counts, then keeps the server busy past the client's read timeout: the reply is lost, the
    # count is not.
    slow_incr = "redis.call('INCR', KEYS[1]) local x = 0 for i = 1, 60000000 do x = x + 1 end return x"
    master = cluster.masters()[0]
    with SentinelClient(config_for(cluster, read_timeout=0.2, write_timeout=0.2)) as client:
        client.run(lambda r: r.ping(), idempotent=True)
        with pytest.raises(OutcomeUnknown):
            client.run(lambda r: r.eval(slow_incr, 1, key), idempotent=False)
    with cluster.client(master, socket_timeout=10) as admin:
        deadline = time.monotonic() + 10
        while admin.get(key) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        # It ran exactly once: a blind retry would have counted it twice.
        assert admin.get(key) == "1"
        admin.delete(key)


def test_the_client_follows_a_failover_and_confirms_the_new_master(fresh_cluster: LoopbackCluster, key: str) -> None:
    cluster = fresh_cluster
    with SentinelClient(config_for(cluster)) as client:
        client.run(lambda r: r.set(key, "before"), idempotent=True)
        old = cluster.masters()[0]
        cluster.kill_node(old, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.run(lambda r: r.set(key, "after"), idempotent=True)
                break
            except (redis.ConnectionError, redis.ResponseError) as exc:
                # NOREPLICAS: the new master is found but its replica is still re-attaching
                # (min-replicas-to-write); the client retried and gave up, the test waits on.
                if isinstance(exc, redis.ResponseError) and not str(exc).startswith("NOREPLICAS"):
                    raise
                assert time.monotonic() < deadline, "the client never found the new master"
        new = cluster.masters()[0]
        assert new is not old
        assert client.sentinel_master_address() == (new.host, new.port)
        assert client.run(lambda r: r.execute_command("ROLE")[0], idempotent=True) == "master"


def test_a_node_that_is_not_master_is_refused_by_the_role_check(cluster: LoopbackCluster) -> None:
    replica = next(n for n in cluster.redis_nodes if cluster.role(n) == "slave")
    with SentinelClient(config_for(cluster, max_retries=1)) as client:
        client._sentinel.discover_master = lambda name: (replica.host, replica.port)  # type: ignore[method-assign]
        with pytest.raises(redis.ConnectionError, match="is not a master"):
            client.run(lambda r: r.ping(), idempotent=True)


def test_the_pool_waits_for_a_free_connection_then_gives_up(cluster: LoopbackCluster) -> None:
    with SentinelClient(config_for(cluster, pool_size=1, pool_timeout=0.3)) as client:
        holding = threading.Event()

        def hold() -> None:
            client.run(lambda r: (holding.set(), time.sleep(1.0)), idempotent=True)

        worker = threading.Thread(target=hold)
        worker.start()
        holding.wait(5)
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            client.run(lambda r: r.ping(), idempotent=True)
        assert 0.25 <= time.monotonic() - started < 1.0
        worker.join()
        assert client.run(lambda r: r.ping(), idempotent=True) is True


def test_warm_up_opens_the_idle_connections(cluster: LoopbackCluster) -> None:
    with SentinelClient(config_for(cluster, min_idle=3)) as client:
        client.warm_up()
        pool = client.master.connection_pool
        assert len(pool._available_connections) == 3


def test_a_non_utf8_value_does_not_desynchronise_the_connection(cluster: LoopbackCluster, key: str) -> None:
    master = cluster.masters()[0]
    with cluster.client(master, decode_responses=False) as raw:
        raw.set(key, b"\xff\xfe{not utf-8", ex=60)
    with SentinelClient(config_for(cluster, pool_size=1)) as client:
        value = client.run(lambda r: r.mget([key, "smoke:client:absent"]), idempotent=True)
        assert value[0].endswith("{not utf-8") and value[1] is None
        for word in ("a", "b", "c"):
            assert client.run(lambda r, w=word: r.echo(w), idempotent=True) == word
        client.run(lambda r: r.delete(key), idempotent=True)


def test_connections_skip_client_setinfo(cluster: LoopbackCluster) -> None:
    # redis-py would send CLIENT SETINFO twice per new connection: two round trips, and a NOPERM
    # for the application user on Redis 7.2 (its ACL allows no such command).
    replica = next(n for n in cluster.redis_nodes if cluster.role(n) == "slave")
    with SentinelClient(config_for(cluster)) as client, client.node(replica.host, replica.port) as node:
        client.run(lambda r: r.ping(), idempotent=True)
        connection = client.master.connection_pool.get_connection()
        try:
            assert connection.is_connected and connection.driver_info is None
        finally:
            client.master.connection_pool.release(connection)
        assert node.ping() and node.connection_pool.connection_kwargs["driver_info"] is None
        sentinel = client.sentinels()[0]
        assert sentinel.connection_pool.connection_kwargs["driver_info"] is None


def test_arguments_are_encoded_strictly_and_replies_leniently(cluster: LoopbackCluster, key: str) -> None:
    """redis-py applies ``encoding_errors`` to what it sends as well as to replies: with
    ``replace`` a lone surrogate was sent as ``?`` (two ids, one key). Arguments are now encoded
    strictly (nothing is sent, the connection stays usable); a reply that is not UTF-8 is still
    decoded with replacement characters, never raising half-way through a reply."""
    master = cluster.masters()[0]
    with SentinelClient(config_for(cluster, pool_size=1)) as client:
        with pytest.raises(UnicodeEncodeError):
            client.run(lambda r: r.set(f"{key}-\udc80", "x", ex=60), idempotent=True)
        with pytest.raises(UnicodeEncodeError):
            client.run(lambda r: r.execute_command("EVAL", "return 1", 0, "\ud800"), idempotent=True)
        with pytest.raises(UnicodeEncodeError):
            client.run(lambda r: r.pipeline(transaction=False).set(key, "\udc80").execute(), idempotent=True)
        assert client.run(lambda r: r.echo("still in sync"), idempotent=True) == "still in sync"
        with cluster.client(master, decode_responses=False) as raw:
            assert raw.exists(f"{key}-?".encode(), key.encode()) == 0
            raw.set(key, b"ok-\xff", ex=60)
        assert client.run(lambda r: r.get(key), idempotent=True) == "ok-\ufffd"
        assert client.run(lambda r: r.set(key, "ok-\u00e9", ex=60), idempotent=True)
        assert client.run(lambda r: r.get(key), idempotent=True) == "ok-\u00e9"
        client.run(lambda r: r.delete(key), idempotent=True)


def test_writes_leave_a_deposed_master_that_still_accepts_them(fresh_cluster: LoopbackCluster, key: str) -> None:
    """Issue 16 item 4: ``ROLE`` was checked only when a connection opened and pooled connections
    were dropped only after an error, so a deposed master that still accepted writes got all of
    them (and the failover discarded them) until Sentinel converted it, ``failover-timeout``
    (10 s) later. The client now follows the Sentinels' announcements."""
    cluster = fresh_cluster
    old = cluster.masters()[0]
    with SentinelClient(config_for(cluster, min_idle=4)) as client:
        client.warm_up()
        assert client.watch is not None
        cluster.wait_for("the watch subscribed", lambda: client.watch.subscribed() == 3, timeout=5)
        client.run(lambda r: r.set(key, "before", ex=60), idempotent=True)
        figures = failover_to_a_deposed_master_that_accepts_writes(cluster, client, key)
        # No pooled connection to the deposed master is left, idle or in use.
        pool = client.master.connection_pool
        stale = [c for c in pool._available_connections if c.is_connected and (c.host, c.port) == (old.host, old.port)]
        assert stale == [] and client.watch.switches
        moved = client.watch.switches[0][0] - figures["started"]
        every = figures["every_sentinel_moved_s"]
        print(f"pool moved {moved:.3f} s after the failover command; every Sentinel {every:.3f} s after it")


def test_the_watch_follows_every_sentinel_and_stops_on_close(cluster: LoopbackCluster) -> None:
    with SentinelClient(config_for(cluster, watch_interval=0.2)) as client:
        watch = client.watch
        assert watch is not None
        cluster.wait_for("the watch subscribed", lambda: watch.subscribed() == 3, timeout=5)
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    assert watch.subscribed() == 0 and not any(t.is_alive() for t in watch._threads)
    with SentinelClient(config_for(cluster, watch_sentinels=False)) as client:
        assert client.watch is None


def test_a_discovery_that_overlapped_a_pool_move_is_asked_again(cluster: LoopbackCluster) -> None:
    """Between the failover leader's ``+promoted-slave`` and a slower Sentinel's ``+switch-master``
    that Sentinel still names the deposed master. A discovery in flight when the watch moved the
    pool may carry that answer: it is thrown away and the Sentinels are asked again (before,
    the stale answer put the pool back on the deposed master)."""
    with SentinelClient(config_for(cluster, watch_sentinels=False)) as client:
        sentinel = client._sentinel
        real_ask, asked = sentinel._ask, []

        def ask(name: str) -> tuple[str, int]:
            asked.append(name)
            if len(asked) == 1:  # the watch moves the pool while this discovery runs
                sentinel.moves += 1
                return ("127.0.0.1", 1)  # what a Sentinel not yet told would answer
            return real_ask(name)

        sentinel._ask = ask  # type: ignore[method-assign]
        master = cluster.masters()[0]
        assert sentinel.discover_master("mymaster") == (master.host, master.port)
        assert len(asked) == 2


@pytest.mark.default_server_line  # the messages are the client's; one line shows them
def test_errors_name_the_cause_when_it_is_known(fresh_cluster: LoopbackCluster, key: str) -> None:
    """Issue 16 item 8: a master without replicas answered a raw ``NOREPLICAS``, and no Sentinel
    a bare ``Error 111``; both now say what is wrong, with the addresses, never a password."""
    cluster = fresh_cluster
    master = cluster.masters()[0]
    config = config_for(cluster, max_retries=1, watch_sentinels=False)
    with SentinelClient(config) as client:
        client.run(lambda r: r.set(key, "1", ex=60), idempotent=True)
        for replica in [n for n in cluster.redis_nodes if n is not master]:
            cluster.kill_node(replica, signal.SIGKILL)
        with pytest.raises(NoReplicasInSync) as refused:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the master notices a dead replica's link within ms
                client.run(lambda r: r.set(key, "2", ex=60), idempotent=False)
        message = str(refused.value)
        assert isinstance(refused.value, redis.ResponseError) and message.startswith("NOREPLICAS")
        assert f"master 'mymaster' at {master.host}:{master.port} has no replicas in sync" in message
        assert "min-replicas-to-write" in message

        # Every Sentinel gone: one hung (SIGSTOP), the others dead.
        cluster.pause_node(cluster.sentinels[0])
        try:
            for sentinel in cluster.sentinels[1:]:
                cluster.kill_node(sentinel, signal.SIGKILL)
            client.master.connection_pool.disconnect()
            started = time.monotonic()
            with pytest.raises(SentinelsUnreachable) as unreachable:
                client.run(lambda r: r.get(key), idempotent=True)
            elapsed = time.monotonic() - started
        finally:
            cluster.resume_node(cluster.sentinels[0])
    message = str(unreachable.value)
    assert isinstance(unreachable.value, MasterNotFoundError)
    assert message.startswith("master 'mymaster': cannot reach any Sentinel (no Sentinel majority reachable, 0 of 3")
    for sentinel in cluster.sentinels:
        assert sentinel.address in message
    assert "Timeout" in message and "Connection refused" in message
    assert not [s for s in cluster.secrets() if s in message]
    # Two attempts, each at most one Sentinel timeout (the hung one) plus two refusals.
    assert elapsed < 2 * (config.sentinel_timeout + 0.5), elapsed


@pytest.mark.default_server_line  # the roster and its log lines are the client's
def test_the_replica_roster_warns_once_about_a_sentinel_that_stops_answering_and_says_when_it_is_back(
    cluster: LoopbackCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The fence's replica roster keeps a silent Sentinel's last list. It swallowed the failure,
    so a steady cause (a wrong Sentinel password, a hung Sentinel) showed only as UNCONFIRMED
    writes; now the first failure is a warning naming the Sentinel, repeated at most once a
    minute, and its return is logged."""
    caplog.set_level(logging.INFO, logger="smoke.strategies.client")
    master = cluster.masters()[0]
    replicas = {n.address for n in cluster.redis_nodes if n is not master}
    hung = cluster.sentinels[2]

    def roster_lines(level: int, text: str) -> list[str]:
        lines = [r.getMessage() for r in caplog.records if r.levelno == level]
        return [line for line in lines if line.startswith("replica roster") and text in line]

    with SentinelClient(config_for(cluster, watch_interval=0.1, watch_sentinels=False)) as client:
        assert client._roster.known(timeout=5) == replicas
        cluster.pause_node(hung)
        try:
            cluster.wait_for("the roster's warning", lambda: roster_lines(logging.WARNING, hung.address), timeout=5)
            time.sleep(1.5)  # more rounds against the hung Sentinel: each waits out its timeout
            assert client._roster.known(timeout=0) == replicas  # its last list is kept
        finally:
            cluster.resume_node(hung)
        cluster.wait_for("the roster's all-clear", lambda: roster_lines(logging.INFO, "answers again"), timeout=5)
    warned = roster_lines(logging.WARNING, hung.address)  # (a healthy Sentinel slow once would warn too)
    assert len(warned) == 1, warned  # not one per round
    assert f"Sentinel {hung.address} did not list the replicas (TimeoutError" in warned[0]
    assert roster_lines(logging.INFO, f"Sentinel {hung.address} answers again")
    assert not [secret for secret in cluster.secrets() if secret in caplog.text]


def test_a_minority_of_sentinels_that_knows_no_master_is_named(cluster: LoopbackCluster) -> None:
    alive = cluster.sentinels[0]
    with socket.socket() as closed_a, socket.socket() as closed_b:
        closed_a.bind(("127.0.0.1", 0))
        closed_b.bind(("127.0.0.1", 0))
        dead = [closed_a.getsockname(), closed_b.getsockname()]  # bound, not listening: refused
        config = config_for(cluster, sentinels=[(alive.host, alive.port), *dead], master_name="nosuchmaster")
        with SentinelClient(config) as client, pytest.raises(SentinelsUnreachable) as refused:
            client.sentinel_master_address()
    message = str(refused.value)
    assert message.startswith("master 'nosuchmaster': no Sentinel majority reachable (1 of 3 answered")
    assert f"{dead[0][0]}:{dead[0][1]}" in message and f"{dead[1][0]}:{dead[1][1]}" in message


def test_announcements_are_parsed_for_the_master_they_name() -> None:
    assert announced_master("+switch-master", "mymaster 10.0.0.1 6379 10.0.0.2 6380") == (
        "mymaster",
        ("10.0.0.2", 6380),
    )
    promoted = "slave 10.0.0.2:6379 10.0.0.2 6379 @ dictstate 10.0.0.1 6379"
    assert announced_master("+promoted-slave", promoted) == ("dictstate", ("10.0.0.2", 6379))
    assert announced_master("+switch-master", "mymaster 10.0.0.1 6379") is None
    assert announced_master("+sdown", "master mymaster 10.0.0.1 6379") is None
    assert announced_master("+switch-master", "mymaster a b c port") is None


def test_encodable_names_the_argument() -> None:
    from smoke.strategies.client import encodable

    assert encodable("request id", "pix-ok") == "pix-ok"
    with pytest.raises(ValueError, match=r"request id 'pix-\\udc80' cannot be encoded as UTF-8 \(surrogates"):
        encodable("request id", "pix-\udc80")
    with pytest.raises(TypeError, match="request id: a str, not int"):
        encodable("request id", 7)  # type: ignore[arg-type]
