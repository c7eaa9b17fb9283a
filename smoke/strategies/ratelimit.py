"""Rate limiting of Bridge/Bacen calls (seed TSP-003 §3.5): a fixed one-minute window per ISPB and
operation.

Contract kept from the seed: key ``ratelimit:<ispb>:<operation>:<window>``, limits per minute per
ISPB CreateEntry 100, CreateClaim 50, GetEntry 500, any other operation 100. What changes, and why:

* The seed ran ``INCR`` and then, in a second call, ``EXPIRE`` when the count was 1: a crash or a
  lost reply in between left a counter without a TTL, blocking that ISPB for good once it reached
  the limit. It also counted rejected requests and used the client's clock for the window.
* Now one Lua script (1 round trip) takes the window from the server clock (``TIME``), rejects
  *without incrementing* when count + 1 > limit, otherwise ``INCR``\\s, and gives the key a TTL
  ending with its window when the key is new or found without a TTL (repair). Request L+1 in a
  window is rejected exactly, also under concurrency, because the script is atomic.
* **Window string**: the Unix epoch minute of the master's clock, ``floor(unix_ms / 60000)``, e.g.
  ``ratelimit:12345678:CreateEntry:29123456``. It is UTC by definition, sorts and compares as a
  number, and needs no date formatting (Redis Lua has no ``os.date``). The seed's
  ``2006-01-02-15:04`` layout used the client's local time zone and put a ``:`` inside the window.
* A corrupt or foreign counter (not a non-negative integer, or another Redis type) is treated as a
  miss: deleted inside the script, counted from zero, and logged once per process.
* Limits are integers in [1, 10^15 - 1]: the script reads counters of up to 15 digits, which a
  Lua number (a double) holds exactly, and compares ``count + 1 > limit`` there. The ISPB and the
  operation must be UTF-8 text without ``:`` or whitespace (``ValueError`` naming the part,
  before anything is sent): a lone surrogate used to reach Redis as ``?`` and count against
  another ISPB (``6070119\\udc80`` used up the counter of ``6070119?``).

**Tier: state** (:mod:`smoke.strategies.tiers`). The counters ``ratelimit:<ispb>:<operation>:<window>``
are decisions: an evicted counter starts its window again from zero and lets a second burst of
``limit`` requests through. Under ``volatile-ttl`` they would even go first (the shortest TTLs).
So the application passes the **state tier's** client (``noeviction``).

**Full state tier**: a check that would count (``INCR``) raises
:class:`~smoke.strategies.tiers.StateTierFull`: nothing was counted, the request is neither
allowed nor refused by the limiter, the caller answers a retryable 503 (it must not let the call
through as if allowed). A check the window already refuses writes nothing and is answered as
usual (``allowed=False``). The one write a full tier lets through: a corrupt counter is deleted
first, after which the server lets the script's ``INCR`` run (it never stops a script that has
written), so that decision is counted and answered normally.

Counting is not idempotent: a retried ``INCR`` could count twice, so the client runs it with
``idempotent=False`` and raises ``OutcomeUnknown`` when the outcome is unknown (the caller decides
fail-open or fail-closed per operation). Round trips: ``check`` 1 (+1 ``SCRIPT LOAD`` once per
process and per failover).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from smoke.strategies.client import SentinelClient, encodable
from smoke.strategies.corruption import CorruptionLog
from smoke.strategies.lua import LuaScript
from smoke.strategies.tiers import refused_when_full

log = logging.getLogger(__name__)

# Every key of this strategy starts with KEY_PREFIX (the application ACL user is limited to it).
KEY_PREFIX = "ratelimit:"

WINDOW_MS = 60_000
DEFAULT_LIMITS: Mapping[str, int] = {"CreateEntry": 100, "CreateClaim": 50, "GetEntry": 500}
DEFAULT_LIMIT = 100
# The script reads a counter of up to 15 digits as a number (a double holds those exactly) and
# treats a longer one as foreign: a limit must stay below that.
MAX_LIMIT = 10**15 - 1

_log_corrupt = CorruptionLog(log, "rate limit: corrupt or foreign counter deleted: %s")

# ARGV: key base ("<prefix>ratelimit:<ispb>:<operation>:"), limit, window ms.
# Returns {allowed 0|1, count after the call, ms until the window ends, window number, corrupt 0|1}.
# Redis Cluster: the key is built here from server time, so it is not declared in KEYS. On a
# cluster the contract would need a hash tag, ratelimit:{<ispb>:<operation>}:<window>, and the
# caller would pass ratelimit:{<ispb>:<operation>} as KEYS[1] to route the call; every window key
# then lives in that slot and the script stays one round trip. Without the hash tag it cannot run
# on a cluster (the client could not know the slot without asking the server's clock first).
_CHECK_SOURCE = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window_ms = tonumber(ARGV[3])
local window = math.floor(now_ms / window_ms)
local reset_ms = (window + 1) * window_ms - now_ms
local key = ARGV[1] .. string.format('%d', window)
local limit = tonumber(ARGV[2])
local corrupt = 0
local count = 0
local raw = redis.pcall('GET', key)
if type(raw) == 'table' then
  corrupt = 1
elseif raw then
  -- INCR accepts only a signed 64-bit integer: anything else is foreign.
  if string.match(raw, '^%d+$') and #raw <= 15 then count = tonumber(raw) else corrupt = 1 end
end
if corrupt == 1 then
  redis.call('DEL', key)
  count = 0
end
local pttl = redis.call('PTTL', key)
if count + 1 > limit then
  if pttl == -1 then redis.call('PEXPIRE', key, reset_ms) end
  return {0, count, reset_ms, window, corrupt}
end
count = redis.call('INCR', key)
if pttl < 0 then redis.call('PEXPIRE', key, reset_ms) end
return {1, count, reset_ms, window, corrupt}
"""
_CHECK = LuaScript(_CHECK_SOURCE)


