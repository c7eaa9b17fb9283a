"""Bad input through the real entry points: every mistake is refused before any work, as one line
per problem naming the key, the value and the rule in words, with exit code 2 and nothing written.

The stack files are ``tests/fixtures/bad_stacks/Pulumi.<case>.yaml``; each says what it must
print in ``# expect:`` lines (and which value must not appear in ``# secret:`` lines). They go
through ``smoke.local.render.main`` (what ``python -m smoke.local.render`` runs); a sample of them,
and the other entry points, also as subprocesses for the exit code the shell sees.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smoke.local import render
from smoke.local.render import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "bad_stacks"
CASES = sorted(FIXTURES.glob("Pulumi.*.yaml"))
# What a regular expression in a message would look like: anchors, classes, quantifiers.
REGEX = re.compile(r"\^\[|\]\{|\$$|\(\?:|\\S|\[a-z0-9")


def expectations(path: Path, tag: str) -> list[str]:
    return [line.split(f"# {tag}: ", 1)[1] for line in path.read_text().splitlines() if line.startswith(f"# {tag}: ")]


def stack_of(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml")


def assert_refused(code: int, err: str, out: str, case: Path, out_dir: Path) -> None:
    assert code == 2, err
    assert "Traceback" not in err + out
    assert not out_dir.exists(), f"{out_dir} was written"
    for expected in expectations(case, "expect"):
        assert expected in err, f"{case.name}: {expected!r} not in:\n{err}"
    for secret in expectations(case, "secret"):
        assert secret not in err + out
    problems = [line for line in err.splitlines() if line.strip()]
    assert all(not REGEX.search(line) for line in problems), err


def test_there_is_a_fixture_for_each_class_of_mistake() -> None:
    assert len(CASES) >= 35
    assert all(expectations(case, "expect") for case in CASES), [c.name for c in CASES if not expectations(c, "expect")]


@pytest.mark.parametrize("case", CASES, ids=stack_of)
def test_a_bad_stack_file_is_refused_with_the_key_the_value_and_the_rule(
    case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "render"
    code = render.main(["--stack-file", str(case), "--out", str(out)])
    printed = capsys.readouterr()
    assert printed.err.startswith(f"render of stack {stack_of(case)} failed: "), printed.err
    assert_refused(code, printed.err, printed.out, case, out)


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "SENTINEL_"))}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fixture(name: str) -> str:
    return str(FIXTURES / f"Pulumi.{name}.yaml")


SAMPLE = ["namespace-typo", "duplicate-block", "yaml-syntax-error", "top-level-list", "empty-master-name"]


def test_the_render_entry_point_exits_2_as_a_process(tmp_path: Path) -> None:
    """A sample of the cases, all started at once (each process imports Pulumi)."""
    out = tmp_path / "render"
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "smoke.local.render", "--out", str(out), "--stack-file", fixture(name)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in SAMPLE
    }
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        assert_refused(process.returncode, stderr, stdout, FIXTURES / f"Pulumi.{name}.yaml", out)


def test_an_unknown_stack_exits_2_naming_the_stacks_there_are(tmp_path: Path) -> None:
    result = run("-m", "smoke.local.render", "--stack", "qa", "--out", str(tmp_path / "render"))
    assert result.returncode == 2
    assert "unknown stack 'qa': no Pulumi.qa.yaml; stacks: dev, prod" in result.stderr
    assert not (tmp_path / "render").exists() and "Traceback" not in result.stderr
    result = run("-m", "smoke.local.render", "--stack", "../dev", "--out", str(tmp_path / "render"))
    assert result.returncode == 2 and "unknown stack '../dev'" in result.stderr


def test_an_out_path_that_cannot_be_written_fails_before_the_render(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run("-m", "smoke.local.render", "--stack", "dev", "--out", str(blocker / "render"))
    assert result.returncode == 2, result.stderr
    assert f"render of stack dev failed: --out {blocker / 'render'}: {blocker} is a file, not a directory" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and "Rendered" not in result.stdout
    missing = run("-m", "smoke.local.render", "--stack-file", str(tmp_path / "Pulumi.none.yaml"))
    assert missing.returncode == 2
    assert f"{tmp_path / 'Pulumi.none.yaml'}: cannot read the stack file (No such file or directory)" in missing.stderr


def test_a_good_stack_file_given_by_path_renders(tmp_path: Path) -> None:
    stack_file = tmp_path / "Pulumi.qa.yaml"
    stack_file.write_text((ROOT / "Pulumi.dev.yaml").read_text().replace("redis-dev", "redis-qa"))
    result = run("-m", "smoke.local.render", "--stack-file", str(stack_file), "--out", str(tmp_path / "render"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "render" / "qa" / "outputs.json").read_text())["namespace"] == "redis-qa"


# --- make policy ------------------------------------------------------------------------------


def test_make_policy_refuses_a_bad_stack_file_an_unknown_stack_and_a_bad_out_with_exit_2(tmp_path: Path) -> None:
    case = FIXTURES / "Pulumi.namespace-typo.yaml"
    report = tmp_path / "policy.json"
    result = run("-m", "policies.analyze", "--stack-file", str(case), "--out", str(report), "--in-process")
    assert_refused(result.returncode, result.stderr, result.stdout, case, report)
    result = run("-m", "policies.analyze", "--stack", "qa", "--out", str(report))
    assert result.returncode == 2 and "unknown stack 'qa': no Pulumi.qa.yaml; stacks: dev, prod" in result.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run("-m", "policies.analyze", "--stack", "dev", "--out", str(blocker / "policy.json"))
    assert result.returncode == 2 and f"{blocker} is a file, not a directory" in result.stderr
    assert "Traceback" not in result.stderr and not report.exists()


@pytest.mark.parametrize(
    ("pack_config", "expected"),
    [
        (
            '{"redis-maxmemory-headroom": {"maxMemoryShare": "lots"}}',
            'redis-maxmemory-headroom.maxMemoryShare = "lots": must be a number from 0.1 to 1 (largest maxmemory',
        ),
        ('{"redis-maxmemory-headroom": {"maxMemoryShare": 5}}', "maxMemoryShare = 5: must be a number from 0.1 to 1"),
        (
            '{"aws-s3-lifecycle-retention": {"retentionDays": 0}}',
            "retentionDays = 0: must be a whole number of at least 1",
        ),
        ('{"aws-backup-irsa": {"backupJobs": "redis-backup"}}', 'backupJobs = "redis-backup": must be a list'),
        ('{"k8s-image-pinned": {"requireDigest": "yes"}}', 'requireDigest = "yes": must be true or false'),
        ('{"all": "advisory",\n "all": "mandatory"}', "key 'all' is given twice in the same object"),
        ('{"all": "advisory",}', "line 1, column 20: not valid JSON (Expecting property name"),
        ('["all"]', "must be a JSON object of policy names, not list"),
    ],
)
def test_a_bad_pack_config_is_refused_before_the_program_runs(pack_config: str, expected: str, tmp_path: Path) -> None:
    config = tmp_path / "pack.json"
    config.write_text(pack_config)
    report = tmp_path / "policy.json"
    result = run("-m", "policies.analyze", "--stack", "dev", "--config", str(config), "--out", str(report))
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and str(config) in result.stderr
    assert "Traceback" not in result.stderr and "analysed" not in result.stdout and not report.exists()
