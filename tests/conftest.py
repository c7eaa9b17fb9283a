"""Shared fixtures: the program rendered under mocks, and real Redis topologies on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from smoke.checks import CheckContext
from smoke.local.rehearsal import LoopbackCluster, RenderedFiles
from smoke.local.render import Rendered, write_render
from smoke.strategies.client import SentinelClient
from tests.support import render_stack, require_redis_binaries


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
def fresh_cluster(dev_files: RenderedFiles) -> Iterator[LoopbackCluster]:
    """A topology of its own for a test that kills or restarts processes."""
    require_redis_binaries()
    with LoopbackCluster(dev_files) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster(dev_files: RenderedFiles) -> Iterator[LoopbackCluster]:
    """One topology shared by the read-only tests of a module."""
    require_redis_binaries()
    with LoopbackCluster(dev_files) as shared:
        yield shared


@pytest.fixture(scope="module")
def client(cluster: LoopbackCluster) -> Iterator[SentinelClient]:
    """The Sentinel-aware client every strategy uses, pointed at the module's topology."""
    with SentinelClient(cluster.client_config(min_idle=2)) as shared:
        yield shared


@pytest.fixture
def ctx(client: SentinelClient) -> CheckContext:
    """A check context with a key prefix of its own (one per test)."""
    return CheckContext(client=client, prefix=f"smoke:{uuid.uuid4().hex[:12]}:")
