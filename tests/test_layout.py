"""The layout keeps its promises: the strategies library stands alone, and `make help` is complete."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from tests.conftest import FAULT_DRILL_MODULES

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "smoke" / "strategies"
# What the library applications read must not depend on: the suite's apparatus or the IaC program.
FORBIDDEN = ("smoke.checks", "smoke.drills", "smoke.local", "smoke.bench", "smoke.rotation", "pulumi", "components")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add("." * node.level + (node.module or ""))
    return found


def test_the_strategies_library_imports_nothing_from_the_apparatus_or_pulumi() -> None:
    files = sorted(LIBRARY.glob("*.py"))
    assert {p.name for p in files} >= {"client.py", "entries.py", "claims.py", "workflow.py", "idempotency.py"}
    offending = {}
    for path in files:
        bad = sorted(
            m
            for m in _imported_modules(path)
            if m.startswith("..")  # a relative import that climbs out of the library
            or any(m == f or m.startswith(f + ".") for f in FORBIDDEN)
            or (m.startswith("smoke") and not m.startswith("smoke.strategies"))
        )
        if bad:
            offending[path.name] = bad
    assert offending == {}


def test_the_import_checker_would_see_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import pulumi\nfrom smoke.local.rehearsal import LoopbackCluster\nfrom smoke import checks\n")
    assert {"pulumi", "smoke.local.rehearsal", "smoke", "smoke.checks"} <= _imported_modules(sample)


def test_make_help_lists_every_target_with_one_line() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    command = ["make", "--no-print-directory", "help"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    listed = {}
    for line in done.stdout.splitlines():
        match = re.fullmatch(r"  make (\S+)\s+(\S.*)", line)
        assert match, f"not a help line: {line!r}"
        listed[match.group(1)] = match.group(2)
    assert set(listed) == targets
    assert all(len(text) > 10 for text in listed.values())


# What a test module imports to inject faults and judge what follows.
DRILL_PARTS = ("smoke.drills.faults", "smoke.drills.partition", "smoke.drills.failover")


def test_every_module_that_runs_fault_drills_is_scheduled_with_the_other_drills() -> None:
    """The test workers run FAULT_DRILL_MODULES one after another (tests/conftest.py): a drill
    module missing from it would run beside another drill, and its outage bounds would be judged
    on a machine that a second drill is loading."""
    drilling = {
        f"tests/{path.name}"
        for path in (ROOT / "tests").glob("test_*.py")
        if any(module.startswith(DRILL_PARTS) for module in _imported_modules(path))
    }
    assert drilling and drilling <= FAULT_DRILL_MODULES, drilling - FAULT_DRILL_MODULES
    assert all((ROOT / module).is_file() for module in FAULT_DRILL_MODULES)
