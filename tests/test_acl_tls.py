"""ACL users and TLS on real processes: the dev stack rendered with TLS on, run on loopback with a
CA the rehearsal generates. Each user does its job and is refused the rest; plaintext is
refused; the smoke suite and the failover drill pass as the application user over TLS; a
password rotation under continuous traffic fails no operation."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from components import acl
from components.server_lines import ServerLine
from smoke.checks import runner
from smoke.drills.faults import KillMaster
from smoke.local.rehearsal import LoopbackCluster, RenderedFiles
from smoke.local.render import write_render
from smoke.rotation import RehearsalTarget, rotate
from smoke.strategies.client import SentinelClient
from tests.support import failover_to_a_deposed_master_that_accepts_writes, render_with, require_redis_binaries

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> RenderedFiles:
    out = tmp_path_factory.mktemp("render-tls") / "dev"
    write_render(render_with("dev", {"dict-redis:tls": '{"enabled": true}'}), out)
    files = RenderedFiles.from_render_dir(out / "k8s")
    assert files.tls  # the rendered scripts default to TLS: nothing is forced by the rehearsal
    return files


@pytest.fixture(scope="module")
def tls_cluster(tls_files: RenderedFiles, server_line: ServerLine) -> Iterator[LoopbackCluster]:
    require_redis_binaries(server_line)
    with LoopbackCluster(tls_files, server=server_line) as cluster:
        yield cluster


def master(cluster: LoopbackCluster):
    (node,) = cluster.masters()
    return node


def as_user(cluster: LoopbackCluster, node, user: str) -> redis.Redis:
    return cluster.client(node, user=user)


# (user, something its role needs, a representative forbidden command)
RIGHTS = [
    ("app", ("SET", "dict:entry:id:acl-test", "1"), ("FLUSHALL",)),
    ("app", ("EVAL", "return redis.call('GET', KEYS[1])", "1", "dict:entry:acl"), ("CONFIG", "GET", "maxmemory")),
    ("exporter", ("INFO", "memory"), ("GET", "dict:entry:id:acl-test")),
    # CONFIG GET would hand out masterauth, the replication user's password.
    ("exporter", ("SLOWLOG", "GET", "1"), ("CONFIG", "GET", "masterauth")),
    ("backup", ("INFO", "persistence"), ("GET", "dict:entry:id:acl-test")),
    ("probe", ("INFO", "replication"), ("SET", "dict:entry:id:acl-test", "2")),
    ("probe", ("DBSIZE",), ("KEYS", "*")),
    ("replication", ("PING",), ("GET", "dict:entry:id:acl-test")),
    ("sentinel", ("ROLE",), ("FLUSHDB",)),
]


@pytest.mark.parametrize(("user", "allowed", "forbidden"), RIGHTS, ids=[f"{r[0]}-{r[2][0]}" for r in RIGHTS])
def test_each_user_can_do_its_job_and_is_refused_the_rest(
    tls_cluster: LoopbackCluster, user: str, allowed: tuple[str, ...], forbidden: tuple[str, ...]
) -> None:
    with as_user(tls_cluster, master(tls_cluster), user) as c:
        c.execute_command(*allowed)
        with pytest.raises(redis.exceptions.NoPermissionError):
            c.execute_command(*forbidden)


def test_the_application_user_is_confined_to_each_tiers_key_prefixes(tls_cluster: LoopbackCluster) -> None:
    # The state tier's prefixes are refused on the cache and the other way round, so a decision
    # cannot be written to the evicting cache by a client pointed at the wrong tier.
    for tier in ("state", "cache"):
        other = "cache" if tier == "state" else "state"
        with as_user(tls_cluster, tls_cluster.masters(tier)[0], "app") as c:
            for prefix in acl.TIER_KEY_PREFIXES[tier]:
                assert c.set(f"{prefix}acl-probe", "1", ex=30)
            for prefix in set(acl.TIER_KEY_PREFIXES[other]) - set(acl.TIER_KEY_PREFIXES[tier]):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    c.set(f"{prefix}acl-probe", "1", ex=30)
    with as_user(tls_cluster, master(tls_cluster), "app") as c:
        with pytest.raises(redis.exceptions.NoPermissionError):
            c.set("someone-elses:key", "1")
        forbidden = (("KEYS", "*"), ("CONFIG", "SET", "maxmemory", "1"), ("MODULE", "LIST"), ("SHUTDOWN",))
        for command in (*forbidden, ("ACL", "LIST"), ("FLUSHDB",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                c.execute_command(*command)


def test_the_default_user_is_off(tls_cluster: LoopbackCluster) -> None:
    node = master(tls_cluster)
    ca = str(tls_cluster.tls_files.ca) if tls_cluster.tls_files else None
    anonymous = redis.Redis(host=node.host, port=node.port, ssl=True, ssl_ca_certs=ca, socket_timeout=2)
    with anonymous, pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    # Only a password (AUTH <password>) means the default user: refused whatever the password.
    with (
        pytest.raises(redis.exceptions.AuthenticationError),
        redis.Redis(host=node.host, port=node.port, ssl=True, ssl_ca_certs=ca, password=tls_cluster.password) as c,
    ):
        c.ping()


def test_plaintext_is_refused_on_every_port(tls_cluster: LoopbackCluster) -> None:
    for node in [*tls_cluster.redis_nodes, *tls_cluster.sentinels]:
        with socket.create_connection((node.host, node.port), timeout=2) as raw:
            raw.sendall(b"PING\r\n")
            try:
                reply = raw.recv(64)
            except (ConnectionResetError, TimeoutError):
                reply = b""
        assert not reply.startswith((b"+PONG", b"-NOAUTH")), f"{node.name} answered plaintext: {reply!r}"


def test_a_client_without_the_ca_is_refused(tls_cluster: LoopbackCluster) -> None:
    node = master(tls_cluster)
    no_ca = redis.Redis(host=node.host, port=node.port, ssl=True, ssl_cert_reqs="required", socket_timeout=2)
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"), no_ca:
        no_ca.ping()


def test_redis_cli_rdb_works_as_the_backup_user(tls_cluster: LoopbackCluster, tmp_path: Path) -> None:
    replica = next(n for n in tls_cluster.redis_nodes if tls_cluster.role(n) == "slave")
    assert tls_cluster.tls_files is not None
    dump = tmp_path / "dump.rdb"
    env = {**os.environ, "REDISCLI_AUTH": tls_cluster.read_secret("backup-password").splitlines()[0]}
    args = [tls_cluster.server.tool("cli"), "--no-auth-warning", "--tls", "--cacert", str(tls_cluster.tls_files.ca)]
    args += ["--user", "backup", "-h", replica.host, "-p", str(replica.port), "--rdb", str(dump)]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    assert dump.stat().st_size > 0
    check = subprocess.run(
        [tls_cluster.server.tool("check-rdb"), str(dump)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0 and "RDB looks OK" in check.stdout, check.stdout


@pytest.mark.default_server_line  # long; test_exporter_live rotates a password on both lines
def test_a_rotation_under_continuous_traffic_fails_no_operation(tls_cluster: LoopbackCluster) -> None:
    """The application user's password changes while a writer and a reader run non-stop."""
    clients = [SentinelClient(tls_cluster.client_config(min_idle=1))]
    stop = threading.Event()
    failures: list[str] = []
    done = [0]

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            client = clients[-1]
            try:
                client.run(lambda r, n=n: r.set(f"smoke:rotation:{n % 50}", n, ex=60), idempotent=True)
                client.run(lambda r, n=n: r.incr("smoke:rotation:counter"), idempotent=False)
                done[0] += 1
            except redis.RedisError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    def roll(user: str) -> None:
        # A client that restarts: a new pool built from the (now first) new password.
        old = clients[-1]
        clients.append(SentinelClient(tls_cluster.client_config(min_idle=1)))
        time.sleep(0.5)
        old.close()

    old_password = tls_cluster.read_secret("app-password").splitlines()[0]
    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(0.5)
        rotate(RehearsalTarget(tls_cluster, roll=roll), "app")
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(timeout=30)
        for client in clients:
            client.close()
    assert failures == []
    assert done[0] > 50
    new_password = tls_cluster.read_secret("app-password").splitlines()
    assert len(new_password) == 1 and new_password[0] != old_password
    for node in tls_cluster.redis_nodes:
        with tls_cluster.client(node, user="app") as c:
            assert c.ping()
        with (
            pytest.raises(redis.exceptions.AuthenticationError),
            redis.Redis(
                host=node.host,
                port=node.port,
                username="app",
                password=old_password,
                ssl=True,
                ssl_ca_certs=str(tls_cluster.tls_files.ca) if tls_cluster.tls_files else None,
            ) as c,
        ):
            c.ping()
    # The rotated password survives a restart: the ACL file is rendered from the Secret again.
    replica = next(n for n in tls_cluster.redis_nodes if tls_cluster.role(n) == "slave")
    tls_cluster.kill_node(replica, signal.SIGTERM)
    tls_cluster.start_node(replica)
    tls_cluster.wait_for("the restarted replica linked", tls_cluster.converged, timeout=60)
    with tls_cluster.client(replica, user="app") as c:
        assert c.ping()


