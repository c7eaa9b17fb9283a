"""The dev stack's rendered files, run as real redis-server and redis-sentinel processes.

Every process is started by the rendered start script under ``busybox sh``, exactly as the pods
start; these tests prove the scripts form a replicating cluster that Sentinel can fail over.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from smoke.local.rehearsal import LoopbackCluster, Node, RenderedFiles
from smoke.local.render import ROOT, stack_config, write_render
from tests.support import render_with, require_redis_binaries

pytestmark = pytest.mark.redis


# What the Sentinels and a start script log when the topology changes hands.
TOPOLOGY_EVENTS = (
    "+sdown", "-sdown", "+odown", "+try-failover", "+promoted-slave", "+switch-master", "-failover-abort",
)


def topology_story(cluster: LoopbackCluster, restarted: Node) -> str:
    """Who decided what, for a failure message: each Sentinel's events and the restarted pod's start."""
    parts = [f"{s.name}:\n{cluster.log_matching(s, *TOPOLOGY_EVENTS)}" for s in cluster.sentinels]
    parts.append(f"{restarted.name}:\n{cluster.log_matching(restarted, 'start-redis', 'starting ')}")
    return "\n".join(parts)


def master_of(cluster: LoopbackCluster) -> Node:
    masters = cluster.masters()
    assert len(masters) == 1, f"expected one master, found {[m.name for m in masters]}"
    return masters[0]


def test_first_boot_forms_one_master_two_linked_replicas_and_three_agreeing_sentinels_per_tier(
    cluster: LoopbackCluster,
) -> None:
    assert cluster.tiers == ["cache", "state"]
    for tier in cluster.tiers:
        nodes = cluster.tier_nodes(tier)
        masters = cluster.masters(tier)
        assert [m.name for m in masters] == [nodes[0].name], "with no Sentinel yet, ordinal 0 must start as master"
        master = masters[0]
        for replica in nodes[1:]:
            info = cluster.replication(replica)
            assert info["role"] == "slave"
            assert info["master_link_status"] == "up"
            assert f"{info['master_host']}:{info['master_port']}" == master.address
        for sentinel in cluster.sentinels:
            assert cluster.sentinel_view(sentinel, tier) == {
                "master": master.address,
                "num_slaves": 2,
                "num_other_sentinels": 2,
                "flags": "master",
            }
            with cluster.client(sentinel) as c:
                quorum = c.execute_command("SENTINEL", "CKQUORUM", cluster.tier_master_name(tier))
                assert str(quorum).startswith("OK 3 usable")
    assert [n.name for n in cluster.state_nodes] == ["redis-state-0", "redis-state-1", "redis-state-2"]
    assert cluster.state_master_name == "dictstate"


def test_the_state_tier_never_evicts_and_keeps_an_aof_while_the_cache_evicts_lru(cluster: LoopbackCluster) -> None:
    policies = {}
    for tier in cluster.tiers:
        with cluster.client(cluster.masters(tier)[0]) as c:
            config = c.config_get("maxmemory-policy") | c.config_get("appendonly") | c.config_get("appendfsync")
            policies[tier] = (config["maxmemory-policy"], config["appendonly"], config["appendfsync"])
    assert policies == {"cache": ("allkeys-lru", "yes", "everysec"), "state": ("noeviction", "yes", "everysec")}


def test_writes_on_the_master_reach_both_replicas(cluster: LoopbackCluster) -> None:
    master = master_of(cluster)
    with cluster.client(master) as c:
        c.set("topology:probe", "replicated", ex=60)
        assert c.execute_command("WAIT", 2, 2000) == 2
    for replica in cluster.redis_nodes[1:]:
        with cluster.client(replica) as c:
            assert c.get("topology:probe") == "replicated"
            with pytest.raises(redis.ReadOnlyError):
                c.set("topology:probe", "not on a replica")


@pytest.mark.both_server_lines
def test_probes_pass_on_every_healthy_pod(cluster: LoopbackCluster) -> None:
    for node in cluster.data_nodes:
        for mode in ("startup", "liveness", "readiness"):
            result = cluster.run_script(node, "probe-redis.sh", mode, "2")
            assert result.returncode == 0, f"{node.name} {mode}: {result.stderr}"
    for node in cluster.sentinels:
        for mode in ("liveness", "readiness"):
            result = cluster.run_script(node, "probe-sentinel.sh", mode, "2")
            assert result.returncode == 0, f"{node.name} {mode}: {result.stderr}"


@pytest.mark.both_server_lines
def test_a_replica_starts_unpromotable_and_is_promotable_and_ready_once_synced(cluster: LoopbackCluster) -> None:
    """A replica starts with replica-priority 0 (its files may miss writes confirmed since it
    stopped, and its offset says nothing until it syncs); start-redis.sh restores the template's
    priority once the link is up. Readiness waits for that, so a rolling update never moves on
    while the Sentinels may not fail over to the pod it just restarted."""
    replicas = [n for n in cluster.data_nodes if cluster.role(n) == "slave"]
    assert len(replicas) == len(cluster.data_nodes) - len(cluster.tiers)
    for replica in replicas:
        said = cluster.log_matching(replica, "unpromotable", "promotable")
        assert re.search(r"unpromotable \(replica-priority 0\).*\n.*replica-priority 100: promotable", said), said
        assert cluster.replication(replica)["slave_priority"] == 100
    replica = replicas[0]
    with cluster.client(replica) as c:
        c.config_set("replica-priority", 0)
        try:
            not_ready = cluster.run_script(replica, "probe-redis.sh", "readiness", "2")
        finally:
            c.config_set("replica-priority", 100)
    assert not_ready.returncode == 1 and "not yet promotable (replica-priority 0)" in not_ready.stderr
    assert cluster.run_script(replica, "probe-redis.sh", "readiness", "2").returncode == 0


@pytest.mark.both_server_lines
def test_probes_fail_on_a_wrong_password(cluster: LoopbackCluster, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password-at-all")
    node = cluster.redis_nodes[0]
    for mode in ("liveness", "readiness"):
        result = cluster.run_script(node, "probe-redis.sh", mode, "2", extra_env={"REDIS_PASSWORD_FILE": str(wrong)})
        assert result.returncode == 1, mode
        sentinel = cluster.sentinels[0]
        wrong_env = {"SENTINEL_PASSWORD_FILE": str(wrong)}
        result = cluster.run_script(sentinel, "probe-sentinel.sh", mode, "2", extra_env=wrong_env)
        assert result.returncode == 1, mode


def test_no_password_on_any_command_line_environment_or_log(cluster: LoopbackCluster) -> None:
    """Every credential: each ACL user's password and the Sentinels' password."""
    secrets = [s.encode() for s in cluster.secrets()]
    assert len(secrets) == 8
    ours = [n.process.pid for n in [*cluster.redis_nodes, *cluster.sentinels] if n.process]
    assert len(ours) == 6
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        assert not [s for s in secrets if s in cmdline], f"a password in argv of pid {proc.name}"
    for pid in ours:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert not [s for s in secrets if s in environ], f"a password in env of pid {pid}"
    for node in [*cluster.redis_nodes, *cluster.sentinels]:
        log = node.log_path.read_bytes()
        assert not [s for s in secrets if s in log], f"a password in the log of {node.name}"


def test_the_effective_configs_holding_the_password_are_private_to_their_user(cluster: LoopbackCluster) -> None:
    for node in cluster.redis_nodes:
        for name in ("redis.conf", "users.acl"):
            path = Path(node.env["REDIS_RUN_DIR"]) / name
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for node in cluster.sentinels:
        path = Path(node.env["SENTINEL_DATA_DIR"]) / "sentinel.conf"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.both_server_lines
def test_a_killed_master_is_replaced_and_comes_back_as_a_replica(fresh_cluster: LoopbackCluster) -> None:
    cluster = fresh_cluster
    old = master_of(cluster)
    with cluster.client(old) as c:
        c.set("survives:failover", "yes")
        assert c.execute_command("WAIT", 2, 2000) == 2

    cluster.kill_node(old, signal.SIGKILL)
    killed_at = time.monotonic()
    cluster.wait_for("a replica promoted", lambda: len(cluster.masters()) == 1, timeout=30)
    promoted_after = time.monotonic() - killed_at
    new = master_of(cluster)
    assert new is not old
    # dev: down-after 1500 ms; promotion must follow within a few seconds.
    assert promoted_after < 10, promoted_after
    cluster.wait_for(
        "every Sentinel naming the new master",
        lambda: all((cluster.sentinel_view(s) or {}).get("master") == new.address for s in cluster.sentinels),
        timeout=30,
    )

    # The pod restarts with the same start script (and its data directory), as the kubelet does.
    cluster.start_node(old)
    most_masters = 0
    deadline = time.monotonic() + 60
    seen: list[list[str]] = []
    while time.monotonic() < deadline:
        masters = [m.name for m in cluster.masters()]
        most_masters = max(most_masters, len(masters))
        if len(masters) > 1:
            seen.append(masters)
        if cluster.converged():
            break
        time.sleep(0.1)
    assert cluster.converged(), "the old master did not rejoin"
    assert most_masters == 1, f"a second master appeared: {seen[:3]}\n{topology_story(cluster, old)}"
    assert cluster.role(old) == "slave"
    assert master_of(cluster) is new
    with cluster.client(old) as c:
        assert c.get("survives:failover") == "yes"


@pytest.mark.both_server_lines
def test_prestop_hands_mastership_over_before_the_master_stops_also_right_after_the_replicas_restarted(
    fresh_cluster: LoopbackCluster,
) -> None:
    """A rolling update restarts the replicas first, each through its preStop hook (nothing to
    hand over) and readiness, then the master. A restarted replica is promotable once it has
    synced, but the Sentinels see that only at their next INFO of it (up to 10 s): the master's
    hook used to find NOGOODSLAVE everywhere and stop as master, a failure's outage instead of a
    handover's. It now asks again while writes go on."""
    cluster = fresh_cluster
    old = master_of(cluster)
    for replica in cluster.redis_nodes:
        if replica is not old:
            result = cluster.run_script(replica, "prestop-redis.sh", timeout=30)
            assert result.returncode == 0 and "nothing to hand over" in result.stderr
            cluster.kill_node(replica, signal.SIGTERM)
            cluster.start_node(replica)
            ready = lambda n=replica: cluster.run_script(n, "probe-redis.sh", "readiness", "2").returncode == 0  # noqa: E731
            cluster.wait_for(f"{replica.name} ready after its restart", ready, timeout=30)

    result = cluster.run_script(old, "prestop-redis.sh", extra_env={"PRESTOP_TIMEOUT": "20"}, timeout=40)
    assert result.returncode == 0, result.stderr
    assert "now name" in result.stderr, result.stderr
    named = {(cluster.sentinel_view(s) or {}).get("master") for s in cluster.sentinels}
    assert old.address not in named
    # Writes stay paused on the old master: nothing more is acknowledged there before it stops.
    # (paused, or refused outright once its replicas follow the new master: min-replicas-to-write)
    with (
        cluster.client(old, socket_timeout=0.5) as c,
        pytest.raises((redis.TimeoutError, redis.ResponseError)) as refused,
    ):
        c.set("after:prestop", "must not be acknowledged")
    assert refused.type is redis.TimeoutError or str(refused.value).startswith("NOREPLICAS")

    cluster.kill_node(old, signal.SIGTERM)  # the kubelet's SIGTERM after the hook
    cluster.start_node(old)
    cluster.wait_for("the old master back as a replica", cluster.converged, timeout=60)
    assert cluster.role(old) == "slave"


