"""The rendered manifests: valid for the Kubernetes API, and free of the Redis password."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components.acl import USERS, secret_keys
from smoke.local.render import ROOT, Rendered, write_render

# The API versions every manifest is validated against (strict: unknown fields are errors).
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
PASSWORD = "Render-Test-Secret-4f9c2e1b7a"


@pytest.fixture(scope="module", params=["dev", "prod"])
def cli_render(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``make render`` as a user runs it, with the password given through REDIS_PASSWORD."""
    out = tmp_path_factory.mktemp("cli-render")
    result = subprocess.run(
        [sys.executable, "-m", "smoke.local.render", "--stack", request.param, "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "REDIS_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return out / request.param, result.stdout + result.stderr


def test_render_writes_one_file_per_object_and_prints_a_table(cli_render: tuple[Path, str]) -> None:
    out, printed = cli_render
    k8s = sorted(p.name for p in (out / "k8s").iterdir())
    assert "statefulset-redis.yaml" in k8s and "statefulset-redis-sentinel.yaml" in k8s
    # 17 objects of the cache layer (4 of them the state tier: ConfigMap, headless Service,
    # StatefulSet, PDB), 3 of monitoring (PodMonitor, PrometheusRule, dashboard), 4 of
    # backups (CronJob, ServiceAccount, ConfigMap, NetworkPolicy), and in prod (TLS on) the two
    # cert-manager Certificates.
    objects = 26 if out.name == "prod" else 24
    assert len(k8s) == objects
    # REDIS_PASSWORD is the Sentinels' password; one password is generated per ACL user.
    generated = list((out / "aws").glob("randompassword-*"))
    assert sorted(p.name for p in generated) == sorted(f"randompassword-auth-password-{u.name}.json" for u in USERS)
    # + 11 AWS resources of the backups (provider, KMS key, bucket and its 6 controls, role, policy).
    assert "StatefulSet" in printed and f"{objects + 11 + len(USERS)} resources" in printed


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_passes_strict_schema_validation(cli_render: tuple[Path, str], version: str) -> None:
    out, _ = cli_render
    for path in sorted((out / "k8s").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # custom resources: validated against their CRD schemas in tests/test_monitoring.py
        if doc["apiVersion"].startswith("cert-manager.io/"):
            continue  # a custom resource: its fields are checked in test_stack.py
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{path.name} is invalid for Kubernetes {version}: {'.'.join(map(str, exc.path))}: {exc.message}"
            )


def test_the_password_appears_in_no_rendered_file_or_output(cli_render: tuple[Path, str]) -> None:
    out, printed = cli_render
    assert PASSWORD not in printed
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 16
    for path in files:
        assert PASSWORD not in path.read_text(), f"{path} carries the password"
    secret = yaml.safe_load((out / "k8s" / "secret-redis-auth.yaml").read_text())
    assert secret["stringData"] == {key: "<redacted>" for key in secret_keys()}


def test_no_configmap_sets_a_password_directive(cli_render: tuple[Path, str]) -> None:
    out, _ = cli_render
    directive = re.compile(r"^\s*(requirepass|masterauth|sentinel auth-pass)\s", re.MULTILINE)
    for path in (out / "k8s").glob("configmap-*.yaml"):
        for name, text in yaml.safe_load(path.read_text())["data"].items():
            if name.endswith(".conf"):
                assert not directive.search(text), f"{path.name}:{name} sets a password"
            if name.endswith(".acl"):
                # Users and rules only: no cleartext (>) or hashed (#) password, no nopass.
                assert not re.search(r"(^|\s)[>#<!]\S|nopass", text.replace("@PASSWORDS@", "")), name


def test_an_invalid_stack_fails_the_render_with_the_key_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smoke.local.render", "--stack", "nosuchstack", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "unknown stack 'nosuchstack'" in result.stderr and "dev, prod" in result.stderr
    assert "Traceback" not in result.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "smoke.local.render", "--stack", "dev", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REDIS_PASSWORD": "too short"},
    )
    assert bad.returncode == 2
    assert "dict-redis:redisPassword: must be 16-128 characters" in bad.stderr
    assert "too short" not in bad.stderr and "Traceback" not in bad.stderr


def test_a_generated_password_appears_in_no_rendered_file(prod: Rendered, tmp_path: Path) -> None:
    generated_passwords = prod.generated_secrets
    assert len(generated_passwords) == len(USERS) + 1
    rows = write_render(prod, tmp_path / "prod")
    assert any(kind == "RandomPassword" for kind, _, _ in rows)
    for path in (tmp_path / "prod").rglob("*"):
        if path.is_file():
            text = path.read_text()
            for generated in generated_passwords:
                assert generated not in text, f"{path} carries a generated password"
