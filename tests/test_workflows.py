"""The CI gate's GitHub Actions workflows: schema-valid, free of zizmor findings, and wired as the
README says (policy pack on every preview/up, OIDC for AWS, least permissions, a lock per stack).

They cannot run here (no GitHub, no cluster, no Pulumi CLI), so both linters run on them offline
and the structure that matters is asserted directly.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))


def load(name: str) -> dict[Any, Any]:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def steps(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith(action + "@")]


def test_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == ["main.yml", "pull-request.yml"]


def test_workflows_match_the_github_schema() -> None:
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing() -> None:
    result = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--no-progress", str(ROOT / ".github" / "workflows")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_least_permissions() -> None:
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        assert workflow["permissions"] == {}, path.name
        for name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{path.name}: job {name} sets no permissions"
            assert "write-all" not in str(job["permissions"])
            assert set(job["permissions"]) <= {"contents", "id-token", "pull-requests"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned(path: Path) -> None:
    for line in path.read_text().splitlines():
        match = re.search(r"uses:\s*([^\s#]+)(.*)", line)
        if not match:
            continue
        ref = match.group(1).split("@", 1)[1]
        if re.fullmatch(r"[0-9a-f]{40}", ref):
            assert re.search(r"# v\d+\.\d+\.\d+", match.group(2)), f"{line.strip()}: name the release of the SHA"
        else:
            # An exact release tag only, with zizmor's finding suppressed and the reason given.
            assert re.fullmatch(r"v\d+\.\d+\.\d+", ref), line.strip()
            assert "zizmor: ignore[unpinned-uses]" in match.group(2) and "not verifiable" in match.group(2)


def test_pull_request_previews_every_stack_with_the_policy_pack() -> None:
    workflow = load("pull-request.yml")
    preview = workflow["jobs"]["preview"]
    assert preview["needs"] == "test"
    assert sorted(preview["strategy"]["matrix"]["stack"]) == STACKS
    assert "matrix.stack" in preview["concurrency"]["group"]
    assert preview["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    [pulumi] = steps(preview, "pulumi/actions")
    assert pulumi["with"]["command"] == "preview" and pulumi["with"]["diff"] is True
    assert pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["policyPacks"] == "policies"
    assert pulumi["with"]["policyPackConfigs"] == "policies/config/${{ matrix.stack }}.json"
    assert pulumi["env"]["PULUMI_ACCESS_TOKEN"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"
    [aws] = steps(preview, "aws-actions/configure-aws-credentials")
    assert aws["with"]["role-to-assume"].startswith("${{ vars.") and "aws-access-key-id" not in aws["with"]
    test = workflow["jobs"]["test"]
    assert [s["run"] for s in test["steps"] if "run" in s] == ["sudo make system-deps", "make test"]


def test_main_deploys_dev_then_prod_behind_an_approval() -> None:
    jobs = load("main.yml")["jobs"]
    assert set(jobs) == {"dev", "prod"}
    assert jobs["dev"]["environment"] == "dev" and "needs" not in jobs["dev"]
    assert jobs["prod"]["environment"] == "production" and jobs["prod"]["needs"] == "dev"
    for stack, job in jobs.items():
        assert job["concurrency"] == {"group": f"pulumi-up-{stack}", "cancel-in-progress": False}
        [pulumi] = steps(job, "pulumi/actions")
        assert pulumi["with"]["command"] == "up" and pulumi["with"]["stack-name"] == stack
        assert pulumi["with"]["policyPacks"] == "policies"
        assert pulumi["with"]["policyPackConfigs"] == f"policies/config/{stack}.json"
        [smoke] = [s for s in job["steps"] if s.get("name") == "Post-deploy smoke Job"]
        assert smoke["env"]["SMOKE_JOB"] == "${{ steps.up.outputs.smokeJob }}" and pulumi["id"] == "up"
        assert '[ "$result" = passed ]' in smoke["run"]
        [cluster] = [s for s in job["steps"] if s.get("name") == "Cluster credentials"]
        assert cluster["env"]["KUBECONFIG_DATA"] == "${{ secrets.KUBECONFIG }}"
        assert "${{" not in cluster["run"]  # secrets reach scripts through env, never inline
