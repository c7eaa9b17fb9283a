"""The two storage tiers, and the error a full state tier answers with.

What losing a key costs decides where it lives (issue 13):

* :data:`CACHE` — the **cache tier**, ``maxmemory-policy allkeys-lru``, Sentinel master name
  ``mymaster``: entry values, pointers, leases, tombstones and not-founds (``dict:entry:*``,
  :mod:`smoke.strategies.entries`) and claim objects, status and index
  (``dict:claim:*``, :mod:`smoke.strategies.claims`). Copies of data whose truth is elsewhere:
  evicting one costs a reload, so the tier runs full and LRU picks what goes.
* :data:`STATE` — the **state tier**, ``maxmemory-policy noeviction``, AOF ``everysec``, master
  name ``dictstate`` by default: idempotency records (``bridge:idempotency:*``), rate-limit
  counters (``ratelimit:*``), workflow status and metadata (``workflow:claim:*``, whose
  versions are the floor a late writer is refused by) and the entries' version markers and
  negative epoch (``dict:entry-ver:*``, the floor a late entry write or stale fill is refused
  by). These are **decisions**: "this request already ran", "this window is used up", "version
  10 is newer than 3". No source can reload
  them; evicting one silently breaks at-most-once, the exact limit or never-regress. So they are
  never evicted: a full state tier refuses writes instead.

A full state tier fails **closed and loudly**: a write the server refuses with ``OOM command not
allowed when used memory > 'maxmemory'`` surfaces as :class:`StateTierFull`, which the caller
maps to a retryable 503 — never a CLAIMED, an allowed request or an applied version that was not
recorded, and never a silent fallback to the cache tier.

Measured on valkey 8.0.1 and redis 7.0.15 under ``noeviction`` with used memory above
``maxmemory`` (tests/test_state_tier.py proves what the strategies rely on):

* plain commands flagged ``denyoom`` (``SET``, ``INCR``, ``HSET``, ...) are refused; reads,
  ``DEL``, ``EXPIRE``/``PEXPIRE`` and ``SCRIPT LOAD`` run (so a ``NOSCRIPT`` reload still works);
* ``EVAL``/``EVALSHA`` of a script **without** a shebang runs; the OOM check is made at the
  script's first write call, only if that call is ``denyoom`` and only while the script has
  written nothing yet (a script that first ``DEL``\\s or ``PEXPIRE``\\s may then ``SET`` past
  ``maxmemory``; the server does not stop a script half-way). A script that only reads is
  answered as usual. So an OOM reply to a script proves the script wrote nothing: the
  strategies' scripts are ordered to read and decide first and write only when they must, so
  the read-only answers (a replay, a refused stale version, an exhausted window) keep working
  on a full tier.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import OutOfMemoryError

CACHE = "cache"
STATE = "state"
TIERS = (CACHE, STATE)


class StateTierFull(OutOfMemoryError):
    """The state tier refused a write: it is at ``maxmemory`` under ``noeviction``, and nothing
    of this operation was recorded. Map it to a retryable 503 (``Retry-After``); do not run the
    side effect, do not count the request as allowed, do not assume the write happened.

    A ``redis.exceptions.OutOfMemoryError`` (a ``ResponseError``), and deliberately **not** a
    ``ConnectionError``: :meth:`SentinelClient.run` does not retry it (another attempt meets the
    same full master) and never turns it into ``OutcomeUnknown`` (the server refused it before
    anything was written, so the outcome is known: nothing happened). ``operation`` and ``key``
    name what was refused.
    """

    def __init__(self, operation: str, key: str, reply: str = "") -> None:
        self.operation = operation
        self.key = key
        self.reply = reply
        detail = f" (server: {reply})" if reply else ""
        super().__init__(
            f"state tier full: {operation} of {key} refused, the state tier is at maxmemory under "
            f"noeviction and nothing was recorded; answer a retryable 503{detail}"
        )

    def __reduce__(self) -> tuple[type[StateTierFull], tuple[str, str, str]]:
        # Exceptions are rebuilt from their args (pickling, copying): rebuild from the fields.
        return (type(self), (self.operation, self.key, self.reply))


def state_tier_full(exc: OutOfMemoryError, operation: str, key: str) -> StateTierFull:
    """The :class:`StateTierFull` for redis-py's OOM reply ``exc`` to ``operation`` on ``key``
    (raise it ``from exc``). ``exc`` may be a StateTierFull already: it is returned as it is."""
    if isinstance(exc, StateTierFull):
        return exc
    return StateTierFull(operation, key, str(exc))


@contextmanager
def refused_when_full(operation: str, key: str) -> Iterator[None]:
    """Run the block; an OOM reply from the server inside it leaves as :class:`StateTierFull`
    naming ``operation`` and ``key``. Every other error passes through unchanged."""
    try:
        yield
    except OutOfMemoryError as exc:
        raise state_tier_full(exc, operation, key) from exc
