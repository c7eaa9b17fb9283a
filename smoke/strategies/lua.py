"""Running the strategies' Lua scripts: ``EVALSHA``, and ``SCRIPT LOAD`` on ``NOSCRIPT``.

The script cache is not replicated, so a new master answers ``NOSCRIPT`` once after a failover.
``NOSCRIPT`` proves the script did not run, so loading it and running it again is safe even for
a non-idempotent script. Written here rather than with redis-py's ``Script`` because the strategies
run scripts on a connection pinned for a ``WAIT`` and read replies undecoded (a foreign,
non-UTF-8 value must not raise inside redis-py).

Also the one copy of what the strategies that order versions share: :data:`VERSIONS_LUA` (exact
comparison of versions as decimal strings) and :func:`version_text` (the range they accept); and
:func:`get_string`, the plain ``GET`` a read by one key sends in place of a script.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis
from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError, ResponseError

# Versions: the strategies that order versions (entries, workflow) accept integers in
# [0, MAX_VERSION] and compare them exactly. Lua numbers are doubles, which hold every integer
# only up to 2^53 (2^53 + 1 and 2^53 are one number there; nanosecond timestamps, ~1.7e18, are
# 256 apart per double), so versions travel as decimal strings and the scripts compare those:
# by length, then in 9-digit chunks that a double holds exactly (not with Lua's ``<`` on strings,
# which follows the server's collation locale).
MAX_VERSION = 2**63 - 1

VERSIONS_LUA = """
-- A version as a canonical decimal string (no sign, no leading zeros), or nil. Also reads a
-- number written in a double's notation (a floor an older script stored, '1.7e+18').
local function vnorm(s)
  if type(s) ~= 'string' then return nil end
  if string.match(s, '^%d+$') then return (string.gsub(s, '^0+(%d)', '%1')) end
  local n = tonumber(s)
  if n and n >= 0 and n == math.floor(n) and n < 1e19 then return string.format('%.0f', n) end
  return nil
end
-- a > b, both canonical
local function vgt(a, b)
  if #a ~= #b then return #a > #b end
  for i = 1, #a, 9 do
    local x, y = tonumber(string.sub(a, i, i + 8)), tonumber(string.sub(b, i, i + 8))
    if x ~= y then return x > y end
  end
  return false
end
-- s + 1, s canonical
local function vinc(s)
  local i = #s
  while i > 0 and string.sub(s, i, i) == '9' do i = i - 1 end
  if i == 0 then return '1' .. string.rep('0', #s) end
  return string.sub(s, 1, i - 1) .. string.char(string.byte(s, i) + 1) .. string.rep('0', #s - i)
end
-- The version of a JSON document the strategy wrote with "version" as its last member
-- (``...,"version":<n>}``), read from the text: cjson would decode it into a double. Falls back
-- to cjson's double (exact up to 2^53) for a document written otherwise; nil if it has none.
local function json_version(raw, doc)
  local digits = string.match(raw, '"version":%s*(%d+)%s*}%s*$')
  if digits then return vnorm(digits) end
  local n = type(doc) == 'table' and doc.version
  if type(n) == 'number' and n >= 0 and n == math.floor(n) then return string.format('%.0f', n) end
  return nil
end
"""


def version_text(what: str, value: object, low: int = 0) -> str:
    """``value`` as the decimal string the scripts compare, if it is an integer in
    [``low``, ``MAX_VERSION``]; a ``ValueError`` naming the argument, the value and the range
    otherwise (a bool, a float, a string, a negative number, 2^63 and above)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_VERSION:
        raise ValueError(
            f"{what} {value!r}: an integer in [{low}, 2**63 - 1] (versions are compared exactly up to there)"
        )
    return str(value)


# What get_string answers for a key that holds another Redis type than a string.
WRONG_TYPE = object()


def get_string(r: redis.Redis, key: str) -> bytes | object | None:
    """``GET key``, undecoded: the value, ``None`` when absent, or :data:`WRONG_TYPE` when the key
    holds another Redis type (the server's ``WRONGTYPE``, which is not raised).

    A read of one string key needs no script: a ``GET`` returns what the strategies' type-checking
    scripts would, for ~10x less server time (``smoke/bench/server_cost.py``). The one case a
    script handles that a ``GET`` cannot, a key of a foreign type (deleted, logged once, a miss,
    atomically), is left to the caller's script on :data:`WRONG_TYPE`: a second round trip for a
    foreign value only, as a corrupt value costs one to delete."""
    try:
        return r.execute_command("GET", key, **{NEVER_DECODE: True})
    except ResponseError as exc:
        if str(exc).startswith("WRONGTYPE"):
            return WRONG_TYPE
        raise


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
