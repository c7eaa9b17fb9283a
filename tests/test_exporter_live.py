"""The exporter sidecar, live: the real prometheus-redis-exporter (Debian's build of redis_exporter
1.45, the sidecar's release), started the way the rendered sidecar starts it (its wrapper script,
its env names, its flags), scraping the rehearsal's master, a replica and a Sentinel as the
``exporter`` ACL user, in plaintext (dev) and over TLS (prod's setting). Every metric a rule or a
dashboard panel reads must be among the names it really exports; no scrape may fail or be refused
by an ACL; and a password rotation (a two-line password file) reaches it without a restart."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components import acl
from components import topology as t
from components.alerts import KUBERNETES_METRICS, alert_rules, metric_names
from components.dashboard import panel_queries
from components.exporter import TLS_CA_FILE
from components.server_lines import ServerLine
from components.settings import settings_from_config
from smoke.local.rehearsal import LoopbackCluster, Node, RenderedFiles
from smoke.local.render import Rendered, write_render
from smoke.rotation import RehearsalTarget, rotate
from tests.support import render_with, require_binaries, require_redis_binaries

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]

EXPORTER = "prometheus-redis-exporter"
# How often the wrapper looks at its password file here (10 s in a pod): keeps the rotation test short.
RELOAD_SECONDS = "1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sidecar(rendered: Rendered, workload: str) -> dict[str, Any]:
    (container,) = [
        c
        for c in rendered.find("StatefulSet", workload)["spec"]["template"]["spec"]["containers"]
        if c["name"] == t.EXPORTER_CONTAINER
    ]
    return container


@dataclass
class RunningExporter:
    wrapper: subprocess.Popen[bytes]
    url: str
    log: Path

    def child(self) -> int:
        """The exporter process the wrapper started (its other child is the polling ``sleep``)."""
        children = Path(f"/proc/{self.wrapper.pid}/task/{self.wrapper.pid}/children").read_text().split()
        exporters = [int(pid) for pid in children if EXPORTER in _cmdline(int(pid))]
        assert len(exporters) == 1, f"wrapper children: {[_cmdline(int(pid)) for pid in children]}"
        return exporters[0]

    def child_env(self) -> dict[str, str]:
        raw = Path(f"/proc/{self.child()}/environ").read_bytes().decode()
        return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)

    def argv(self) -> list[str]:
        return [_cmdline(pid) for pid in (self.wrapper.pid, self.child())]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:  # gone meanwhile
        return ""


@contextlib.contextmanager
def run_sidecar(cluster: LoopbackCluster, rendered: Rendered, node: Node) -> Iterator[RunningExporter]:
    """The rendered sidecar's command, args and env on loopback. What differs from the pod, and only
    that: paths of the mounts (the rehearsal's auth dir, CA and script copy), the exporter binary's
    path (Debian's), the host it dials (the node's loopback address, which the rehearsal certificate
    names) and the listen port (random). The scheme, port and every other flag are the rendered ones."""
    spec = sidecar(rendered, "redis" if node.kind == "redis" else "redis-sentinel")
    shell, script, mode = spec["command"]
    assert shell == "/bin/sh"
    port = _free_port()
    args = []
    for arg in spec["args"]:
        flag, has_value, value = arg.partition("=")
        if not has_value:
            args.append(arg)
            continue
        if flag == "-redis.addr":
            scheme, _, address = value.partition("://")
            assert address.rsplit(":", 1)[1] == str(node.port)
            value = f"{scheme}://{node.host}:{node.port}"
        elif flag == "-web.listen-address":
            value = f"127.0.0.1:{port}"
        elif flag == "-tls-ca-cert-file":
            assert value == TLS_CA_FILE and cluster.tls_files is not None
            value = str(cluster.tls_files.ca)
        args.append(f"{flag}={value}")
    env = {
        "PATH": node.env["PATH"],  # BusyBox applets first, as in the alpine image
        "AUTH_DIR": str(cluster.auth_dir),
        "EXPORTER_RELOAD_SECONDS": RELOAD_SECONDS,
    }
    for item in spec["env"]:
        if item["name"] == "EXPORTER_BIN":
            env["EXPORTER_BIN"] = EXPORTER
        elif "value" in item:
            env[item["name"]] = item["value"]
        else:  # from the downward API
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            env[item["name"]] = node.env["POD_NAME"]
    log = node.workdir / f"exporter-{port}.log"
    with log.open("ab") as out:
        wrapper = subprocess.Popen(
            ["busybox", "sh", str(cluster.script_path(Path(script).name)), mode, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = RunningExporter(wrapper, f"http://127.0.0.1:{port}/metrics", log)
    try:
        scrape(running.url)  # up and answering
        child = running.child()
        yield running
    finally:
        wrapper.terminate()
        wrapper.wait(timeout=10)
    # The wrapper passes SIGTERM on and waits: no exporter is left behind (as in a pod's shutdown).
    assert not Path(f"/proc/{child}").exists()


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


def scrape_errors(text: str) -> list[str]:
    """``redis_exporter_last_scrape_error`` lines reporting an error (the exporter's own verdict)."""
    lines = [line for line in text.splitlines() if line.startswith("redis_exporter_last_scrape_error")]
    assert lines, "the exporter reports no redis_exporter_last_scrape_error at all"
    return [line for line in lines if not line.endswith(" 0")]


def exporter_denials(cluster: LoopbackCluster) -> list[dict[str, Any]]:
    """ACL LOG entries of the exporter user on every data node (a denied command lands there)."""
    found = []
    for node in cluster.redis_nodes:
        with cluster.client(node) as admin:
            found += [e for e in admin.acl_log() if e.get("username") == acl.EXPORTER.name]
    return found


# --- the two clusters: dev as rendered (plaintext), and dev rendered with TLS on (as prod) ---------


@pytest.fixture(scope="module")
def tls_render(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rendered, RenderedFiles]:
    rendered = render_with("dev", {"dict-redis:tls": '{"enabled": true}'})
    out = tmp_path_factory.mktemp("render-exporter-tls") / "dev"
    write_render(rendered, out)
    return rendered, RenderedFiles.from_render_dir(out / "k8s")


@pytest.fixture(scope="module")
def tls_cluster(tls_render: tuple[Rendered, RenderedFiles], server_line: ServerLine) -> Iterator[LoopbackCluster]:
    require_redis_binaries(server_line)
    with LoopbackCluster(tls_render[1], server=server_line) as cluster:
        assert cluster.tls
        yield cluster


@dataclass
class Scraped:
    names: set[str]
    text: str
    argv: list[str]
    env: dict[str, str]
    log: str


@pytest.fixture(scope="module", params=["plaintext", "tls"])
def exported(request: pytest.FixtureRequest, dev: Rendered, server_line: ServerLine) -> dict[str, Scraped]:
    """One scrape of the master, a replica and a Sentinel, with what the exporter ran with, on
    each server line (``server_line`` is asked for here so the clusters below run on it)."""
    require_binaries(EXPORTER)
    if request.param == "tls":
        cluster: LoopbackCluster = request.getfixturevalue("tls_cluster")
        rendered = request.getfixturevalue("tls_render")[0]
    else:
        cluster = request.getfixturevalue("cluster")
        rendered = dev
    (master,) = cluster.masters()
    replica = next(n for n in cluster.redis_nodes if n is not master)
    for node in cluster.redis_nodes:
        with cluster.client(node) as admin:
            admin.acl_log_reset()
    result: dict[str, Scraped] = {}
    for role, node in (("master", master), ("replica", replica), ("sentinel", cluster.sentinels[0])):
        with run_sidecar(cluster, rendered, node) as running:
            text = scrape(running.url)
            scraped = Scraped(names_of(text), text, running.argv(), running.child_env(), "")
        scraped.log = running.log.read_text()
        result[role] = scraped
    result["denials"] = exporter_denials(cluster)  # type: ignore[assignment]
    result["secrets"] = cluster.secrets()  # type: ignore[assignment]
    result["tls"] = request.param == "tls"  # type: ignore[assignment]
    return result


def roles(exported: dict[str, Any]) -> dict[str, Scraped]:
    return {k: v for k, v in exported.items() if isinstance(v, Scraped)}


def test_the_exporter_logs_in_as_the_exporter_user_and_scrapes_without_error(exported: dict[str, Any]) -> None:
    for role, scraped in roles(exported).items():
        assert "redis_up 1" in scraped.text.splitlines(), f"{role}: the exporter could not log in:\n{scraped.log}"
        assert scrape_errors(scraped.text) == [], role
        errors = [line for line in scraped.log.splitlines() if "level=error" in line or "NOPERM" in line]
        if role == "sentinel":
            # Sentinel has no LATENCY command; the exporter logs that once and carries on.
            errors = [line for line in errors if "unknown command 'LATENCY'" not in line]
        assert errors == [], f"{role}:\n{scraped.log}"
    # No command of a scrape was refused by the exporter user's ACL, on master or replica.
    assert exported["denials"] == []
    assert 'role="master"' in exported["master"].text
    assert 'role="slave"' in exported["replica"].text
    assert "redis_sentinel_master_ok_sentinels{" in exported["sentinel"].text


def test_it_dials_tls_when_the_stack_has_tls(exported: dict[str, Any]) -> None:
    for scraped in roles(exported).values():
        (addr,) = [a for a in scraped.argv[1].split("\0") if a.startswith("-redis.addr=")]
        assert addr.startswith("-redis.addr=rediss://" if exported["tls"] else "-redis.addr=redis://")


def test_the_password_is_the_first_line_in_the_exporters_env_and_nowhere_on_argv(exported: dict[str, Any]) -> None:
    for role, scraped in roles(exported).items():
        for argv in scraped.argv:
            assert not any(s in argv for s in exported["secrets"]), f"{role}: a password on a command line"
        assert not any(s in scraped.log for s in exported["secrets"]), f"{role}: a password in the log"
        # The exporter must not read our plain password file as its JSON password map.
        assert "REDIS_PASSWORD_FILE" not in scraped.env
        assert "\n" not in scraped.env["REDIS_PASSWORD"]
        assert scraped.env["REDIS_PASSWORD"] in exported["secrets"]
        assert scraped.env.get("REDIS_USER") == (None if role == "sentinel" else acl.EXPORTER.name)


def test_every_metric_a_rule_or_panel_reads_is_exported(exported: dict[str, Any]) -> None:
    server = exported["master"].names | exported["replica"].names
    sentinel = exported["sentinel"].names
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


def test_the_seeds_lag_metric_is_not_exported(exported: dict[str, Any]) -> None:
    """What the check above would catch: the seed's rule read a metric that does not exist."""
    server = exported["master"].names | exported["replica"].names
    assert "redis_replication_lag_bytes" not in server
    assert {"redis_connected_slave_lag_seconds", "redis_master_link_up", "redis_master_repl_offset"} <= server


# --- rotation ------------------------------------------------------------------------------------


def wait_until(what: str, condition: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def redis_up(url: str) -> bool:
    return "redis_up 1" in scrape(url).splitlines()


def test_a_rotation_of_the_exporter_password_reaches_the_running_sidecar(
    tls_cluster: LoopbackCluster, tls_render: tuple[Rendered, RenderedFiles]
) -> None:
    """The rotation tool's three steps (smoke/rotation.py) on the TLS cluster while the sidecar
    runs. At step 2 the Secret file reads ``new\\nold``: the wrapper must switch to the first line
    by itself, and the exporter must keep logging in; the old way (the whole Secret value in
    REDIS_PASSWORD, as an env var from secretKeyRef gets it) is refused at that point."""
    require_binaries(EXPORTER)
    cluster = tls_cluster
    (master,) = cluster.masters()
    with run_sidecar(cluster, tls_render[0], master) as running:
        assert redis_up(running.url)
        first_child = running.child()
        seen: dict[str, Any] = {}

        def exporter_switches(user: str) -> None:
            assert user == acl.EXPORTER.name
            value = cluster.read_secret(acl.EXPORTER.secret_key)
            new, _old = value.splitlines()
            wait_until("the wrapper to restart the exporter", lambda: running.child() != first_child)
            wait_until("the new exporter to log in", lambda: redis_up(running.url))
            seen["env"] = running.child_env()["REDIS_PASSWORD"]
            seen["new"] = new
            # The integration patch's way: the whole two-line value as the password.
            with old_style_exporter(cluster, master, value) as url:
                seen["old_style_up"] = redis_up(url)

        rotate(RehearsalTarget(cluster, roll=exporter_switches), acl.EXPORTER.name)
        assert seen["env"] == seen["new"]
        assert seen["old_style_up"] is False
        # After step 3 (old password refused everywhere) the sidecar still logs in, unrestarted.
        child = running.child()
        assert redis_up(running.url)
        assert running.child() == child
        log = running.log.read_text()
    assert log.count("changed: restarting the exporter") == 1, log
    assert not any(s in log for s in cluster.secrets())


@contextlib.contextmanager
def old_style_exporter(cluster: LoopbackCluster, node: Node, password_value: str) -> Iterator[str]:
    port = _free_port()
    assert cluster.tls_files is not None
    args = [
        f"-redis.addr=rediss://{node.host}:{node.port}",
        f"-web.listen-address=127.0.0.1:{port}",
        f"-tls-ca-cert-file={cluster.tls_files.ca}",
    ]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDIS_USER": "exporter", "REDIS_PASSWORD": password_value}
    process = subprocess.Popen([EXPORTER, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_wrapper_refuses_an_unknown_mode(cluster: LoopbackCluster) -> None:
    result = subprocess.run(
        ["busybox", "sh", str(cluster.script_path("start-exporter.sh")), "replica"],
        env={"PATH": os.environ["PATH"], "EXPORTER_BIN": EXPORTER, "AUTH_DIR": str(cluster.auth_dir)},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2
    assert re.search(r"usage: start-exporter.sh redis\|sentinel", result.stderr)
