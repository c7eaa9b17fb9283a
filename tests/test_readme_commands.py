"""Every command block of README.md says where it runs, and the ones that run here offline do.

A fenced ``sh`` block starts with a marker comment: ``# offline`` (runs as written in a clone,
within seconds: this test runs each of its commands from the repository root and expects exit 0),
``# long-running`` (starts real processes for minutes: ``make test`` runs the same code) or
``# needs a cluster`` (the Pulumi CLI, a backend, a kubeconfig or a deployed stack).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import require_binaries

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHELL_BLOCK = re.compile(r"^```(sh|bash|shell|console)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MARKERS = ("# offline", "# long-running", "# needs a cluster")


def shell_blocks() -> list[str]:
    return [body for _, body in SHELL_BLOCK.findall(README.read_text())]


def commands(block: str) -> list[str]:
    """The block's commands: comment lines dropped, backslash continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_shell_block_is_marked_with_where_it_runs() -> None:
    blocks = shell_blocks()
    assert len(blocks) >= 4
    unmarked = [block.splitlines()[0] for block in blocks if not block.startswith(MARKERS)]
    assert unmarked == [], f"README.md blocks without one of {MARKERS}: {unmarked}"
    kinds = {marker for block in blocks for marker in MARKERS if block.startswith(marker)}
    assert kinds == set(MARKERS)


def test_every_make_target_the_readme_names_exists() -> None:
    listed = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    targets = set(re.findall(r"^  make (\S+)", listed, re.MULTILINE))
    named = {m for block in shell_blocks() for m in re.findall(r"^make ([a-z-]+)", block, re.MULTILINE)}
    assert named and named <= targets, named - targets


@pytest.mark.parametrize("block", [b for b in shell_blocks() if b.startswith("# offline")], ids=lambda b: b[:30])
def test_the_offline_blocks_run_as_written(block: str) -> None:
    if not (ROOT / ".venv" / ".installed").exists():
        require_binaries(str(ROOT / ".venv" / "bin" / "python"))  # CI=true: a failure, not a skip
    started = time.monotonic()
    for command in commands(block):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (
            f"{command!r} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
        assert "Traceback" not in done.stderr, command
    assert time.monotonic() - started < 60