def test_no_password_on_any_command_line(tls_cluster: LoopbackCluster) -> None:
    secrets = [s.encode() for s in tls_cluster.secrets()]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        assert not [s for s in secrets if s in cmdline], f"a password in argv of pid {proc.name}"


@pytest.mark.default_server_line  # the client's side; both lines' TLS and Sentinel auth are above
def test_the_client_follows_a_master_switch_over_tls_with_sentinel_auth(tls_cluster: LoopbackCluster) -> None:
    """The Sentinel watch subscribes with the Sentinels' password over TLS, and moves the pool
    off a deposed master that still accepts writes (tests/test_client.py has the plain-text case)."""
    with SentinelClient(tls_cluster.client_config(min_idle=2)) as client:
        client.warm_up()
        watch = client.watch
        assert watch is not None
        tls_cluster.wait_for("the watch subscribed over TLS", lambda: watch.subscribed() == 3, timeout=5)
        client.run(lambda r: r.set("dict:entry:id:tls-switch", "before", ex=60), idempotent=True)
        failover_to_a_deposed_master_that_accepts_writes(tls_cluster, client, "dict:entry:id:tls-switch")
        assert watch.switches
    tls_cluster.wait_for("the topology converged after the switch", tls_cluster.converged, timeout=60)


@pytest.mark.default_server_line  # `make local SERVER=redis` runs the suite on the other line
def test_the_smoke_suite_and_failover_drill_pass_as_the_application_user_over_tls(
    tls_cluster: LoopbackCluster,
) -> None:
    """Last in the module: the drill SIGKILLs the master."""
    config = tls_cluster.client_config()
    assert config.username == "app" and config.tls_ca_file
    target = runner.Target(
        "local-tls",
        config,
        len(tls_cluster.redis_nodes) - 1,
        KillMaster(tls_cluster, signal.SIGKILL),
        lambda: [node.address for node in tls_cluster.masters()],
    )
    report = runner.run(target, failover=True)
    failed = [f"{c.strategy}.{c.name}: {c.detail}" for c in report.checks if not c.passed]
    assert failed == []
    assert report.failover is not None and report.failover.lost_acknowledged_writes == 0
