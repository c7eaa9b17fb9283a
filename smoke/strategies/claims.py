"""Claim cache (seed TSP-003 §3.2): claim objects, their status, and the claims of an entry, fixed.

The seed writes the object and the status with two independent ``SETEX`` (a reader can see one
without the other) and indexes claims per entry in a ``SADD`` set that never gets a TTL: the
notes (cache-strategies.md §9) measured it keeping every dead id forever (``TTL -1``), growing
without bound and returning ids whose claims expired long ago. This module keeps the seed's key
names and the 1 min TTL as the contract and fixes the mechanics.

Tier: every key below lives on the **cache tier** (:data:`smoke.strategies.tiers.CACHE`,
``allkeys-lru``). A claim here is a copy of the claim in the directory's database, kept for fast
reads and polling; evicting it costs a reload, and no decision is taken on it (see Ordering
below), so it need not be on the never-evicting state tier.

Data shape (changed from the seed where marked, all keys under ``prefix``):

* ``dict:claim:id:<id>`` — the claim JSON, ``PX ttl_ms`` (1 min).
* ``dict:claim:status:<id>`` — the status string alone (cheap polling), same TTL; written in the
  same Lua call as the object, so the two never disagree.
* ``dict:claim:index:entry:<entry_id>`` — **changed**: a sorted set (was a set) of claim ids
  scored by their expiry time in ms (server clock). Every write prunes members whose score has
  passed and sets the key's TTL to the latest live expiry + ``index_slack_ms``, so the index is
  bounded by the live claims of the entry, disappears when they do, and never lacks a TTL.
  (On Redis ≥ 7.4 a hash with ``HEXPIRE`` per field would do the same without the pruning.)

  **Migration from the seed**: an index left by the seed is a SET without a TTL at the same key.
  The first put, listing or remove that touches it sees its type (``TYPE``, inside the same Lua
  call), deletes it, logs it once as a foreign value, and goes on with an empty sorted set, so
  the put writes object, status and index all together and a listing returns no claims. The
  seed's members are not carried over: the claims they name expire within the 1 min TTL anyway,
  and each one written again after the deploy is indexed again.

Foreign values: every script checks each key's type before it reads or writes it (a key of
another type is deleted, logged once and treated as absent), so WRONGTYPE never escapes and
never aborts a script after its first write (a Lua script is not rolled back). Replies are read
undecoded (:mod:`smoke.strategies.lua`): an object or status that is not UTF-8 is a corrupt value like any
other, a miss that is deleted and logged, and the shared connection stays usable.

Ordering (a limit by design, not guarded here): a put is **last writer wins**. A claim carries
no version, so a late put (delayed, or retried after a newer one) of an older state overwrites a
newer one: OPEN put after CONFIRMED makes ``status`` answer OPEN until the next put, for up to
the 1 min TTL. The application must order them: one writer per claim (the claim's workflow),
each put after the commit it reflects, never a retry of a state that a newer put has replaced
(after a lost reply, put the claim's *current* state again). A decision that must not act on an
older status (completing a portability, releasing a key) reads the source of truth, not this
cache. Should several writers ever update one claim, give it a version and guard the put as
:mod:`smoke.strategies.workflow` does (a data-shape change of the object and status values).

Ids: claim and entry ids must be UTF-8 text; one that is not (a lone surrogate from
``json.loads``) is a ``ValueError`` naming it, raised before anything is sent. A ``claim_type`` or
``status`` outside the contract is refused by ``put`` (the readers would delete it as corrupt).

Round trips: create/update 1 (one Lua call), status 1 and get 1 (a plain ``GET``; a key of a
foreign type is handed to a script that deletes it: one more), list 1 (one Lua call prunes,
ranges and fetches the objects), remove 1; a corrupt value costs 1 more to delete it. Every
read goes to the master (the client only talks to the master), so a status decision never sees
a replica lagging behind a write. All scripts are full-value writes that are safe to re-run
after a lost reply, hence ``idempotent=True``.

Redis Cluster: the object, status and index keys of one claim do not share a hash tag in the
contract (the index is per entry, the objects per claim). On a cluster, create would be two
round trips (object + status tagged ``{<claim id>}`` in one script, the index in a second), and a
listing one ``ZRANGE`` plus one ``MGET`` per slot, with the object's own TTL as the truth when
the index lags.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from smoke.strategies.client import SentinelClient, encodable
from smoke.strategies.corruption import CorruptionLog, json_object
from smoke.strategies.lua import WRONG_TYPE, LuaScript, get_string

log = logging.getLogger(__name__)

# Every key of this strategy starts with KEY_PREFIX (the application ACL user is limited to it).
KEY_PREFIX = "dict:claim:"
OBJECT_KEY = "dict:claim:id:"
STATUS_KEY = "dict:claim:status:"
INDEX_KEY = "dict:claim:index:entry:"

DEFAULT_TTL_MS = 60_000
CLAIM_TYPES = ("OWNERSHIP", "PORTABILITY")
STATUSES = ("OPEN", "WAITING_RESOLUTION", "CONFIRMED", "CANCELLED", "COMPLETED")

_log_corrupt = CorruptionLog(log, "corrupt cached claim at %s (%s): treated as a miss and deleted")


@dataclass(frozen=True)
class Claim:
    """A DICT ownership or portability claim on an entry, as the claim workflow publishes it."""

    id: str
    entry_id: str
    claim_type: str
    status: str
    claimer_ispb: str
    donor_ispb: str
    created_at: str
    updated_at: str
    resolution_deadline: str

    def to_json(self) -> str:
        return json.dumps(vars(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Claim:
        """Parse and check the shape; ``ValueError`` for anything that is not a claim."""
        data = json_object(raw)
        try:
            claim = cls(**{name: data[name] for name in cls.__dataclass_fields__})
        except KeyError as exc:
            raise ValueError(f"missing field {exc}") from None
        if not all(isinstance(v, str) for v in vars(claim).values()):
            raise ValueError("a field is not a string")
        if claim.claim_type not in CLAIM_TYPES:
            raise ValueError(f"claim_type {claim.claim_type!r}")
        if claim.status not in STATUSES:
            raise ValueError(f"status {claim.status!r}")
        return claim


# The prelude of every script. A key of another type than this module writes (the seed's SET
# index, a foreign writer) is deleted before the script reads or writes it and reported in the
# reply's first element ({key, type, ...}) for the caller to log: ZADD or GET on it would abort
# the script with WRONGTYPE, and a Lua script is not rolled back, so an abort after the object
# and status were written would leave a partial write behind.
_PRELUDE_LUA = """
local foreign = {}
local function usable(k, want)
  local t = redis.call('TYPE', k).ok
  if t == 'none' or t == want then return true end
  redis.call('DEL', k)
  foreign[#foreign + 1] = k
  foreign[#foreign + 1] = t
  return false
end
local function sget(k)
  if usable(k, 'string') then return redis.call('GET', k) end
  return false
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Cluster: object + status could share {<claim id>}; the index is per entry: a second call there.
# KEYS: object, status, index. ARGV: claim id, json, status, ttl ms, index slack ms.
# Reply: {foreign, the claim's expiry (server ms), the index size after pruning}.
_PUT_LUA = (
    _PRELUDE_LUA
    + """
usable(KEYS[1], 'string')
usable(KEYS[2], 'string')
usable(KEYS[3], 'zset')
local now = now_ms()
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], now + ttl, ARGV[1])
local top = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[3], math.floor(tonumber(top[2]) - now + tonumber(ARGV[5])))
return {foreign, now + ttl, redis.call('ZCARD', KEYS[3])}
"""
)

# KEYS: index. ARGV: object key prefix. Prune, range the live ids, fetch their objects; drop ids
# whose object is gone (evicted, deleted, or of a foreign type). The object keys are derived
# here, not declared in KEYS: fine on one master, a cluster would need the per-slot MGET
# described in the docstring. Reply: {foreign, {id1, json1, id2, json2, ...}}.
_LIST_LUA = (
    _PRELUDE_LUA
    + """
local out = {}
if not usable(KEYS[1], 'zset') then return {foreign, out} end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
for _, id in ipairs(ids) do
  local v = sget(ARGV[1] .. id)
  if v then
    out[#out + 1] = id
    out[#out + 1] = v
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return {foreign, out}
"""
)

# KEYS: the object or status key. Reply: {foreign[, value]}. Sent only when a plain GET met a key
# of another type (ClaimCache._get): it deletes that key and reports it.
_GET_LUA = (
    _PRELUDE_LUA
    + """
local v = sget(KEYS[1])
if v then return {foreign, v} end
return {foreign}
"""
)

# KEYS: object, status, index. ARGV: claim id. Reply: {foreign, keys or members removed}.
_REMOVE_LUA = (
    _PRELUDE_LUA
    + """
usable(KEYS[3], 'zset')
return {foreign, redis.call('DEL', KEYS[1], KEYS[2]) + redis.call('ZREM', KEYS[3], ARGV[1])}
"""
)

# KEYS: key. ARGV: the value seen. Deletes only that value, never a good one written since.
_DELETE_IF_LUA = """
if redis.call('TYPE', KEYS[1]).ok == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_PUT = LuaScript(_PUT_LUA)
_LIST = LuaScript(_LIST_LUA)
_GET = LuaScript(_GET_LUA)
_REMOVE = LuaScript(_REMOVE_LUA)
_DELETE_IF = LuaScript(_DELETE_IF_LUA)


@dataclass(frozen=True)
class PutResult:
    """When the claim expires (server clock, ms) and how many live claims its entry has: a
    growing ``index_size`` is the one number to watch for a leak."""

    expires_at_ms: int
    index_size: int


class ClaimCache:
    """Write-through cache of claims and their per-entry index; see the module docstring.

    Last writer wins: claims carry no version, so a late put of an older state (OPEN after
    CONFIRMED) overwrites the newer one for up to the TTL (1 min). The application must order the
    puts of a claim (one writer, after each commit, never re-sending a replaced state) and take
    decisions that must not see an older status from the source of truth.
    """

    def __init__(
        self, client: SentinelClient, prefix: str = "", *, ttl_ms: int = DEFAULT_TTL_MS, index_slack_ms: int = 5_000
    ) -> None:
        if ttl_ms <= 0 or index_slack_ms < 0:
            raise ValueError("ttl_ms must be positive and index_slack_ms not negative")
        self.client = client
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self.index_slack_ms = index_slack_ms

    # Every key builder refuses an id that cannot be sent as it is (not UTF-8: it would reach
    # Redis as another id's key), with a ValueError naming it, before anything is sent.
    def object_key(self, claim_id: str) -> str:
        return f"{self.prefix}{OBJECT_KEY}{encodable('claim id', claim_id)}"

    def status_key(self, claim_id: str) -> str:
        return f"{self.prefix}{STATUS_KEY}{encodable('claim id', claim_id)}"

    def index_key(self, entry_id: str) -> str:
        return f"{self.prefix}{INDEX_KEY}{encodable('entry id', entry_id)}"

    # --- writes -------------------------------------------------------------------------------
    def put(self, claim: Claim) -> PutResult:
        """Create or update: object, status and index entry in one Lua call (one round trip).

        Last writer wins: there is no version, so puts of one claim must reach the cache in the
        order of the claim's changes (see the module docstring). A claim the readers would refuse
        (a ``claim_type`` or ``status`` outside the contract) is a ``ValueError``, not written.
        """
        if claim.claim_type not in CLAIM_TYPES:
            raise ValueError(f"claim_type {claim.claim_type!r}: one of {', '.join(CLAIM_TYPES)}")
        if claim.status not in STATUSES:
            raise ValueError(f"status {claim.status!r}: one of {', '.join(STATUSES)}")
        keys = [self.object_key(claim.id), self.status_key(claim.id), self.index_key(claim.entry_id)]
        args = [claim.id, claim.to_json(), claim.status, self.ttl_ms, self.index_slack_ms]
        expires, size = self._run(_PUT, keys, args)
        return PutResult(int(expires), int(size))

    create = put
    update = put

    def remove(self, claim: Claim) -> int:
        """Drop a claim that ended (object, status, index member) in one round trip."""
        keys = [self.object_key(claim.id), self.status_key(claim.id), self.index_key(claim.entry_id)]
        (removed,) = self._run(_REMOVE, keys, [claim.id])
        return int(removed)

    # --- reads (all from the master) ----------------------------------------------------------
    def get(self, claim_id: str) -> Claim | None:
        """The claim, or ``None`` on a miss (one round trip)."""
        key = self.object_key(claim_id)
        raw = self._get(key)
        return self._parse(key, claim_id, raw) if raw is not None else None

    def status(self, claim_id: str) -> str | None:
        """The claim's status, or ``None`` on a miss (one round trip to the master)."""
        key = self.status_key(claim_id)
        raw = self._get(key)
        if raw is None:
            return None
        try:
            status = raw.decode()
            if status not in STATUSES:
                raise ValueError(f"unknown status {status[:40]!r}")
        except ValueError as exc:  # UnicodeDecodeError included
            _log_corrupt(key, str(exc)[:120])
            self._delete_stale(key, raw)
            return None
        return status

    def list_for_entry(self, entry_id: str) -> list[Claim]:
        """The live claims of an entry, oldest expiry first (one round trip)."""
        prefix = self.prefix + OBJECT_KEY
        (pairs,) = self._run(_LIST, [self.index_key(entry_id)], [prefix])
        claims = []
        for claim_id, raw in zip(pairs[::2], pairs[1::2], strict=True):
            claim = self._parse(prefix.encode() + claim_id, _text(claim_id), raw)
            if claim is not None and claim.entry_id == entry_id:
                claims.append(claim)
        return claims

    # --- internals ----------------------------------------------------------------------------
    def _get(self, key: str) -> bytes | None:
        """One string key's value, or None: a plain ``GET`` (:func:`~smoke.strategies.lua.get_string`);
        a key of a foreign type goes to the type-checking script, which deletes it and reports it
        (logged; one more round trip, as for any corrupt value)."""
        raw = self.client.run(lambda r: get_string(r, key), idempotent=True)
        if raw is WRONG_TYPE:
            reply = self._run(_GET, [key], [])
            raw = reply[0] if reply else None
        assert raw is None or isinstance(raw, bytes)
        return raw

    def _run(self, script: LuaScript, keys: list[Any], args: list[Any]) -> list[Any]:
        """One script call (replies undecoded: a foreign value need not be UTF-8); logs the keys
        of a foreign type the script deleted and returns the rest of the reply."""
        reply: list[Any] = self.client.run(lambda r: script(r, keys, args), idempotent=True)
        foreign = reply[0]
        for key, kind in zip(foreign[::2], foreign[1::2], strict=True):
            _log_corrupt(_text(key), f"a Redis {_text(kind)}, not this cache's type")
        return reply[1:]

    def _parse(self, key: str | bytes, claim_id: str, raw: bytes) -> Claim | None:
        try:
            claim = Claim.from_json(raw.decode())  # UnicodeDecodeError is a ValueError
            if claim.id != claim_id:
                raise ValueError(f"holds claim {claim.id!r}")
        except ValueError as exc:
            _log_corrupt(_text(key), str(exc)[:120])
            self._delete_stale(key, raw)
            return None
        return claim

    def _delete_stale(self, key: str | bytes, raw: bytes) -> None:
        """Delete a corrupt value, but only that value: never a good one written meanwhile."""
        self.client.run(lambda r: _DELETE_IF(r, [key], [raw]), idempotent=True)


def _text(value: bytes | str) -> str:
    """A reply element as text, for ids and log lines (a foreign one need not be UTF-8)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def sample_claim(claim_id: str, entry_id: str, status: str = "OPEN") -> Claim:
    """A realistic claim for checks and tests."""
    now = time.gmtime()
    return Claim(
        id=claim_id,
        entry_id=entry_id,
        claim_type="PORTABILITY",
        status=status,
        claimer_ispb="00000000",
        donor_ispb="60701190",
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", now),
        updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", now),
        resolution_deadline=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7 * 86400)),
    )
