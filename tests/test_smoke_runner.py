"""``python -m smoke``: the whole suite on the rehearsal, and clear failures on broken targets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smoke.checks import STRATEGIES
from smoke.drills.faults import iptables_problem
from smoke.local.rehearsal import LoopbackCluster
from smoke.local.render import ROOT
from tests.support import require_redis_binaries

pytestmark = pytest.mark.redis


def smoke(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_PASSWORD")}
    return subprocess.run(
        [sys.executable, "-m", "smoke", *args],
        cwd=ROOT,
        # A wide terminal: argparse wraps --help at $COLUMNS, and a long checkout path would split a line.
        env={**clean, "COLUMNS": "1000", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sentinel_args(cluster: LoopbackCluster) -> list[str]:
    args = ["--master-name", cluster.master_name]
    for sentinel in cluster.sentinels:
        args += ["--sentinel", sentinel.address]
    return args


def test_the_local_run_passes_every_check_and_the_failover_drill(dev_render_dir: Path, tmp_path: Path) -> None:
    require_redis_binaries()
    report_path = tmp_path / "smoke-report.json"
    result = smoke("local", "--render-dir", str(dev_render_dir / "k8s"), "--report", str(report_path))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "smoke: PASSED" in result.stdout and "strategy" in result.stdout

    report = json.loads(report_path.read_text())
    assert report["target"] == "local" and report["down_after_ms"] == 1500  # the dev stack's
    assert report["started_at"]
    strategies = {c["strategy"] for c in report["checks"]}
    assert strategies == set(STRATEGIES)
    assert all(c["passed"] for c in report["checks"]), [c for c in report["checks"] if not c["passed"]]
    # The eviction drill: the cache tier flooded ten times over, not one decision lost.
    eviction = report["eviction"]
    assert eviction["decisions_lost"] == 0 and eviction["decisions_checked"] > 0, eviction
    assert eviction["evicted_on_state"] == 0, eviction
    assert eviction["evicted_on_cache"] >= 10 * eviction["cache_capacity_keys"] > 0, eviction
    assert report["failover"] == report["failover_by_tier"]["cache"]
    # The drill runs on each tier: SIGKILL of the cache master, then of the state tier's master.
    assert set(report["failover_by_tier"]) == {"cache", "state"}
    for tier, failover in report["failover_by_tier"].items():
        assert failover["acknowledged_writes"] > 0, tier
        assert failover["lost_acknowledged_writes"] == 0, tier
        assert 0 < failover["rto_seconds"] <= report["down_after_ms"] / 1000 + 1.5, tier
        assert isinstance(failover["lost_plain_writes"], int)
    by_tier = report["failover_by_tier"]
    assert by_tier["state"]["old_master"] not in (by_tier["cache"]["old_master"], by_tier["cache"]["new_master"])
    # The partition drill of the state tier (iptables on loopback): its figures are in the report.
    partition = report["partition"]
    if iptables_problem() is None:
        assert partition["run"] is True, partition
        assert partition["lost_acknowledged_writes"] == 0 and partition["acknowledged_writes"] > 0, partition
        assert partition["late_ack_seconds"] <= 4.0 and partition["two_writable_seconds"] is not None, partition
        assert partition["confirmed_invalidations"] > 0 == partition["lost_confirmed_invalidations"], partition
        assert "partition (state tier" in result.stdout
    else:
        assert partition["run"] is False and "not run" in partition["reason"], partition
        assert "NOT RUN failover.partition" in result.stdout
    for op in ("entry.get_by_id", "claim.create", "workflow.set", "idempotency.claim", "ratelimit.check"):
        assert set(report["latency_ms"][op]) == {"p50", "p95", "p99"}, op
    # Everything the run wrote was removed again.
    assert "smoke: removed" in result.stdout


def app_env(cluster: LoopbackCluster) -> dict[str, str]:
    """The smoke Job's environment: the application ACL user and the Sentinels' password file."""
    return {
        "REDIS_USERNAME": "app",
        "REDIS_PASSWORD_FILE": str(cluster.password_file),
        "SENTINEL_PASSWORD_FILE": str(cluster.sentinel_password_file),
    }


def test_a_wrong_password_is_refused_with_a_clear_message(cluster: LoopbackCluster, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = smoke(
        "cluster",
        *sentinel_args(cluster),
        "--report",
        str(report_path),
        env={**app_env(cluster), "REDIS_PASSWORD": "not-the-password-of-this-stack"},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refused the password" in result.stderr and "REDIS_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "not-the-password-of-this-stack" not in result.stderr + result.stdout
    report = json.loads(report_path.read_text())
    assert report["passed"] is False
    assert report["checks"] == [
        {"strategy": "topology", "name": "password_accepted", "passed": False, "detail": report["checks"][0]["detail"]}
    ]


def test_an_unreadable_password_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = smoke("cluster", "--sentinel", "127.0.0.1:1", env={"REDIS_PASSWORD_FILE": str(missing)})
    assert result.returncode == 2
    assert f"REDIS_PASSWORD_FILE={missing}" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_sentinel_address_is_a_usage_error() -> None:
    result = smoke("cluster", "--sentinel", "redis-sentinel")
    assert result.returncode == 2 and "give a Sentinel as HOST:PORT" in result.stderr


def test_with_the_master_down_the_topology_check_fails_and_nothing_else_runs(
    fresh_cluster: LoopbackCluster, tmp_path: Path
) -> None:
    cluster = fresh_cluster
    for node in cluster.redis_nodes:
        cluster.kill_node(node, signal.SIGKILL)
    report_path = tmp_path / "report.json"
    result = smoke(
        "cluster",
        *sentinel_args(cluster),
        "--report",
        str(report_path),
        env=app_env(cluster),
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(report_path.read_text())
    checks = {(c["strategy"], c["name"]): c for c in report["checks"]}
    assert checks[("topology", "one_master")]["passed"] is False
    others = [c for c in report["checks"] if c["strategy"] != "topology"]
    assert others and all(not c["passed"] and c["detail"].startswith("not run") for c in others)
    assert "smoke: FAILED" in result.stdout


def test_the_report_can_go_to_stdout_as_its_last_line(cluster: LoopbackCluster) -> None:
    """How the in-cluster Job hands its result to CI (``kubectl logs ... | tail -n 1``)."""
    result = smoke(
        "--report",
        "-",
        "cluster",
        *sentinel_args(cluster),
        "--replicas",
        "2",
        env=app_env(cluster),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["passed"] is True and report["failover"] is None
    assert report["target"].startswith("cluster:") and "PASS topology.one_master" in result.stderr
    # The report says which server the suite ran against: the rehearsal's line and version.
    assert report["server"] == f"{cluster.server.name} {cluster.server_version}"


# --- unusable targets: refused at once, before any check ----------------------------------------


@pytest.fixture
def silent_sentinel() -> Iterator[str]:
    """A listening socket that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"127.0.0.1:{server.getsockname()[1]}"


