"""Running the strategies' Lua scripts: ``EVALSHA``, and ``SCRIPT LOAD`` on ``NOSCRIPT``.

The script cache is not replicated, so a new master answers ``NOSCRIPT`` once after a failover.
``NOSCRIPT`` proves the script did not run, so loading it and running it again is safe even for
a non-idempotent script. Written here rather than with redis-py's ``Script`` because the strategies
run scripts on a connection pinned for a ``WAIT`` and read replies undecoded (a foreign,
non-UTF-8 value must not raise inside redis-py).
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis
from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError


class LuaScript:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, r: redis.Redis, keys: list[str], args: list[Any], *, decode: bool = False) -> Any:
        options = {} if decode else {NEVER_DECODE: True}
        try:
            return r.execute_command("EVALSHA", self.sha, len(keys), *keys, *args, **options)
        except NoScriptError:
            r.script_load(self.source)
            return r.execute_command("EVALSHA", self.sha, len(keys), *keys, *args, **options)

    def then_wait(
        self, r: redis.Redis, keys: list[str], args: list[Any], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """Run the script, then ``WAIT replicas timeout_ms``, in one round trip.

        A non-transactional pipeline sends both on one connection, so the ``WAIT`` covers the
        script's write; returns the script's (undecoded) reply and the replicas that acknowledged.
        """
        for attempt in (1, 2):
            pipe = r.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args, **{NEVER_DECODE: True})
            pipe.execute_command("WAIT", replicas, timeout_ms)
            reply, acked = pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError) and attempt == 1:
                r.script_load(self.source)  # NOSCRIPT: the script did not run, so running it again is safe
                continue
            for result in (reply, acked):
                if isinstance(result, Exception):
                    raise result
            return reply, int(acked)
        raise AssertionError("unreachable: the second attempt returns or raises")
