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
FAULT_DRILL = "fault_drill"  # kills, hangs or cuts off servers and bounds what follows in time


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups into the test ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Work units for the two pytest-xdist workers (``-n 2 --dist loadgroup`` in pyproject.toml).

    A module is one unit, so its module-scoped topology starts once on one worker. The modules
    marked ``fault_drill`` form a single unit: they run one after another, so two drills never
    share the cores. Their checkers bound outages and Sentinel's reaction times; the other
    worker's tests (renders, policies, strategies, backups) load the machine less than a second
    drill would.
    """
    for item in items:
        group = FAULT_DRILL if item.get_closest_marker(FAULT_DRILL) else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


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
