"""Shared fixtures: the program rendered under mocks, and real Redis topologies on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import server_lines
from components.server_lines import ServerLine
from smoke.checks import CheckContext
from smoke.local.rehearsal import LoopbackCluster, RenderedFiles, server_line
from smoke.local.render import Rendered, write_render
from smoke.strategies.client import SentinelClient
from tests.support import render_stack, require_redis_binaries

BOTH_LINES = "both_server_lines"
ONE_LINE = "default_server_line"  # a long drill in a both_server_lines module that runs once

# The modules whose drills kill, hang or cut off servers and bound what follows in time (outages,
# Sentinel's reaction): one work unit for the test workers, so that two of them never run at once.
FAULT_DRILL_MODULES = frozenset(
    f"tests/{name}.py"
    for name in (
        "test_acl_tls",
        "test_confirmation",
        "test_entries",
        "test_failover_run",
        "test_faults",
        "test_partitions",
        "test_smoke_runner",
        "test_topology",
    )
)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """The test workers' schedule (pytest-xdist, ``-n 2 --dist loadscope`` in pyproject.toml): a
    module is one work unit, so its module-scoped topology starts once, on one worker; the
    :data:`FAULT_DRILL_MODULES` together are one unit, run one after another, so two drills never
    share the cores while the other worker runs renders, policies, strategies and backups.

    Written here because xdist's own ``loadgroup`` marks tests by rewriting their ids, which
    pytest 9.2 no longer allows (every test became a unit of its own)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndDrills(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "fault drills" if module in FAULT_DRILL_MODULES else module

    return ModulesAndDrills(config, log)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``server_line``: the line a test's topology runs. Every test runs on the default line
    ($REHEARSAL_SERVER_LINE, else the default image's); a module or test marked
    ``both_server_lines`` (where the server's behaviour matters) runs once per proven line, but
    for a test marked ``default_server_line`` (a long drill whose server part the others cover)."""
    if "server_line" not in metafunc.fixturenames:
        return
    both = metafunc.definition.get_closest_marker(BOTH_LINES) is not None
    both = both and metafunc.definition.get_closest_marker(ONE_LINE) is None
    lines = list(server_lines.LINES.values()) if both else [server_line()]
    metafunc.parametrize("server_line", lines, ids=[line.name for line in lines], scope="module")


@pytest.fixture(scope="session")
def dev() -> Rendered:
    return render_stack("dev")


@pytest.fixture(scope="session")
def prod() -> Rendered:
    return render_stack("prod")


@pytest.fixture(scope="session")
def dev_render_dir(dev: Rendered, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dev stack written to disk exactly as ``make render`` writes it."""
    out = tmp_path_factory.mktemp("render") / "dev"
    write_render(dev, out)
    return out


@pytest.fixture(scope="session")
def dev_files(dev_render_dir: Path) -> RenderedFiles:
    return RenderedFiles.from_render_dir(dev_render_dir / "k8s")


@pytest.fixture
def fresh_cluster(dev_files: RenderedFiles, server_line: ServerLine) -> Iterator[LoopbackCluster]:
    """A topology of its own for a test that kills or restarts processes."""
    require_redis_binaries(server_line)
    with LoopbackCluster(dev_files, server=server_line) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster(dev_files: RenderedFiles, server_line: ServerLine) -> Iterator[LoopbackCluster]:
    """One topology shared by the read-only tests of a module."""
    require_redis_binaries(server_line)
    with LoopbackCluster(dev_files, server=server_line) as shared:
        yield shared


@pytest.fixture(scope="module")
def client(cluster: LoopbackCluster) -> Iterator[SentinelClient]:
    """The Sentinel-aware client every strategy uses, pointed at the module's topology."""
    with SentinelClient(cluster.client_config(min_idle=2)) as shared:
        yield shared


@pytest.fixture(scope="module")
def state_client(cluster: LoopbackCluster) -> Iterator[SentinelClient]:
    """The client of the state tier (the decisions: idempotency, rate limits, workflows)."""
    with SentinelClient(cluster.client_config("state", min_idle=2)) as shared:
        yield shared


@pytest.fixture
def ctx(client: SentinelClient, state_client: SentinelClient) -> CheckContext:
    """A check context with a key prefix of its own (one per test), on both tiers."""
    return CheckContext(client=client, prefix=f"smoke:{uuid.uuid4().hex[:12]}:", state_client=state_client)