def test_no_reachable_sentinel_exits_2_within_the_connect_timeout(silent_sentinel: str, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    started = time.monotonic()
    result = smoke(
        "--report",
        str(report_path),
        "cluster",
        "--sentinel",
        "127.0.0.1:1",
        "--sentinel",
        silent_sentinel,
        "--connect-timeout",
        "1",
        timeout=60,
    )
    took = time.monotonic() - started
    assert result.returncode == 2, result.stdout + result.stderr
    message = f"cannot reach any Sentinel: 127.0.0.1:1 (connection refused), {silent_sentinel} (no answer within 1 s)"
    assert result.stderr.strip() == f"smoke: {message}"
    assert "not run" not in result.stdout and "Traceback" not in result.stderr
    assert took < 15, took  # the interpreter's start-up plus one connect budget, not a whole suite
    report = json.loads(report_path.read_text())
    assert report["passed"] is False
    assert report["checks"] == [
        {"strategy": "topology", "name": "sentinel_reachable", "passed": False, "detail": message}
    ]


def test_the_connect_budget_has_a_default_of_a_few_seconds(silent_sentinel: str) -> None:
    started = time.monotonic()
    result = smoke("cluster", "--sentinel", silent_sentinel, timeout=60)
    assert result.returncode == 2 and "(no answer within 3 s)" in result.stderr
    assert time.monotonic() - started < 20


def test_an_empty_password_file_is_named_as_empty(tmp_path: Path) -> None:
    empty = tmp_path / "password"
    empty.write_text("\n")
    for variable in ("REDIS_PASSWORD_FILE", "SENTINEL_PASSWORD_FILE"):
        result = smoke("cluster", "--sentinel", "127.0.0.1:1", env={variable: str(empty)})
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"smoke: {variable}={empty}: the password file is empty (its first line must be the password); "
            f"write the password into it or unset {variable}"
        )


def test_a_report_path_that_cannot_be_written_is_refused_before_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for target in (["cluster", "--sentinel", "127.0.0.1:1"], ["local", "--render-dir", str(tmp_path)]):
        result = smoke("--report", str(blocker / "report.json"), *target)
        assert result.returncode == 2
        assert (
            result.stderr.strip() == f"smoke: --report {blocker / 'report.json'}: {blocker} is a file, not a directory"
        )
        assert result.stdout == ""
    result = smoke("cluster", "--sentinel", "127.0.0.1:1", "--report", str(tmp_path))
    assert result.returncode == 2 and f"{tmp_path} is a directory, not a file" in result.stderr


def test_cluster_help_says_how_to_connect_and_shows_the_defaults() -> None:
    result = smoke("cluster", "--help")
    assert result.returncode == 0
    for needed in ("REDIS_USERNAME", "REDIS_PASSWORD_FILE", "SENTINEL_PASSWORD_FILE", "REDIS_TLS_CA_FILE", "app"):
        assert needed in result.stdout
    assert "(default: 3.0)" in result.stdout and "(default: mymaster)" in result.stdout
    assert "(default: 2)" in result.stdout
    bad = smoke("cluster", "--sentinel", "127.0.0.1:1", "--connect-timeout", "0")
    assert bad.returncode == 2 and "--connect-timeout: '0': must be at least 0.1" in bad.stderr


def test_without_a_user_name_the_refusal_says_default_is_disabled(cluster: LoopbackCluster) -> None:
    """The recipe that sets only the password file: the client logs in as 'default', which is off."""
    env = {
        "REDIS_PASSWORD_FILE": str(cluster.password_file),
        "SENTINEL_PASSWORD_FILE": str(cluster.sentinel_password_file),
    }
    result = smoke("cluster", *sentinel_args(cluster), env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "REDIS_USERNAME is not set, so it logged in as 'default', which the stack disables" in result.stderr
    assert "python -m smoke cluster --help" in result.stderr and "Traceback" not in result.stderr
