"""Entry cache (seed TSP-003 §3.1): DICT entries by id and by (key_type, key_value), fixed.

The seed stores the full JSON twice (``dict:entry:id:<id>`` and ``dict:entry:key:<type>:<value>``),
writes them with two independent ``SETEX`` and invalidates with a ``DEL`` of a key pair the caller
must know. The notes (cache-strategies.md §8) list what that costs: a stale refill after an
invalidation, reordered write-throughs leaving an older version, an old secondary key left behind
when ``key_value`` changes, and a stampede of loaders on a cold key. This module keeps the seed's
key names and the 5 min TTL as the contract and fixes the mechanics.

Data shape (changed from the seed, all keys under ``prefix``):

* ``dict:entry:id:<id>`` — the entry JSON (the only copy), ``PX ttl_ms`` (5 min).
* ``dict:entry:key:<key_type>:<key_value>`` — a **pointer**: just the entry id, same TTL. A Lua
  script follows it server-side, so a read by key is still one round trip, and an entry is
  stored once (a pointer is ~100 B instead of a second ~440 B copy).
* ``__dict_none__`` in either key — a **negative** entry (not found), ``PX negative_ttl_ms``
  (≤ 30 s, RFC 2308-style bounded negative caching).
* ``dict:entry:ver:<id>`` — a **version marker** hash ``{floor, inv_floor, inv_us}``,
  ``PX marker_ttl_ms`` (default and minimum: the entry TTL, 5 min, refreshed by every store and
  invalidation, so it outlives the entry it guards): ``floor`` is the lowest version a write or
  fill may still store (a write of v raises it to v, an invalidation with ``committed_version``
  to that version); ``inv_floor`` the lowest version a *write-through* may store after an
  invalidation without a committed version (the invalidated version + 1: a write-through has no
  start time to judge it by); ``inv_us`` the server time of the last invalidation, against which
  a *fill* is judged: one whose lease was taken before it is rejected, one taken after it is
  stored (so invalidating an unchanged entry does not block its refill). The marker outliving the
  entry is what rejects a late, older write-through or a fill that loaded before the
  invalidation even after the entry itself is gone.
  Versions are stored as decimal strings and compared exactly (see *Versions* below).
* ``dict:entry:lease:id:<id>`` / ``dict:entry:lease:key:<type>:<value>`` — a fill **lease**
  (``SET NX PX lease_ms``, value ``<token>:<server time µs>``): one loader per cold key; the
  others poll briefly and read what it stored. A fill is stored only while its lease holds and
  only if no invalidation happened after the lease was taken (Facebook's memcache leases).
* ``dict:entry:epoch:negative-by-key`` — **new**, one per prefix: the server time (µs) of the
  last ``invalidate`` of *any* entry, ``PX max(marker_ttl_ms, lease_ms)`` (5 min, set again by
  every invalidation). It is what a not-found loaded *by key* is judged by (next section).

What a fill is judged by. A fill of an entry (by id or by key) and a not-found by id are judged
by the entry's marker (``inv_us`` against the lease, ``floor`` against the version). A
**not-found by key** names no entry: the entry that owns that key value now may be one that just
moved there, and its writer calls ``invalidate(<id>, committed_version=…)`` without knowing (or
saying) the new key value. So a not-found by key is stored only if its lease was taken after the
last invalidation under the prefix (the epoch): otherwise it is dropped (outcome
``invalidated``) and the next reader loads again. Not-founds are cheap to reload, but under a
steady stream of invalidations the share dropped is about (invalidations per second) times (the
loader's time): at 100/s and a 5 ms query, half; the lease still keeps it to one loader at a
time per key. A write-through needs no epoch: it stores the pointer, and a not-found never
replaces an existing key (outcome ``exists``). Left by design, bounded by the negative TTL
(15 s by default, at most 30 s): a not-found *already cached* under a key value before an entry
moved there, unless the writer writes the entry through or passes ``new_key`` to ``invalidate``;
and a not-found stored after the value a write-through just stored was evicted within the
loader's milliseconds (LRU evicts the least recently used keys; these were just written).

A limit of ``invalidate`` (by design): without ``committed_version`` an invalidation refuses
later write-throughs only of the version it finds *cached* and older, and none at all when the
entry is not cached (expired, evicted, never read). A late write-through of an older version
than the one just committed (delayed, or retried) is then stored and served for up to the
entry TTL (5 min). Writers that know the version they committed should always pass it.

Versions: an entry's version (and ``committed_version``) is an integer in [0, 2^63 - 1] (a
database BIGINT; nanosecond commit timestamps, ~1.7e18, fit until 2262) and is compared
exactly: the scripts compare decimal strings (:data:`smoke.strategies.lua.VERSIONS_LUA`), since
Lua numbers are doubles (2^53 + 1 and 2^53 are one number there, and so are nanosecond
timestamps 256 apart). The version of a cached copy is read from its JSON text, where it is the
last member. Anything else (a bool, a float, a string, a negative number, 2^63) is a
``ValueError`` naming it, raised before anything is sent, also for an entry a loader returned.

Ids and keys: entry ids and key values must be UTF-8 text and key types one of the five DICT
types; anything else is a ``ValueError`` naming the argument, raised before anything is sent.
(redis-py used to send a lone surrogate as ``?``, so ``e-\\udc80`` read the entry of ``e-?``;
and a type with a ``:`` would share the pointer of another (type, value) pair.)

Round trips (measured by the checks, one ``EVALSHA`` each): ``get_by_id``/``get_by_key`` 1 (hit,
miss or negative), ``write`` 1, ``invalidate`` 1; ``get_or_load`` 1 on a hit and 2 on a cold key
(read + lease, then fill) around the loader, while a concurrent reader polls with 1 round trip
every ``poll_ms`` until the fill lands. A corrupt value costs 1 more to delete it (by key: the
entry and its pointer in one call). The first call of each script per process and per failover
costs 2 more (``NOSCRIPT``, ``SCRIPT LOAD``), since the script cache is not replicated. Every
script is safe to re-run after a lost reply (full-value ``SET`` guarded by versions; a lease
already held with our own token counts as ours), so all run with ``idempotent=True``.

Foreign values: every script checks each key's ``TYPE`` before it reads or writes it; a key of
another type (a hash at an id key, a list at a pointer, a string at a marker) is deleted, logged
once and treated as absent, within the same atomic call, so WRONGTYPE never escapes and never
aborts a script half-way through its writes. Replies are read undecoded (:mod:`smoke.strategies.lua`), so a
value that is not UTF-8 is a corrupt value like any other: a miss, deleted, logged.

Redis Cluster: the scripts touch the id key, its marker and lease (which could share a hash tag
``{<id>}``) *and* a pointer key that cannot share it (a lookup by key does not know the id). On a
cluster a read by key becomes two round trips (pointer, then entry) and a write two slots
(entry + marker in one script, pointer(s) in a second call), reopening a small window in which
a pointer may lag its entry; the read path already treats a pointer whose entry does not match
as stale. The epoch is one key of its own slot: an invalidation would set it in a further call
(before it answers), and a not-found fill by key read it first.

Clocks: leases, ``inv_us`` and the epoch are the master's ``TIME``. After a failover they are
compared with another server's clock; a new master whose clock is behind the old one by more than
the time between a lease and an invalidation could let one in-flight fill through (bounded by
the entry or negative TTL, like any cache entry a failover leaves stale).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from smoke.strategies.client import SentinelClient, encodable
from smoke.strategies.corruption import CorruptionLog, json_object
from smoke.strategies.lua import VERSIONS_LUA, LuaScript, version_text

log = logging.getLogger(__name__)

# Every key of this strategy starts with KEY_PREFIX (the application ACL user is limited to it).
KEY_PREFIX = "dict:entry:"
ID_KEY = "dict:entry:id:"
POINTER_KEY = "dict:entry:key:"
MARKER_KEY = "dict:entry:ver:"
LEASE_ID_KEY = "dict:entry:lease:id:"
LEASE_KEY_KEY = "dict:entry:lease:key:"
# One per prefix: the server time (µs) of the last invalidation, against which a not-found
# loaded by key is judged (see the module docstring).
NEGATIVE_EPOCH_KEY = "dict:entry:epoch:negative-by-key"
NONE = "__dict_none__"

DEFAULT_TTL_MS = 300_000
MAX_NEGATIVE_TTL_MS = 30_000
KEY_TYPES = ("CPF", "CNPJ", "PHONE", "EMAIL", "EVP")

_log_corrupt = CorruptionLog(log, "corrupt cached entry at %s (%s): treated as a miss and deleted")


@dataclass(frozen=True)
class Account:
    ispb: str
    branch: str
    number: str
    type: str


@dataclass(frozen=True)
class Owner:
    name: str
    tax_id: str
    type: str = "NATURAL_PERSON"


@dataclass(frozen=True)
class Entry:
    """A DICT key as the directory returns it; ``version`` is the row version of the source of
    truth and only ever grows, which is what the cache's version guard relies on."""

    id: str
    key_type: str
    key_value: str
    account: Account
    owner: Owner
    version: int
    created_at: str
    updated_at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Entry:
        """Parse and check the shape; ``ValueError`` for anything that is not an entry."""
        data = json_object(raw)
        try:
            account, owner = data["account"], data["owner"]
            if not isinstance(account, dict) or not isinstance(owner, dict):
                raise ValueError("account/owner are not objects")
            entry = cls(
                id=data["id"],
                key_type=data["key_type"],
                key_value=data["key_value"],
                account=Account(account["ispb"], account["branch"], account["number"], account["type"]),
                owner=Owner(owner["name"], owner["tax_id"], owner.get("type", "NATURAL_PERSON")),
                version=data["version"],
                created_at=data["created_at"],
                updated_at=data["updated_at"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or malformed field {exc}") from None
        strings = (entry.id, entry.key_value, entry.created_at, entry.updated_at, *asdict(entry.account).values())
        if not all(isinstance(s, str) for s in (*strings, entry.owner.name, entry.owner.tax_id)):
            raise ValueError("a text field is not a string")
        if entry.key_type not in KEY_TYPES:
            raise ValueError(f"key_type {entry.key_type!r}")
        version_text("version", entry.version)  # an integer in [0, 2^63 - 1], ValueError otherwise
        return entry


# The prelude of every script. A key of another type than this module writes (a foreign writer,
# a seed-era shape) is deleted before the script reads or writes it, and reported back in the
# reply's first element ({key, type, ...}) for the caller to log: GET or HGET on it would abort
# the script with WRONGTYPE, and a Lua script is not rolled back, so an abort after the first
# write would leave a partial write behind. With every key checked before use, nothing in these
# scripts can raise, and each runs all or nothing.
_PRELUDE_LUA = (
    VERSIONS_LUA
    + """
local NONE = '__dict_none__'
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
local function hget(k, f)
  if usable(k, 'hash') then return redis.call('HGET', k, f) end
  return false
end
local function now_us()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end
"""
)

# Shared by the write and fill scripts: store entry + pointer + marker if the version is not older
# than the marker's floor (for a write-through also its ``inv_floor``) nor than the cached copy;
# drop the old pointer when key_value changed (only if it still points at this id: the old key
# may meanwhile belong to another entry).
_STORE_LUA = (
    _PRELUDE_LUA
    + """
local function store(idkey, ptrkey, mkey, ptrprefix, id, json, version, ttl, mttl, writing)
  version = vnorm(version)
  if not version then return 'stale' end  -- not comparable: never stored (the caller validates)
  local floor = vnorm(hget(mkey, 'floor')) or '0'
  if writing then
    local ifloor = vnorm(hget(mkey, 'inv_floor'))
    if ifloor and vgt(ifloor, floor) then floor = ifloor end
  end
  if vgt(floor, version) then return 'stale' end
  local old = sget(idkey)
  local oldptr = nil
  if old and old ~= NONE then
    local ok, d = pcall(cjson.decode, old)
    if ok and type(d) == 'table' then
      local v = json_version(old, d)
      if v and vgt(v, version) then return 'stale' end
      if type(d.key_type) == 'string' and type(d.key_value) == 'string' then
        oldptr = ptrprefix .. d.key_type .. ':' .. d.key_value
      end
    end
  end
  if oldptr and oldptr ~= ptrkey and sget(oldptr) == id then redis.call('DEL', oldptr) end
  usable(ptrkey, 'string')
  redis.call('SET', idkey, json, 'PX', ttl)
  redis.call('SET', ptrkey, id, 'PX', ttl)
  redis.call('HSET', mkey, 'floor', version)
  redis.call('PEXPIRE', mkey, mttl)
  return 'stored'
end
"""
)

# Cluster: touches the pointer and the id key it names (not in KEYS): 2 round trips there.
# KEYS: lookup (id key or pointer key), lease key.
# ARGV: mode ('id'|'key'), id-key prefix, key_type, key_value, lease token ('' = no lease), lease ms.
# Reply: {foreign, 'hit', json[, id by key]} | {foreign, 'none'|'miss'|'lease'|'wait'}.
_READ_LUA = (
    _PRELUDE_LUA
    + """
local v = sget(KEYS[1])
if v == NONE then return {foreign, 'none'} end
if v then
  if ARGV[1] == 'id' then return {foreign, 'hit', v} end
  local e = sget(ARGV[2] .. v)
  if e and e ~= NONE then
    local ok, d = pcall(cjson.decode, e)
    if not ok or type(d) ~= 'table' then return {foreign, 'hit', e, v} end
    if d.key_type == ARGV[3] and d.key_value == ARGV[4] then return {foreign, 'hit', e, v} end
  end
  -- a pointer to a missing entry or to one whose key has changed: stale, never served
  redis.call('DEL', KEYS[1])
end
if ARGV[5] == '' then return {foreign, 'miss'} end
local held = sget(KEYS[2])
if held then
  if string.sub(held, 1, #ARGV[5] + 1) == ARGV[5] .. ':' then return {foreign, 'lease'} end
  return {foreign, 'wait'}
end
redis.call('SET', KEYS[2], ARGV[5] .. ':' .. now_us(), 'PX', ARGV[6])
return {foreign, 'lease'}
"""
)

# Cluster: id + marker could share {<id>}; the new and old pointers cannot (a second call each).
# KEYS: id key, pointer key, marker key. ARGV: id, json, version (decimal), ttl ms, marker ttl ms, pointer prefix.
_WRITE_LUA = (
    _STORE_LUA
    + """
local outcome = store(KEYS[1], KEYS[2], KEYS[3], ARGV[6], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], true)
return {foreign, outcome}
"""
)

# Cluster: as the write script, plus the lease (by-id lease shares {<id>}; by-key does not) and,
# for a not-found by key, the prefix's epoch key (a slot of its own: a second call there).
# KEYS: lease, target (id key for an entry or a negative-by-id; pointer key for a negative-by-key),
#       pointer key (entry only), marker key (of the loaded id, or of the id of a negative-by-id;
#       '' -> none), by-key negative epoch key (negative-by-key only; '' -> none).
# ARGV: token, json or NONE, id, version (decimal), ttl ms, negative ttl ms, marker ttl ms, pointer prefix.
# A fill is judged by time, not by the invalidation's version floor: it is rejected if an
# invalidation happened at or after its lease was taken (it may have read the data before the
# invalidation), and stored if its lease (so its read) began after the last invalidation. A
# not-found by key has no entry whose marker could say so (an invalidation of the entry that now
# has this key value names the entry, not the new key value): it is judged by the epoch, the
# time of the last invalidation of any entry under this prefix. A foreign or unreadable epoch is
# deleted and the fill dropped (a not-found is cheap to load again).
_FILL_LUA = (
    _STORE_LUA
    + """
local lease = sget(KEYS[1])
if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. ':' then return {foreign, 'lease-lost'} end
redis.call('DEL', KEYS[1])
local started = tonumber(string.sub(lease, #ARGV[1] + 2))
if KEYS[4] ~= '' then
  local inv = tonumber(hget(KEYS[4], 'inv_us'))
  if inv and (not started or inv >= started) then return {foreign, 'invalidated'} end
end
if KEYS[5] ~= '' then
  local readable = usable(KEYS[5], 'string')
  local raw = readable and redis.call('GET', KEYS[5])
  local epoch = raw and tonumber(raw)
  if not readable or (raw and not epoch) then
    redis.call('DEL', KEYS[5])
    return {foreign, 'invalidated'}
  end
  if epoch and (not started or epoch >= started) then return {foreign, 'invalidated'} end
end
if ARGV[2] == NONE then
  usable(KEYS[2], 'string')
  if redis.call('EXISTS', KEYS[2]) == 1 then return {foreign, 'exists'} end
  redis.call('SET', KEYS[2], NONE, 'PX', ARGV[6])
  return {foreign, 'stored'}
end
local outcome = store(KEYS[2], KEYS[3], KEYS[4], ARGV[8], ARGV[3], ARGV[2], ARGV[4], ARGV[5], ARGV[7], false)
return {foreign, outcome}
"""
)

# Cluster: id + marker share {<id>}; the pointer (found in the entry), the new key's pointer and
# the prefix's epoch key are further calls.
# KEYS: id key, marker key, by-key negative epoch key[, pointer key of the entry's new key].
# ARGV: id, committed version (decimal; '' = unknown), marker ttl ms, pointer prefix, epoch ttl ms.
# With a committed version the floor rises to it (for writes and fills). Without one, only
# write-throughs of the cached version or older are rejected (``inv_floor``: a write-through has
# no start time to compare), while fills are judged by ``inv_us`` against their lease, so a refill
# that starts after the invalidation is stored even when the entry did not change. The epoch
# (server time) rejects every not-found by key whose lease was taken before now: the entry may
# have moved to that key value. At the new key (if the caller names it) a cached not-found, or a
# pointer to this id, is dropped too.
_INVALIDATE_LUA = (
    _PRELUDE_LUA
    + """
local floor = vnorm(hget(KEYS[2], 'floor')) or '0'
local ifloor = vnorm(hget(KEYS[2], 'inv_floor')) or '0'
local committed = vnorm(ARGV[2])
local old = sget(KEYS[1])
local removed = 0
if old and old ~= NONE then
  local ok, d = pcall(cjson.decode, old)
  if ok and type(d) == 'table' then
    local v = json_version(old, d)
    if v and not committed and vgt(vinc(v), ifloor) then ifloor = vinc(v) end
    if type(d.key_type) == 'string' and type(d.key_value) == 'string' then
      local ptr = ARGV[4] .. d.key_type .. ':' .. d.key_value
      if sget(ptr) == ARGV[1] then removed = removed + redis.call('DEL', ptr) end
    end
  end
end
if KEYS[4] then
  local at = sget(KEYS[4])
  if at == NONE or at == ARGV[1] then removed = removed + redis.call('DEL', KEYS[4]) end
end
if committed and vgt(committed, floor) then floor = committed end
removed = removed + redis.call('DEL', KEYS[1])
local now = now_us()
redis.call('HSET', KEYS[2], 'floor', floor, 'inv_floor', ifloor, 'inv_us', now)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
usable(KEYS[3], 'string')
redis.call('SET', KEYS[3], now, 'PX', ARGV[5])
return {foreign, removed, floor}
"""
)

# KEYS: k1, k2, ... ARGV: the value seen at each. Deletes only those values, never a good one
# written since (nor a key of another type).
_DELETE_IF_LUA = """
local n = 0
for i, k in ipairs(KEYS) do
  if redis.call('TYPE', k).ok == 'string' and redis.call('GET', k) == ARGV[i] then n = n + redis.call('DEL', k) end
end
return n
"""

# KEYS: lease. ARGV: token. Gives back a lease only if it is still ours.
_RELEASE_LUA = """
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then return redis.call('DEL', KEYS[1]) end
return 0
"""

_READ = LuaScript(_READ_LUA)
_WRITE = LuaScript(_WRITE_LUA)
_FILL = LuaScript(_FILL_LUA)
_INVALIDATE = LuaScript(_INVALIDATE_LUA)
_DELETE_IF = LuaScript(_DELETE_IF_LUA)
_RELEASE = LuaScript(_RELEASE_LUA)


@dataclass(frozen=True)
class FillResult:
    """What :meth:`EntryCache.get_or_load` did: the entry (``None``: not found), whether the
    loader ran in this call, and the fill script's verdict (``stored``, ``stale``, ``invalidated``,
    ``lease-lost``, ``exists``; ``hit``/``none`` when served from the cache; ``uncached`` when the
    wait for another loader ran out)."""

    entry: Entry | None
    loaded: bool
    outcome: str


class EntryCache:
    """Look-aside cache of DICT entries; see the module docstring for the keys and guarantees.

    In short: reads never return a version older than one a write or invalidation has
    superseded, except within the limits below; ``write`` keeps the newest version (compared
    exactly, integers in [0, 2^63 - 1]); a fill (``get_or_load*``) is dropped when an invalidation
    happened while its loader ran (for a not-found by key: an invalidation of any entry); one
    loader runs per cold key. Every key has a TTL; a failover or an eviction loses cache data,
    never makes it older than the TTLs allow.

    Limits the application must know: ``invalidate`` without ``committed_version`` refuses only
    write-throughs of the version it found cached and older, so a late write-through of another
    version older than the one committed is stored and served for up to the entry TTL (5 min);
    pass the committed version. A not-found cached under a key value *before* an
    entry moved there is served until its negative TTL (15 s) unless the writer writes the entry
    through or passes ``new_key`` to ``invalidate``.
    """

    def __init__(
        self,
        client: SentinelClient,
        prefix: str = "",
        *,
        ttl_ms: int = DEFAULT_TTL_MS,
        negative_ttl_ms: int = 15_000,
        marker_ttl_ms: int | None = None,
        lease_ms: int = 5_000,
        poll_ms: int = 20,
    ) -> None:
        marker_ttl_ms = ttl_ms if marker_ttl_ms is None else marker_ttl_ms
        if not 0 < negative_ttl_ms <= MAX_NEGATIVE_TTL_MS:
            raise ValueError(f"negative_ttl_ms = {negative_ttl_ms}: must be in (0, {MAX_NEGATIVE_TTL_MS}]")
        if min(ttl_ms, marker_ttl_ms, lease_ms, poll_ms) <= 0:
            raise ValueError("ttl_ms, marker_ttl_ms, lease_ms and poll_ms must be positive")
        if marker_ttl_ms < ttl_ms:
            raise ValueError(f"marker_ttl_ms = {marker_ttl_ms}: the marker must outlive the entry (ttl_ms = {ttl_ms})")
        self.client = client
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self.negative_ttl_ms = negative_ttl_ms
        self.marker_ttl_ms = marker_ttl_ms
        self.lease_ms = lease_ms
        self.poll_ms = poll_ms
        # The epoch must outlive every lease taken before it was set (and it is set again by
        # every invalidation, so it lives as long as invalidations keep coming).
        self._epoch_ttl_ms = max(marker_ttl_ms, lease_ms)

    # --- key names ----------------------------------------------------------------------------
    # Every key builder refuses what would make two ids share a key, with a ValueError naming
    # the argument, before anything is sent: text that is not UTF-8 (a lone surrogate would
    # reach Redis as '?') and a key type other than the five DICT types (with a ':' in it,
    # ('EMAIL:a', 'b') and ('EMAIL', 'a:b') would be one pointer).
    def id_key(self, entry_id: str) -> str:
        return f"{self.prefix}{ID_KEY}{encodable('entry id', entry_id)}"

    def pointer_key(self, key_type: str, key_value: str) -> str:
        return f"{self.prefix}{POINTER_KEY}{_key_type(key_type)}:{encodable('key value', key_value)}"

    def marker_key(self, entry_id: str) -> str:
        return f"{self.prefix}{MARKER_KEY}{encodable('entry id', entry_id)}"

    def negative_epoch_key(self) -> str:
        return f"{self.prefix}{NEGATIVE_EPOCH_KEY}"

    # --- reads --------------------------------------------------------------------------------
    def get_by_id(self, entry_id: str) -> Entry | None:
        """The cached entry, or ``None`` on a miss or a cached not-found (one round trip)."""
        return self._lookup_once("id", entry_id, "", "")[1]

    def get_by_key(self, key_type: str, key_value: str) -> Entry | None:
        """The cached entry for a DICT key, pointer followed server-side (one round trip)."""
        return self._lookup_once("key", "", key_type, key_value)[1]

    def get_or_load(self, entry_id: str, loader: Callable[[str], Entry | None]) -> FillResult:
        """Read by id; on a miss run ``loader(entry_id)`` under a lease and cache what it returns
        (``None`` is cached as not-found for ``negative_ttl_ms``)."""
        return self._get_or_load("id", entry_id, "", "", lambda: loader(entry_id))

    def get_or_load_by_key(
        self, key_type: str, key_value: str, loader: Callable[[str, str], Entry | None]
    ) -> FillResult:
        """Read by DICT key; on a miss run ``loader(key_type, key_value)`` under a lease on the key
        and cache what it returns. A not-found is cached only if no invalidation (of any entry
        under this prefix) happened after the lease was taken: the entry that now owns this key
        value may be the one just invalidated (outcome ``invalidated``, nothing cached)."""
        return self._get_or_load("key", "", key_type, key_value, lambda: loader(key_type, key_value))

    # --- writes -------------------------------------------------------------------------------
    def write(self, entry: Entry) -> str:
        """Write-through after the source of truth committed ``entry``: ``stored``, or ``stale``
        when a newer version is cached or an invalidation superseded this one (one round trip).

        ``entry.version`` must be an integer in [0, 2^63 - 1] (compared exactly, so nanosecond
        timestamps work); anything else is a ``ValueError`` naming it, and nothing is sent."""
        keys = [self.id_key(entry.id), self.pointer_key(entry.key_type, entry.key_value), self.marker_key(entry.id)]
        version = version_text("entry version", entry.version)
        args = [entry.id, entry.to_json(), version, self.ttl_ms, self.marker_ttl_ms, self.prefix + POINTER_KEY]
        (outcome,) = self._run(_WRITE, keys, args)
        return _text(outcome)

    def invalidate(
        self, entry_id: str, committed_version: int | None = None, *, new_key: tuple[str, str] | None = None
    ) -> int:
        """Drop the entry and its pointer atomically and leave a marker so that nothing older can
        be stored again: no fill whose lease was taken before now (by id, and any not-found by
        key: the entry may have moved to that key value), and no write-through of the cached
        version or older (or, if the caller knows the version it just committed, of anything
        below ``committed_version``, an integer in [0, 2^63 - 1]). A fill that starts after the
        invalidation is stored. Returns the number of keys removed (one round trip).

        Pass ``committed_version`` whenever it is known: without it, an invalidation of an entry
        that is not cached (expired, evicted, never read) knows no version to refuse, and a late
        write-through of an older version is stored and served for up to the entry TTL (5 min).

        ``new_key``: the (key_type, key_value) the entry has *now*, when the writer changed it. A
        not-found cached under it before the change (the key did not exist yet) is dropped too;
        without it, that not-found is served until its negative TTL (15 s) runs out. (A
        ``write`` of the new entry replaces it in any case.)"""
        keys = [self.id_key(entry_id), self.marker_key(entry_id), self.negative_epoch_key()]
        if new_key is not None:
            keys.append(self.pointer_key(*new_key))
        committed = "" if committed_version is None else version_text("committed_version", committed_version)
        args = [entry_id, committed, self.marker_ttl_ms, self.prefix + POINTER_KEY, self._epoch_ttl_ms]
        removed, _floor = self._run(_INVALIDATE, keys, args)
        return int(removed)

    # --- internals ----------------------------------------------------------------------------
    def _run(self, script: LuaScript, keys: list[Any], args: list[Any]) -> list[Any]:
        """One script call (replies undecoded: a foreign value need not be UTF-8); logs the keys
        of a foreign type the script deleted and returns the rest of the reply."""
        reply: list[Any] = self.client.run(lambda r: script(r, keys, args), idempotent=True)
        foreign = reply[0]
        for key, kind in zip(foreign[::2], foreign[1::2], strict=True):
            _log_corrupt(_text(key), f"a Redis {_text(kind)}, not this cache's type")
        return reply[1:]

    def _lookup_keys(self, mode: str, entry_id: str, key_type: str, key_value: str) -> tuple[str, str]:
        if mode == "id":
            return self.id_key(entry_id), f"{self.prefix}{LEASE_ID_KEY}{entry_id}"  # id_key validated it
        return self.pointer_key(key_type, key_value), f"{self.prefix}{LEASE_KEY_KEY}{key_type}:{key_value}"

    def _lookup_once(
        self, mode: str, entry_id: str, key_type: str, key_value: str, token: str = ""
    ) -> tuple[str, Entry | None]:
        """One READ call: (``hit``|``none``|``miss``|``lease``|``wait``, entry). A corrupt hit is
        deleted and reported as ``corrupt``."""
        keys = list(self._lookup_keys(mode, entry_id, key_type, key_value))
        args = [mode, self.prefix + ID_KEY, key_type, key_value, token, self.lease_ms]
        reply = self._run(_READ, keys, args)
        status = _text(reply[0])
        if status != "hit":
            return status, None
        raw: bytes = reply[1]
        try:
            entry = Entry.from_json(raw.decode())  # UnicodeDecodeError is a ValueError
            if mode == "id" and entry.id != entry_id:
                raise ValueError(f"holds entry {entry.id!r}")
        except ValueError as exc:
            if mode == "id":
                where = self.id_key(entry_id)
                targets, seen = [self.id_key(entry_id)], [raw]
            else:
                target_id: bytes = reply[2]
                where = f"{self.pointer_key(key_type, key_value)} -> {_text(target_id)}"
                # The entry and the pointer to it, each only if it still holds what was read.
                targets = [(self.prefix + ID_KEY).encode() + target_id, self.pointer_key(key_type, key_value)]
                seen = [raw, target_id]
            _log_corrupt(where, str(exc)[:120])
            self.client.run(lambda r: _DELETE_IF(r, targets, seen), idempotent=True)
            return "corrupt", None
        return "hit", entry

    def _get_or_load(
        self, mode: str, entry_id: str, key_type: str, key_value: str, load: Callable[[], Entry | None]
    ) -> FillResult:
        self._lookup_keys(mode, entry_id, key_type, key_value)  # refuses bad ids before the loader runs
        token = secrets.token_hex(8)
        deadline = time.monotonic() + self.lease_ms / 1000
        while True:
            status, entry = self._lookup_once(mode, entry_id, key_type, key_value, token)
            if status in ("hit", "none"):
                return FillResult(entry, False, status)
            if status == "lease":
                return FillResult(*self._load_and_fill(mode, entry_id, key_type, key_value, token, load))
            # "wait": another process is loading (or "corrupt": a value was just dropped): poll
            # briefly, then fail open to the loader without caching.
            if time.monotonic() >= deadline:
                return FillResult(load(), True, "uncached")
            if status == "wait":
                time.sleep(self.poll_ms / 1000)

    def _load_and_fill(
        self, mode: str, entry_id: str, key_type: str, key_value: str, token: str, load: Callable[[], Entry | None]
    ) -> tuple[Entry | None, bool, str]:
        lookup, lease = self._lookup_keys(mode, entry_id, key_type, key_value)
        try:
            entry = load()
            if entry is None:
                # A not-found by id is judged by the id's marker, one by key by the prefix's epoch.
                marker = self.marker_key(entry_id) if mode == "id" else ""
                epoch = self.negative_epoch_key() if mode == "key" else ""
                keys = [lease, lookup, "", marker, epoch]
                args = [token, NONE, "", "0", self.ttl_ms, self.negative_ttl_ms, self.marker_ttl_ms, ""]
            else:  # what the loader returned is checked as a write would check it
                keys = [lease, self.id_key(entry.id), self.pointer_key(entry.key_type, entry.key_value)]
                keys += [self.marker_key(entry.id), ""]
                version = version_text("entry version", entry.version)
                args = [token, entry.to_json(), entry.id, version, self.ttl_ms, self.negative_ttl_ms]
                args += [self.marker_ttl_ms, self.prefix + POINTER_KEY]
        except BaseException:
            # Give the lease back so the waiters do not sit out lease_ms behind a failed load.
            self.client.run(lambda r: _RELEASE(r, [lease], [token]), idempotent=True)
            raise
        (outcome,) = self._run(_FILL, keys, args)
        return entry, True, _text(outcome)


def _key_type(key_type: str) -> str:
    if key_type not in KEY_TYPES:
        raise ValueError(f"key type {key_type!r}: one of {', '.join(KEY_TYPES)}")
    return key_type


def _text(value: bytes | str) -> str:
    """A reply element as text, for statuses and log lines (a foreign key need not be UTF-8)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def sample_entry(entry_id: str, version: int = 1, key_value: str | None = None, key_type: str = "EMAIL") -> Entry:
    """A realistic entry for checks and tests."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return Entry(
        id=entry_id,
        key_type=key_type,
        key_value=key_value if key_value is not None else f"maria.{entry_id[:8]}@example.com.br",
        account=Account(ispb="60701190", branch="0001", number=f"{version:08d}-7", type="CACC"),
        owner=Owner(name="Maria da Silva", tax_id="12345678909"),
        version=version,
        created_at="2024-05-01T12:00:00Z",
        updated_at=stamp,
    )
