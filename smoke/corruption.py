"""Logging corrupt or foreign cached values: once as a warning, then quietly.

Every strategy treats such a value as a miss (or, for idempotency, fails closed) and goes on; the
first occurrence in a process is worth a warning, a flood of identical ones would hide the rest.
"""

from __future__ import annotations

import logging
import threading


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
