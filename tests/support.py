"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from components.server_lines import ServerLine
from smoke.bench.measure import count_round_trips  # noqa: F401  (the tests' round-trip counter)
from smoke.local.rehearsal import LoopbackCluster, Node, required_binaries, server_line
from smoke.local.render import Rendered, run_program, stack_config
from smoke.strategies.client import NoReplicasInSync, SentinelClient


def render_stack(stack: str, password: str | None = None) -> Rendered:
    config, secret_keys, _ = stack_config(stack, password)
    return run_program(stack, config, secret_keys)


def render_with(stack: str, overrides: dict[str, str]) -> Rendered:
    """A stack's config with some keys replaced, run under mocks."""
    config, secret_keys, _ = stack_config(stack)
    return run_program(stack, {**config, **overrides}, secret_keys)


def require_binaries(*names: str) -> None:
    """Fail in CI (a missing binary must not pass as a skip); skip on a developer machine."""
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    message = f"missing binaries {', '.join(missing)}: run 'make deps'"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def require_redis_binaries(line: ServerLine | None = None) -> None:
    """:func:`require_binaries` for what the rehearsal runs on ``line`` (default: the default
    line): its server, Sentinel, cli and check-rdb, and busybox."""
    require_binaries(*required_binaries(line or server_line()))


def failover_to_a_deposed_master_that_accepts_writes(
    cluster: LoopbackCluster, client: SentinelClient, key: str
) -> dict[str, float]:
    """Make the cache tier's master keep accepting writes once deposed, run ``SENTINEL FAILOVER``
    and return when the last Sentinel names the new master: the situation of a master cut off
    from its replicas and Sentinels but not from clients, whose replica links look alive for
    ``min-replicas-max-lag`` (here ``min-replicas-to-write 0`` on it stands in for that window,
    which would otherwise end the moment its last replica is reconfigured). ``client`` must have
    written through its pool before. Then checks, ``SWITCH_BOUND_S`` after the last Sentinel named
    the new master, that 20 writes through ``client`` each land on the new master at once.
    Returns the measured figures (seconds from the failover command)."""
    old = cluster.masters()[0]
    with cluster.client(old) as admin:
        kept = admin.config_get("min-replicas-to-write")["min-replicas-to-write"]
        admin.config_set("min-replicas-to-write", 0)
    try:
        started, moved = _deposed_master_check(cluster, client, key, old)
    finally:
        with cluster.client(old) as admin:
            admin.config_set("min-replicas-to-write", kept)
    return {"started": started, "every_sentinel_moved_s": moved - started}


def _deposed_master_check(cluster: LoopbackCluster, client: SentinelClient, key: str, old: Node) -> tuple[float, float]:
    started = time.monotonic()
    with cluster.client(cluster.sentinels[0]) as sentinel:
        sentinel.execute_command("SENTINEL", "FAILOVER", cluster.master_name)

    def every_sentinel_moved() -> bool:
        views = [cluster.sentinel_view(s) for s in cluster.sentinels]
        return all(v is not None and v["master"] not in (None, old.address) for v in views)

    cluster.wait_for("every Sentinel naming the new master", every_sentinel_moved, timeout=30)
    moved = time.monotonic()
    view = cluster.sentinel_view(cluster.sentinels[0])
    assert view is not None
    new = next(n for n in cluster.redis_nodes if n.address == view["master"])
    time.sleep(SWITCH_BOUND_S)
    landed_on = []
    with cluster.client(new) as on_new:
        for n in range(20):
            deadline = time.monotonic() + 10
            while True:  # the new master refuses writes until its replica has re-synced: retry
                try:
                    client.run(lambda r, n=n: r.set(f"{key}:{n}", n, ex=60), idempotent=True)
                    break
                except NoReplicasInSync:
                    assert time.monotonic() < deadline, "the new master refused writes for 10 s"
                    time.sleep(0.1)
            landed_on.append("new" if on_new.exists(f"{key}:{n}") else "old")
    assert landed_on == ["new"] * 20, (
        f"writes {SWITCH_BOUND_S} s after every Sentinel named {new.address} still went to the deposed "
        f"master {old.address}: {landed_on}"
    )
    return started, moved


# How long after the last Sentinel names a new master the client's writes may still reach the old one.
SWITCH_BOUND_S = 1.0
