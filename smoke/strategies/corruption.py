"""Logging corrupt or foreign cached values: once as a warning, then quietly.

Every strategy treats such a value as a miss (or, for idempotency, fails closed) and goes on; the
first occurrence in a process is worth a warning, a flood of identical ones would hide the rest.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any


class CorruptionLog:
    def __init__(self, logger: logging.Logger, message: str) -> None:
        self.logger = logger
        self.message = message  # a %-format taking the call's arguments
        self.warned = False
        self._lock = threading.Lock()

    def __call__(self, *args: object) -> None:
        with self._lock:
            first, self.warned = not self.warned, True
        (self.logger.warning if first else self.logger.debug)(self.message, *args)


def json_object(raw: str | bytes) -> dict[str, Any]:
    """``raw`` parsed as a JSON object; ``ValueError`` saying why for anything else."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"JSON {type(data).__name__}, not an object")
    return data
