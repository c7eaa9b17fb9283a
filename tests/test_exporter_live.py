"""The live metric check: the real prometheus-redis-exporter (Debian's build of redis_exporter 1.45,
the sidecar's release) scraped against the rehearsal's master, a replica and a Sentinel. Every
metric a rule or a dashboard panel reads must be among the names it really exports."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.alerts import KUBERNETES_METRICS, alert_rules, metric_names
from components.dashboard import panel_queries
from components.exporter import exporter_args
from components.settings import settings_from_config
from smoke.rehearsal import LoopbackCluster, Node
from tests.support import require_binaries

pytestmark = pytest.mark.redis

EXPORTER = "prometheus-redis-exporter"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def exporter_for(node: Node, password: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The exporter with the sidecar's flags, pointed at one node; the password only in its env."""
    port = _free_port()
    args = exporter_args(node.port, host=node.host, listen=f"127.0.0.1:{port}")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDIS_PASSWORD": password}
    process = subprocess.Popen([EXPORTER, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process, f"http://127.0.0.1:{port}/metrics"
    finally:
        process.terminate()
        process.wait(timeout=10)


def scrape(url: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def names_of(text: str) -> set[str]:
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


@pytest.fixture(scope="module")
def exported(cluster: LoopbackCluster) -> dict[str, tuple[set[str], str]]:
    """Metric names and the raw scrape of the master, a replica and a Sentinel."""
    require_binaries(EXPORTER)
    (master,) = cluster.masters()
    replica = next(n for n in cluster.redis_nodes if n is not master)
    result: dict[str, tuple[set[str], str]] = {}
    for role, node in (("master", master), ("replica", replica), ("sentinel", cluster.sentinels[0])):
        with exporter_for(node, cluster.password) as (process, url):
            text = scrape(url)
            cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
            assert cluster.password not in cmdline
        result[role] = (names_of(text), text)
    return result


def test_the_exporter_reaches_every_instance_with_the_password_from_env(
    exported: dict[str, tuple[set[str], str]],
) -> None:
    for role, (_, text) in exported.items():
        assert "redis_up 1" in text.splitlines(), f"{role}: the exporter could not log in"
    assert 'role="master"' in exported["master"][1]
    assert 'role="slave"' in exported["replica"][1]
    assert "redis_sentinel_master_ok_sentinels{" in exported["sentinel"][1]


def test_every_metric_a_rule_or_panel_reads_is_exported(exported: dict[str, tuple[set[str], str]]) -> None:
    server = exported["master"][0] | exported["replica"][0]
    sentinel = exported["sentinel"][0]
    settings = settings_from_config({}, "prod")
    queries = [(rule["alert"], rule["expr"]) for rule in alert_rules(settings)]
    queries += [(f"dashboard query {i}", q) for i, q in enumerate(panel_queries(settings))]
    missing = []
    checked = set()
    for where, expr in queries:
        available = sentinel if 'component="sentinel"' in expr else server
        wanted = metric_names(expr) - KUBERNETES_METRICS
        checked |= wanted
        missing += [f"{where}: {name}" for name in sorted(wanted - available)]
    assert missing == [], "metrics used but not exported by redis_exporter 1.45:\n" + "\n".join(missing)
    assert len(checked) >= 25  # the check looked at the real set, not at an empty one


def test_the_seeds_lag_metric_is_not_exported(exported: dict[str, tuple[set[str], str]]) -> None:
    """What the check above would catch: the seed's rule read a metric that does not exist."""
    server = exported["master"][0] | exported["replica"][0]
    assert "redis_replication_lag_bytes" not in server
    assert {"redis_connected_slave_lag_seconds", "redis_master_link_up", "redis_master_repl_offset"} <= server
