"""The pure renderers: configs that carry no secret or address, scripts that BusyBox can run."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from components.renderers.redis_conf import render_redis_conf
from components.renderers.scripts import SCRIPT_NAMES, render_scripts
from components.renderers.sentinel_conf import render_sentinel_conf
from components.server_lines import ServerLine
from components.settings import settings_from_config
from tests.support import render_stack, require_redis_binaries

PROD = settings_from_config({}, "prod")


def directives(conf: str) -> list[list[str]]:
    return [line.split() for line in conf.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_redis_conf_carries_the_seed_persistence_and_memory_settings() -> None:
    lines = directives(render_redis_conf(PROD))
    assert ["save", "900", "1"] in lines and ["save", "60", "10000"] in lines
    assert ["appendonly", "yes"] in lines and ["appendfsync", "everysec"] in lines
    assert ["maxmemory", str(2 * 2**30)] in lines
    assert ["maxmemory-policy", "allkeys-lru"] in lines
    assert ["io-threads", "4"] in lines
    assert ["replica-read-only", "yes"] in lines
    # A master cut off from its replicas stops acknowledging writes it would lose, within 2 + 2 s.
    assert ["min-replicas-to-write", "1"] in lines and ["min-replicas-max-lag", "2"] in lines
    # A full sync of every replica at once (first boot) starts without waiting out the delay.
    assert ["repl-diskless-sync-delay", "1"] in lines and ["repl-diskless-sync-max-replicas", "2"] in lines


def test_redis_conf_has_no_secret_no_address_and_no_replicaof() -> None:
    names = {line[0] for line in directives(render_redis_conf(PROD))}
    assert not names & {"requirepass", "masterauth", "bind", "port", "replicaof", "slaveof", "dir", "pidfile"}


def test_redis_conf_turns_rdb_off_with_an_empty_save_list() -> None:
    s = settings_from_config({"redis": {"persistence": {"savePoints": []}}}, "test")
    assert ["save", '""'] in directives(render_redis_conf(s))


def test_sentinel_template_monitors_both_tiers_with_the_quorum_and_timings() -> None:
    lines = directives(render_sentinel_conf(PROD))
    for name in ("mymaster", "dictstate"):
        assert ["sentinel", "monitor", name, f"@MASTER_HOST:{name}@", f"@MASTER_PORT:{name}@", "2"] in lines
        assert ["sentinel", "down-after-milliseconds", name, "5000"] in lines
        assert ["sentinel", "failover-timeout", name, "10000"] in lines
    assert len([line for line in lines if line[:2] == ["sentinel", "monitor"]]) == 2
    assert ["sentinel", "resolve-hostnames", "yes"] in lines
    assert ["sentinel", "announce-hostnames", "yes"] in lines
    assert not any(line[:2] == ["sentinel", "auth-pass"] for line in lines)


def test_scripts_get_this_stacks_kubernetes_defaults_and_no_placeholder_is_left() -> None:
    scripts = render_scripts(PROD)
    assert set(scripts) == set(SCRIPT_NAMES)
    for name, text in scripts.items():
        assert "@@" not in text, name
    common = scripts["common.sh"]
    assert "redis-sentinel-0.redis-sentinel-headless.redis.svc.cluster.local:26379" in common
    assert ': "${REDIS_SEED_HOST:=redis-0.redis-headless.redis.svc.cluster.local}"' in common
    # Credentials: the probe ACL user's file and the Sentinels' password file; TLS on in prod.
    assert ': "${AUTH_DIR:=/etc/redis-auth}"' in common and ': "${REDIS_USER:=probe}"' in common
    assert ': "${REDIS_PASSWORD_FILE:=$AUTH_DIR/$REDIS_USER-password}"' in common
    assert ': "${SENTINEL_PASSWORD_FILE:=$AUTH_DIR/sentinel-requirepass}"' in common
    assert ': "${REDIS_TLS:=yes}"' in common and ': "${TLS_DIR:=/etc/redis-tls}"' in common
    assert ': "${PRESTOP_TIMEOUT:=12}"' in scripts["prestop-redis.sh"]
    assert "redis-2.redis-headless.redis.svc.cluster.local:6379" in common


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_script_parses_under_busybox_sh(name: str, tmp_path: Path) -> None:
    require_redis_binaries()
    path = tmp_path / name
    path.write_text(render_scripts(PROD)[name])
    result = subprocess.run(["busybox", "sh", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.both_server_lines
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_redis_server_accepts_the_rendered_config(stack: str, tmp_path: Path, server_line: ServerLine) -> None:
    """The server exits on an unknown or malformed directive; start it on the rendered file to
    prove every directive is valid for each proven server line."""
    require_redis_binaries(server_line)
    conf = render_stack(stack).find("ConfigMap", "redis-config")["data"]["redis.conf"]
    path = tmp_path / "redis.conf"
    path.write_text(conf + f"\nport 0\nunixsocket {tmp_path}/redis.sock\ndir {tmp_path}\n")
    server = subprocess.Popen(
        [shutil.which(server_line.tool("server")) or server_line.tool("server"), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ping = None
        for _ in range(50):
            if server.poll() is not None:
                break
            ping = subprocess.run(
                [server_line.tool("cli"), "-s", f"{tmp_path}/redis.sock", "CONFIG", "GET", "maxmemory"],
                capture_output=True,
                text=True,
            )
            if ping.returncode == 0 and "maxmemory" in ping.stdout:
                break
            time.sleep(0.1)
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        assert ping is not None and ping.stdout.split()[1] == str(256 * 2**20 if stack == "dev" else 2 * 2**30)
    finally:
        server.kill()
        server.wait()
