"""The server lines: what the rehearsal runs is what the table says, the default image is a
rehearsed version, and the policy pack reports an image of a line or minor no test runs."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest

from components import server_lines
from components.renderers.scripts import render_scripts
from components.server_lines import ServerLine
from components.settings import settings_from_config
from policies import analyze, server_line
from smoke.local.rehearsal import RehearsalError, server_version
from smoke.local.rehearsal import server_line as rehearsal_line
from smoke.local.render import Registered
from tests.support import render_with, require_binaries

POLICY = "redis-server-line-rehearsed"


@pytest.mark.parametrize("line", list(server_lines.LINES.values()), ids=list(server_lines.LINES))
def test_the_installed_server_is_the_minor_version_the_table_calls_proven(line: ServerLine) -> None:
    require_binaries(*line.binaries)
    version = server_version(line)
    assert version.rsplit(".", 1)[0] == line.proven_minor, f"{line.tool('server')} is {version}"


def test_the_default_image_is_the_exact_version_the_rehearsal_runs() -> None:
    line = server_lines.DEFAULT_LINE
    require_binaries(line.tool("server"))
    name, tag = server_lines.DEFAULT_IMAGE.rsplit(":", 1)
    assert name in line.repositories
    assert tag.split("-", 1)[0] == server_version(line)


def test_the_policys_rehearsed_lines_are_the_programs() -> None:
    """The pack imports nothing from the program: its default is a copy, kept equal here."""
    program = [f"{repo} {ln.proven_minor}" for ln in server_lines.LINES.values() for repo in ln.repositories]
    assert sorted(server_line.PROVEN_DEFAULT) == sorted(program)
    for line in server_lines.LINES.values():
        for repository in line.repositories:
            image = f"{repository}:{line.proven_minor}.9-alpine"
            assert server_line.image_server(image) == (repository, line.proven_minor)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("valkey/valkey:8.0.1-alpine", ("valkey/valkey", "8.0")),
        ("redis:7.2.4-alpine", ("redis", "7.2")),
        ("docker.io/library/redis:7.0.15", ("redis", "7.0")),
        ("registry.local:5000/valkey/valkey:8.0.1", ("valkey/valkey", "8.0")),
        ("registry.local:5000/mirror/redis:7.0.15", ("mirror/redis", "7.0")),
        ("bitnami/redis:7.0.15-debian-12-r1", ("bitnami/redis", "7.0")),
        ("redis@sha256:" + "a" * 64, ("redis", None)),
        ("valkey/valkey:8.0.1-alpine@sha256:" + "b" * 64, ("valkey/valkey", "8.0")),
        ("ghcr.io/acme/cache:1.2.3", ("acme/cache", "1.2")),
    ],
)
def test_an_images_line_and_minor_are_read_off_its_reference(image: str, expected: tuple[str, str | None]) -> None:
    assert server_line.image_server(image) == expected


def _with_image(stack: str, image: str) -> list[Registered]:
    rendered = render_with(stack, {"dict-redis:image": image})
    return [copy.deepcopy(r) for r in analyze.analyzed(rendered.resources)]


def _violations(resources: list[Registered], config: dict[str, object] | None = None) -> list[analyze.Violation]:
    found = analyze.run_analyzer(analyze.in_process_pack(), resources, config or {})[1]
    return [v for v in found if v.policy == POLICY]


def test_the_default_image_passes_the_server_line_policy() -> None:
    assert _violations(_with_image("dev", server_lines.DEFAULT_IMAGE)) == []


def test_an_unrehearsed_minor_is_reported_with_what_is_rehearsed() -> None:
    found = _violations(_with_image("dev", "redis:7.2.4-alpine"))
    assert {v.level for v in found} == {"advisory"}
    assert len(found) == 3  # the data nodes of both tiers and the Sentinels
    message = found[0].message
    assert "'redis:7.2.4-alpine' runs redis 7.2" in message and "valkey 8.0" in message
    assert "acknowledgedImages" in message


def test_prod_makes_it_mandatory_unless_the_pack_config_acknowledges_the_image() -> None:
    resources = _with_image("prod", "redis:7.2.4-alpine")
    prod_config = analyze.load_pack_config(analyze.ROOT / "policies" / "config" / "prod.json")
    assert {v.level for v in _violations(resources, prod_config)} == {"mandatory"}
    entry = dict(prod_config[POLICY]) if isinstance(prod_config[POLICY], dict) else {"enforcementLevel": "mandatory"}
    acknowledged = {**prod_config, POLICY: {**entry, "acknowledgedImages": ["redis:7.2.4-alpine"]}}
    assert _violations(resources, acknowledged) == []


def test_the_rehearsal_refuses_a_server_line_it_does_not_run() -> None:
    with pytest.raises(
        RehearsalError, match=r"server line 'keydb' is not one the rehearsal runs; choose valkey, redis"
    ):
        rehearsal_line("keydb")


def test_the_scripts_pick_the_images_tools_when_no_line_is_given(tmp_path: Path) -> None:
    """In a pod SERVER_LINE is unset: common.sh takes Valkey's tools when the image has them."""
    require_binaries("valkey-server", "busybox")
    common = tmp_path / "common.sh"
    common.write_text(render_scripts(settings_from_config({}, "dev"))["common.sh"])
    probe = 'SERVER_LINE= . "$1"; echo "$SERVER_BIN $CLI_BIN"'
    out = subprocess.run(["busybox", "sh", "-c", probe, "sh", str(common)], capture_output=True, text=True)
    assert out.stdout.strip() == "valkey-server valkey-cli", out.stderr
    bad = subprocess.run(
        ["busybox", "sh", "-c", 'SERVER_LINE=keydb . "$1"', "sh", str(common)], capture_output=True, text=True
    )
    assert bad.returncode == 64 and "SERVER_LINE=keydb: must be redis or valkey" in bad.stderr