def sentinels_see_priority(cluster: LoopbackCluster, replica: Node, priority: int) -> bool:
    """Every Sentinel's last INFO of ``replica`` (SENTINEL REPLICAS) shows ``priority``."""
    for sentinel in cluster.sentinels:
        with cluster.client(sentinel) as c:
            views = c.execute_command("SENTINEL", "REPLICAS", cluster.master_name)
        seen = [v.get("slave-priority") for v in views if v.get("name") == replica.address]
        if [str(p) for p in seen] != [str(priority)]:
            return False
    return True


def test_prestop_hands_over_once_the_sentinels_see_a_replica_promotable_again(
    fresh_cluster: LoopbackCluster, tmp_path: Path
) -> None:
    """The Sentinels see a replica's priority only at their INFO of it, every 10 s. Here every
    Sentinel last saw both replicas unpromotable, and one has just become promotable (a restarted
    replica that has synced). The master's hook used to get NOGOODSLAVE from every Sentinel and
    stop as master; it now asks again, writes going on meanwhile, and hands over."""
    cluster = fresh_cluster
    old = master_of(cluster)
    replicas = [n for n in cluster.redis_nodes if n is not old]
    try:
        for replica in replicas:
            with cluster.client(replica) as c:
                c.config_set("replica-priority", 0)
        unseen = lambda: all(sentinels_see_priority(cluster, r, 0) for r in replicas)  # noqa: E731
        cluster.wait_for("every Sentinel seeing both replicas unpromotable", unseen, timeout=30)
        # The hook starts first and must find no promotable replica; only then does one become
        # promotable. (Made promotable before the hook started, a Sentinel's 10 s INFO could fall
        # in between, and the hook would hand over at its first ask, which proves nothing here.)
        # PRESTOP_TIMEOUT 20 s rather than the rendered 12 s: the Sentinels may need a whole INFO
        # period (10 s) after the change, counted from the hook's start in whole seconds.
        err = tmp_path / "prestop.err"
        with err.open("w") as stderr:
            hook = subprocess.Popen(
                ["busybox", "sh", str(cluster.script_path("prestop-redis.sh"))],
                env={**old.env, "PRESTOP_TIMEOUT": "20"},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            yet = "no promotable replica in the Sentinels' eyes yet"
            cluster.wait_for("the hook finding no promotable replica", lambda: yet in err.read_text(), timeout=10)
            with cluster.client(replicas[0]) as c:
                c.config_set("replica-priority", 100)
            returncode = hook.wait(timeout=40)
        finally:
            if hook.poll() is None:  # its own session: the shell and its redis-cli children
                os.killpg(hook.pid, signal.SIGKILL)
                hook.wait(timeout=10)
    finally:
        for replica in replicas:
            with cluster.client(replica) as c:
                c.config_set("replica-priority", 100)
    logged = err.read_text()
    assert returncode == 0, logged
    assert "failover of" in logged and "stopping as master" not in logged, logged
    named = lambda: {(cluster.sentinel_view(s) or {}).get("master") for s in cluster.sentinels} == {  # noqa: E731
        replicas[0].address
    }
    cluster.wait_for("every Sentinel naming the promotable replica", named, timeout=30)


def test_a_restarted_sentinel_keeps_its_identity_and_a_broken_replica_is_not_ready(
    fresh_cluster: LoopbackCluster,
) -> None:
    cluster = fresh_cluster
    sentinel = cluster.sentinels[2]
    with cluster.client(sentinel) as c:
        before = c.execute_command("SENTINEL", "MYID")
    cluster.kill_node(sentinel, signal.SIGKILL)
    cluster.start_node(sentinel)
    cluster.wait_for("the Sentinel back in the quorum", cluster.converged, timeout=60)
    with cluster.client(sentinel) as c:
        assert c.execute_command("SENTINEL", "MYID") == before
    # Peers still count two others, not a stale twin of the restarted one.
    for peer in cluster.sentinels:
        assert (cluster.sentinel_view(peer) or {}).get("num_other_sentinels") == 2

    replica = next(n for n in cluster.redis_nodes if cluster.role(n) == "slave")
    with cluster.client(replica) as c:
        c.execute_command("REPLICAOF", "127.0.0.1", "1")  # a master that does not exist
    assert cluster.run_script(replica, "probe-redis.sh", "readiness", "2").returncode == 1
    assert cluster.run_script(replica, "probe-redis.sh", "liveness", "2").returncode == 0


def test_a_replication_loop_fails_liveness_so_the_pods_restart_out_of_it(fresh_cluster: LoopbackCluster) -> None:
    """Two pods following each other (what the review saw after a master restarted while two
    Sentinels were down) never recover alone: the Sentinels find no good replica to promote and
    liveness used to pass. Now liveness fails on both, and a restart runs start-redis.sh."""
    cluster = fresh_cluster
    master = master_of(cluster)
    replica = next(n for n in cluster.redis_nodes if n is not master)
    assert cluster.run_script(replica, "probe-redis.sh", "liveness", "2").returncode == 0
    with cluster.client(master) as c:
        c.execute_command("REPLICAOF", replica.host, replica.port)  # the master now follows its replica
    for node in (master, replica):
        result = cluster.run_script(node, "probe-redis.sh", "liveness", "2")
        assert result.returncode == 1, f"{node.name}: {result.stderr}"
        assert "replication loop" in result.stderr
    # A replica whose master is merely gone is not restarted by liveness (MASTERDOWN).
    other = next(n for n in cluster.redis_nodes if n not in (master, replica))
    with cluster.client(other) as c:
        c.execute_command("REPLICAOF", "127.0.0.1", "1")
    assert cluster.run_script(other, "probe-redis.sh", "liveness", "2").returncode == 0


def test_the_rehearsal_command_starts_reports_and_stops_the_topology(dev_render_dir: Path) -> None:
    require_redis_binaries()
    result = subprocess.run(
        [sys.executable, "-m", "smoke.local.rehearsal", "--check", "--render-dir", str(dev_render_dir / "k8s")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"redis-0\s+127\.\d+\.\d+\.1:6379\s+cache master", result.stdout)
    assert re.search(r"redis-state-0\s+127\.\d+\.\d+\.21:6379\s+state master", result.stdout)
    assert len(re.findall(r"\b(cache|state) replica\b", result.stdout)) == 4 and result.stdout.count("sentinel ") >= 3
    assert "--state-master-name dictstate --state-replicas 2" in result.stdout
    workdir = Path(re.search(r" in (\S+) ", result.stdout).group(1))  # type: ignore[union-attr]
    assert not workdir.exists(), "the rehearsal left its directory behind"


def test_the_rehearsal_command_explains_a_missing_render(tmp_path: Path) -> None:
    require_redis_binaries()
    result = subprocess.run(
        [sys.executable, "-m", "smoke.local.rehearsal", "--check", "--render-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "run 'make render STACK=dev' first" in result.stderr and "Traceback" not in result.stderr


def test_a_parallel_first_boot_elects_ordinal_zero_only(dev_files: RenderedFiles) -> None:
    """The StatefulSets start every pod at once; only ordinal 0 may become master."""
    require_redis_binaries()
    cluster = LoopbackCluster(dev_files)
    try:
        cluster.start(parallel=True)
        assert [m.name for m in cluster.masters()] == ["redis-0"]
    finally:
        cluster.cleanup()


def test_sentinels_recreated_together_find_the_real_master(fresh_cluster: LoopbackCluster) -> None:
    """All Sentinel pods recreated (empty volumes) after a failover moved the master away from
    ordinal 0: they must monitor the pod that really is master, not fall back to ordinal 0."""
    cluster = fresh_cluster
    first = master_of(cluster)
    assert cluster.run_script(first, "prestop-redis.sh", timeout=40).returncode == 0
    cluster.kill_node(first, signal.SIGTERM)
    cluster.start_node(first)
    cluster.wait_for("converged after the handover", cluster.converged, timeout=60)
    master = master_of(cluster)
    assert master.name != "redis-0"

    for sentinel in cluster.sentinels:
        cluster.kill_node(sentinel, signal.SIGKILL)
        cluster.wipe_data(sentinel)
    for sentinel in cluster.sentinels:
        cluster.start_node(sentinel)
    cluster.wait_for("the recreated Sentinels converging", cluster.converged, timeout=60)
    assert master_of(cluster) is master
    assert {(cluster.sentinel_view(s) or {}).get("master") for s in cluster.sentinels} == {master.address}


def test_ordinal_zero_restarting_while_sentinels_are_down_follows_the_real_master(
    fresh_cluster: LoopbackCluster,
) -> None:
    cluster = fresh_cluster
    old = master_of(cluster)
    assert old.name == "redis-0"
    cluster.kill_node(old, signal.SIGKILL)
    cluster.wait_for("a replica promoted", lambda: len(cluster.masters()) == 1, timeout=30)
    new = master_of(cluster)
    cluster.wait_for(
        "every Sentinel naming the new master",
        lambda: all((cluster.sentinel_view(s) or {}).get("master") == new.address for s in cluster.sentinels),
        timeout=30,
    )
    for sentinel in cluster.sentinels:
        cluster.kill_node(sentinel, signal.SIGKILL)
    cluster.start_node(old)
    cluster.wait_for("redis-0 answering", lambda: cluster.role(old) is not None, timeout=30)
    assert cluster.role(old) == "slave", cluster.tail(old)
    assert master_of(cluster) is new


def test_a_master_that_is_not_ordinal_zero_restarting_while_two_sentinels_are_down_is_master_again(
    fresh_cluster: LoopbackCluster,
) -> None:
    """Two of three Sentinels down (no failover possible), the master (redis-1 or redis-2) restarts:
    its replicas still follow it, so it must come back as their master, not follow ordinal 0, its
    own replica (a replication loop the Sentinels never resolve: the layer stays down)."""
    cluster = fresh_cluster
    first = master_of(cluster)
    with cluster.client(cluster.sentinels[0]) as sentinel:
        sentinel.execute_command("SENTINEL", "FAILOVER", cluster.master_name)
    cluster.wait_for("a master other than redis-0", lambda: cluster.masters() not in ([], [first]), timeout=30)
    cluster.wait_for("converged after the failover", cluster.converged, timeout=60)
    old = master_of(cluster)
    assert old.name != "redis-0"
    with cluster.client(old) as c:
        c.set("keep:me", "1")
        assert c.execute_command("WAIT", 2, 2000) == 2
    down = cluster.sentinels[1:]
    for sentinel in down:
        cluster.kill_node(sentinel, signal.SIGKILL)
    cluster.kill_node(old, signal.SIGKILL)
    cluster.start_node(old)
    replicas = [n for n in cluster.redis_nodes if n is not old]

    def serving_again() -> bool:
        if cluster.role(old) != "master":
            return False
        try:
            return all(cluster.replication(n).get("master_link_status") == "up" for n in replicas)
        except redis.RedisError:
            return False

    cluster.wait_for(f"{old.name} master again with its replicas linked", serving_again, timeout=45)
    with cluster.client(old) as c:
        assert c.get("keep:me") == "1"
    for sentinel in down:
        cluster.start_node(sentinel)
    cluster.wait_for("converged with every Sentinel back", cluster.converged, timeout=60)
    assert master_of(cluster) is old


def test_a_master_back_on_an_empty_volume_does_not_wipe_its_replicas(fresh_cluster: LoopbackCluster) -> None:
    """The master's pod returns at once (before down-after) on a new, empty volume: it must not
    start as an empty master that its replicas would resync to."""
    cluster = fresh_cluster
    old = master_of(cluster)
    with cluster.client(old) as c:
        c.set("keep:me", "1")
        assert c.execute_command("WAIT", 2, 2000) == 2
    cluster.kill_node(old, signal.SIGKILL)
    cluster.wipe_data(old)
    cluster.start_node(old)
    cluster.wait_for("the empty pod back as a replica", lambda: cluster.role(old) == "slave", timeout=60)
    new = master_of(cluster)
    assert new is not old
    with cluster.client(new) as c:
        assert c.get("keep:me") == "1"
    cluster.wait_for("converged", cluster.converged, timeout=60)
    with cluster.client(old) as c:
        assert c.get("keep:me") == "1"


def test_the_rehearsal_starts_what_was_rendered_and_prints_a_smoke_command_that_works(
    tmp_path: Path,
) -> None:
    """A stack rendered with 5 Sentinels and 4 data nodes runs as 5 Sentinels and 4 data nodes (not
    the 3 + 3 of the dev stack), and the command the rehearsal prints for the smoke suite passes
    as printed: user, password files and Sentinels are all in it, no password is."""
    require_redis_binaries()
    config, _, _ = stack_config("dev")
    blocks = {key: json.loads(config[f"dict-redis:{key}"]) for key in ("redis", "sentinel")}
    blocks["redis"]["replicas"] = 4
    blocks["sentinel"].update(replicas=5, quorum=3)
    overrides = {f"dict-redis:{key}": json.dumps(block) for key, block in blocks.items()}
    write_render(render_with("dev", overrides), tmp_path / "dev")
    files = RenderedFiles.from_render_dir(tmp_path / "dev" / "k8s")
    assert (files.redis_count, files.sentinel_count) == (4, 5)
    with LoopbackCluster(files) as cluster:
        assert (len(cluster.redis_nodes), len(cluster.sentinels)) == (4, 5)
        command = cluster.smoke_command()
        assert not [secret for secret in cluster.secrets() if secret in command]
        assert "--replicas 3" in command and command.count("--sentinel ") == 5
        done = subprocess.run(
            ["sh", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=240, env={"PATH": "/usr/bin:/bin"}
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert "PASSED" in done.stdout
