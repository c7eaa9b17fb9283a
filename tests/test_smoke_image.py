"""The smoke image (smoke/Dockerfile) installs only smoke/requirements.txt: everything it runs must
import with those packages alone, not with what the Pulumi program or the tests add.

No image can be built here, so the test does what the image would: it runs the entry points in a
child interpreter whose imports of any installed distribution outside the closure of
smoke/requirements.txt (the listed packages and what they depend on) fail, as they would in
the image."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
SMOKE_REQUIREMENTS = ROOT / "smoke" / "requirements.txt"

# What the image runs (ENTRYPOINT python -m smoke). The rotation tool runs from a checkout: it
# reads Pulumi.<stack>.yaml, which the image does not carry.
IMAGE_ENTRY_POINTS = ("smoke",)

_CHILD = r"""
import importlib, importlib.abc, json, pkgutil, runpy, sys

blocked = set(json.loads(sys.argv[1]))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the smoke image)", name=name)
        return None

sys.meta_path.insert(0, Blocker())
import smoke.checks, smoke.strategies
for package in (smoke.checks, smoke.strategies):
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
for entry in json.loads(sys.argv[2]):
    sys.argv = [entry, "--help"]
    try:
        runpy.run_module(entry, run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        if exit.code not in (0, None):
            raise
"""


def _closure(requirements: list[Requirement]) -> set[str]:
    """The normalised names of the distributions ``requirements`` install, dependencies included."""
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        for text in metadata.requires(req.name) or []:
            todo.append(Requirement(text))
    return seen


def _image_requirements() -> list[Requirement]:
    lines = [line.split("#", 1)[0].strip() for line in SMOKE_REQUIREMENTS.read_text().splitlines()]
    return [Requirement(line) for line in lines if line]


def _blocked_top_levels(allowed: set[str]) -> list[str]:
    """Top-level modules of installed distributions the image would not have."""
    blocked = set()
    for top, dists in metadata.packages_distributions().items():
        if not any(d.lower().replace("_", "-") in allowed for d in dists):
            blocked.add(top)
    return sorted(blocked - {"smoke", "components", "tests", "policies"})


def test_every_smoke_image_entry_point_runs_with_only_the_image_requirements() -> None:
    allowed = _closure(_image_requirements())
    blocked = _blocked_top_levels(allowed)
    # The guard must really guard: what the program and the tests need is blocked.
    assert {"pulumi", "pulumi_kubernetes", "boto3", "moto"} <= set(blocked)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(blocked), json.dumps(IMAGE_ENTRY_POINTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_image_guard_refuses_a_module_outside_the_image() -> None:
    blocked = _blocked_top_levels(_closure(_image_requirements()))
    probe = _CHILD.replace("import smoke.checks, smoke.strategies", "import pulumi")
    assert probe != _CHILD
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(blocked), "[]"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "not in the smoke image" in done.stderr
