"""The Sentinel client on real Redis and Sentinel: discovery, ROLE, retries, and no blind retry."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import ClientConfig, OutcomeUnknown, PoolTimeout, SentinelClient, _never_ran

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


def test_encodable_names_the_argument() -> None:
    from smoke.strategies.client import encodable

    assert encodable("request id", "pix-ok") == "pix-ok"
    with pytest.raises(ValueError, match=r"request id 'pix-\\udc80' cannot be encoded as UTF-8 \(surrogates"):
        encodable("request id", "pix-\udc80")
    with pytest.raises(TypeError, match="request id: a str, not int"):
        encodable("request id", 7)  # type: ignore[arg-type]
