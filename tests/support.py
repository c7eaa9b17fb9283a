"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from unittest import mock

import pytest
from redis.connection import AbstractConnection

from smoke.rehearsal import missing_binaries
from smoke.render import Rendered, run_program, stack_config


def render_stack(stack: str, password: str | None = None) -> Rendered:
    config, secret_keys, _ = stack_config(stack, password)
    return run_program(stack, config, secret_keys)


def render_with(stack: str, overrides: dict[str, str]) -> Rendered:
    """A stack's config with some keys replaced, run under mocks."""
    config, secret_keys, _ = stack_config(stack)
    return run_program(stack, {**config, **overrides}, secret_keys)


def require_binaries(*names: str) -> None:
    """Like :func:`require_redis_binaries` for other tools (promtool, prometheus-redis-exporter)."""
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    message = f"missing binaries {', '.join(missing)}: run 'make deps'"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def require_redis_binaries() -> None:
    """Fail in CI (a missing binary must not pass as a skip); skip on a developer machine."""
    missing = missing_binaries()
    if not missing:
        return
    message = f"missing binaries {', '.join(missing)}: run 'make deps'"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def count_round_trips() -> Iterator[list[int]]:
    """Count writes to a socket (one per command or pipeline) made by this thread meanwhile."""
    calls, me = [0], threading.get_ident()
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: object, check_health: bool = True) -> None:
        if threading.get_ident() == me:
            calls[0] += 1
        original(self, command, check_health)

    with mock.patch.object(AbstractConnection, "send_packed_command", counting):
        yield calls
