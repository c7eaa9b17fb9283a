"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil

import pytest

from components.server_lines import ServerLine
from smoke.bench.measure import count_round_trips  # noqa: F401  (the tests' round-trip counter)
from smoke.local.rehearsal import required_binaries, server_line
from smoke.local.render import Rendered, run_program, stack_config


def render_stack(stack: str, password: str | None = None) -> Rendered:
    config, secret_keys, _ = stack_config(stack, password)
    return run_program(stack, config, secret_keys)


def render_with(stack: str, overrides: dict[str, str]) -> Rendered:
    """A stack's config with some keys replaced, run under mocks."""
    config, secret_keys, _ = stack_config(stack)
    return run_program(stack, {**config, **overrides}, secret_keys)


def require_binaries(*names: str) -> None:
    """Fail in CI (a missing binary must not pass as a skip); skip on a developer machine."""
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    message = f"missing binaries {', '.join(missing)}: run 'make deps'"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def require_redis_binaries(line: ServerLine | None = None) -> None:
    """:func:`require_binaries` for what the rehearsal runs on ``line`` (default: the default
    line): its server, Sentinel, cli and check-rdb, and busybox."""
    require_binaries(*required_binaries(line or server_line()))