@dataclass(frozen=True)
class Decision:
    """One rate-limit decision, with what ``X-RateLimit-*`` headers need."""

    allowed: bool
    limit: int
    count: int  # requests counted in this window, this one included when allowed
    remaining: int
    reset_ms: int  # ms until the window ends and the counter starts again
    window: int  # epoch minute of the master's clock


class RateLimiter:
    """Fixed one-minute windows per (ISPB, operation), decided on the master in one round trip."""

    def __init__(
        self,
        client: SentinelClient,
        prefix: str = "",
        *,
        limits: Mapping[str, int] | None = None,
        default_limit: int = DEFAULT_LIMIT,
        window_ms: int = WINDOW_MS,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self.default_limit = default_limit
        self.window_ms = window_ms
        if isinstance(window_ms, bool) or not isinstance(window_ms, int) or window_ms < 1:
            raise ValueError(f"window_ms = {window_ms!r}: a positive integer")
        named = [("default_limit", default_limit), *((f"limit for {op!r}", n) for op, n in self.limits.items())]
        for name, limit in named:
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
                raise ValueError(f"{name} = {limit!r}: an integer in [1, {MAX_LIMIT}] (counted exactly)")
        for operation in self.limits:
            encodable("operation", operation)

    def limit_for(self, operation: str) -> int:
        return self.limits.get(operation, self.default_limit)

    def key_base(self, ispb: str, operation: str) -> str:
        """The key without its window; ``:`` is refused inside the parts so keys stay unambiguous,
        and so is text that cannot be sent as it is (not UTF-8: it would reach Redis as another
        ISPB's key)."""
        for name, part in (("ispb", ispb), ("operation", operation)):
            encodable(name, part)
            if not part or ":" in part or any(c.isspace() for c in part):
                raise ValueError(f"{name} {part!r}: non-empty, without ':' or whitespace")
        return f"{self.prefix}{KEY_PREFIX}{ispb}:{operation}:"

    def check(self, ispb: str, operation: str) -> Decision:
        """Count one request of ``operation`` by ``ispb`` if the window allows it.

        Raises ``OutcomeUnknown`` when the master may or may not have counted it, and
        :class:`~smoke.strategies.tiers.StateTierFull` when the state tier is full and the
        request would have been counted (it was not: a retryable 503, not an allowed call).
        """
        limit = self.limit_for(operation)
        args = [self.key_base(ispb, operation), limit, self.window_ms]
        with refused_when_full("rate-limit check", f"{args[0]}<window>"):
            allowed, count, reset_ms, window, corrupt = self.client.run(
                lambda r: _CHECK(r, [], args, decode=True), idempotent=False
            )
        if corrupt:
            _log_corrupt(f"{args[0]}{window}")
        count = int(count)
        return Decision(bool(allowed), limit, count, max(0, limit - count), int(reset_ms), int(window))
