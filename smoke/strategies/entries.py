"""Entry cache (seed TSP-003 §3.1): DICT entries by id and by (key_type, key_value), fixed.

The seed stores the full JSON twice (``dict:entry:id:<id>`` and ``dict:entry:key:<type>:<value>``),
writes them with two independent ``SETEX`` and invalidates with a ``DEL`` of a key pair the caller
must know. The notes (cache-strategies.md §8) list what that costs: a stale refill after an
invalidation, reordered write-throughs leaving an older version, an old secondary key left behind
when ``key_value`` changes, and a stampede of loaders on a cold key. This module keeps the seed's
key names and the 5 min TTL as the contract and fixes the mechanics.

Data shape (changed from the seed, all keys under ``prefix``). On the **cache tier**:

* ``dict:entry:id:<id>`` — the entry (the only copy), ``PX ttl_ms`` (5 min), in **layout E1**
  (**changed**, issue 18: it was the entry's JSON document, ~365 B; now ~190 B, and an entry
  with its pointer takes about half the seed layout's memory, docs/performance.md):
  ``E1:<version>:<key_type>:<n>:<key_value>`` then a JSON array of the other fields by position,
  ``[id, ispb, branch, number, account type, owner name, tax id, created_at, updated_at]`` and
  the owner type last only when it is not ``NATURAL_PERSON`` (UTF-8, not ``\\u`` escapes).
  ``n`` is the key value's length in bytes; a timestamp of the usual shape
  (``2025-05-21T07:38:09.092Z``, a year from 1000) is the JSON integer of its digits
  (``20250521073809092``, above 2^53: a reader in another language must parse it as a 64-bit
  integer, not a double, or the milliseconds round), any other text stays a string. The head carries what the scripts
  need — the version, compared exactly as decimal text, and the key the pointer is checked
  against and dropped by — read with one ``string.match``, without decoding the rest.
  :meth:`Entry.to_value` writes it, :meth:`Entry.from_value` reads it; the DICT document
  (:meth:`Entry.to_json`) is what the seed cached. A value without the ``E1:`` tag (the
  previous layout's JSON, a foreign writer's) is never served: a read treats it as a corrupt
  value (a miss, deleted, logged once), so a rollout costs one reload per cached entry; a store
  or an invalidation still reads the previous layout's version and key (a rollout keeps the
  version order and drops the old pointer). A future layout takes another tag.
* ``dict:entry:key:<key_type>:<key_value>`` — a **pointer**: just the entry id, same TTL. A Lua
  script follows it server-side, so a read by key is still one round trip, and an entry is
  stored once (a pointer is ~100 B instead of a second full copy).
* ``__dict_none__`` in either key — a **negative** entry (not found), ``PX negative_ttl_ms``
  (≤ 30 s, RFC 2308-style bounded negative caching).
* ``__dict_inv__:<seq>:<floor>:<write floor>`` at an id key — an invalidation **tombstone**,
  ``PX tombstone_ms`` (``max(3 * reservation_ms, lease_ms)``, 6 s by default): what
  ``invalidate`` leaves in place of the entry. Never served (a read treats it as a miss and takes
  the lease as for one); it refuses a store whose first step came before the invalidation (next
  sections).
* ``dict:entry:lease:id:<id>`` / ``dict:entry:lease:key:<type>:<value>`` — a fill **lease**
  (``SET NX PX lease_ms``, value ``<token>:<server time µs>``, the time for operators only): one
  loader per cold key; the others poll briefly and read what it stored (Facebook's memcache
  leases).

On the **markers' tier** (the state tier, ``noeviction``; ``markers=None``: the cache tier's
instance itself), under :data:`MARKER_PREFIX` ``dict:entry-ver:``, a prefix the cache tier's ACL
does not grant (components/acl.py), so a marker cannot land on the evicting cache by mistake:

* ``dict:entry-ver:marker:<id>`` — the entry's **version marker**, a hash ``{floor, inv_floor,
  inv_seq}``, ``PX marker_ttl_ms`` (default and minimum ``ttl_ms + reservation_ms``, refreshed by
  every reservation, invalidation and fill check that finds it, so it outlives every entry stored
  under it): ``floor`` is the lowest version a write or fill may still store (a write of v
  raises it to v, a fill of v an existing marker's, an invalidation with ``committed_version`` to
  that version); ``inv_floor`` the lowest version a *write-through* may store after an
  invalidation without a committed version (the highest version the marker or the cached copy
  knew + 1: a write-through has no start to judge it by); ``inv_seq`` the value of the prefix's
  epoch (below) at the entry's last invalidation, against which a *fill* is judged.
* ``dict:entry-ver:epoch:negative-by-key`` — the prefix's **epoch**, a counter: every
  ``invalidate`` of any entry under the prefix adds one (and sets the entry's ``inv_seq`` to the
  new value). ``PX max(marker_ttl_ms, lease_ms)``, refreshed with every marker, so it outlives
  them all. A missing epoch (expired after 5 min without an invalidation, or lost in a
  state-tier failover) restarts at the state tier's time in µs, above every value it counted up
  to before, and a fill that finds the epoch below what it observed is dropped. No two clocks
  are compared: sequence numbers on one tier, versions, and the client's own monotonic clock for
  the reservation window.

The protocol (each step one Lua script, atomic on its tier; *S* the state tier, *C* the cache):

* ``write(entry)``: **S reserve** — ``stale`` if the version is below ``floor`` (or below
  ``inv_floor``), else ``floor`` := version. **C store** — unless the cached copy is newer or the
  id holds a tombstone whose write floor is above the version (``stale``), the entry and its
  pointer are stored (and an old pointer of the entry dropped). Step C is skipped (``expired``,
  nothing cached: a later read loads fresh) when more than ``reservation_ms`` (2 s) passed on the
  client's monotonic clock between S's reply and sending C (checked again before a retry), so a
  writer paused between the steps cannot store an old version after a newer one expired.
* ``invalidate(id, committed_version)``: **S** — ``floor`` := max(floor, committed); without a
  committed version ``inv_floor`` := floor + 1; epoch += 1 and ``inv_seq`` := epoch. **C** — the
  entry (or a not-found) is replaced by a tombstone carrying S's ``inv_seq``, floor and write
  floor (maxima with a tombstone already there), its pointer (and the one at ``new_key``, if
  named and holding a not-found or this id) dropped. Without a committed version, when the cached
  copy was newer than anything the marker knew (a fill creates no marker), the tombstone's write
  floor covers it and a third step on S raises ``inv_floor`` to it.
* a fill (``get_or_load*``, cold): **C read** takes the lease; **S observe** reads the epoch
  *before* the loader runs; the loader; **S check** — ``invalidated`` if an invalidation came
  after the observation (a not-found by key: the epoch moved, since it names no entry; otherwise
  the loaded entry's ``inv_seq`` is above the observed epoch), ``stale`` if the version is below
  ``floor``; else an existing marker's floor rises to the version. **C store** — only while the
  lease is ours (``lease-lost``), never over a tombstone with a ``seq`` above the observation
  (``invalidated``) or a floor above the version, nor over a newer cached copy (``stale``); a
  not-found never replaces an existing value (``exists``). The same window as a write applies
  between S check and C store (``expired``). A fill that is not stored gives its lease back.

Why that is safe with every interleaving: S steps of two operations on one entry are ordered
by the state tier, and every decision (is this version new enough, did an invalidation come
after this load began) is taken there, on keys that are never evicted. What remains is the
order of the C steps: a step C whose S step came *before* another operation's S step can reach
the cache *after* that operation's C step. Each such case is caught on the cache tier by what the
later operation left there: a newer copy (versions), or a tombstone (an invalidation). A
tombstone lives ``tombstone_ms`` ≥ the reservation window, and every step C that stores is sent
within the window after its step S, so a tombstone outlives every store it must refuse. (An
invalidation's step C is never skipped: late, it only deletes; its tombstone merges by maxima.)

**Residual** (what the cache tier's eviction can still do, stated with its bound): the catch
above fails only if the key that must catch it — the newer copy a write or fill stored, or the
tombstone an invalidation set — is evicted by LRU from the cache tier within the window between
the late operation's step S and its step C (at most ``reservation_ms``, 2 s; in practice the
sub-millisecond gap between two calls). A just-written key carries the newest LRU clock of the
tier, so sampled LRU picks it only when nearly everything else is as fresh (the cache turning
over its whole memory every couple of seconds). Then the late, older version (a write-through,
or a fill that loaded before an invalidation) is stored and served for up to the entry TTL, as
any stale copy the cache tier kept. Before this split the gap was unbounded and likely: the
marker itself lived on the cache tier, reads refreshed the entry's LRU clock and never the
marker's, so LRU evicted markers first, and then a late v4 after ``invalidate(committed_version
=6)``, a late v3 after v5 (entry and marker both gone) and a fill whose lease began before an
invalidation were all stored (measured; now refused, tests/test_entries.py). A write delayed by
more than the marker TTL (5 min + 2 s) is not refused either (the marker has expired): as before.

State-tier memory: one marker (~210 B with its keyspace and expiry entries, measured on
Valkey 8.0.1: 100 000 markers took 21 MB; ``MEMORY USAGE`` 160 B) per entry written through or invalidated within the
marker TTL, plus one epoch per prefix. Fills create no marker (they raise the floor of one that
exists), so the state tier's share grows with the write rate, not with the cache's working set:
1 000 distinct writes a second keep ~300 000 markers (~64 MB). A full state tier refuses a
reservation or an invalidation with OOM before the script writes anything (its first write is
the ``denyoom`` one): :class:`~smoke.strategies.tiers.StateTierFull`, nothing written, map it to
a retryable error; a reservation whose floor is already there still answers. Reads (hit, miss,
negative) never touch the state tier; a cold fill that cannot ask it (full or down) returns the
loaded entry ``uncached``.

What a fill is judged by, and a not-found by key. A fill of an entry (by id or by key) and a
not-found by id are judged by the entry's marker (``inv_seq`` against the observed epoch,
``floor`` against the version). A **not-found by key** names no entry: the entry that owns that
key value now may be one that just moved there, and its writer calls ``invalidate(<id>,
committed_version=…)`` without knowing (or saying) the new key value. So a not-found by key is
stored only if the epoch did not move while it loaded: otherwise it is dropped (outcome
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
later write-throughs only of the highest version its marker (written through or filled within
the marker TTL) or the cached copy knew, and older. A late write-through of a version older
than the one just committed but newer than those (delayed, or retried) is then stored and served
for up to the entry TTL (5 min). Writers that know the version they committed should pass it.

Versions: an entry's version (and ``committed_version``) is an integer in [0, 2^63 - 1] (a
database BIGINT; nanosecond commit timestamps, ~1.7e18, fit until 2262) and is compared
exactly: the scripts compare decimal strings (:data:`smoke.strategies.lua.VERSIONS_LUA`), since
Lua numbers are doubles (2^53 + 1 and 2^53 are one number there, and so are nanosecond
timestamps 256 apart). The version of a cached copy is read from the head of its value (layout
E1), as text. Anything else (a bool, a float, a string, a negative number, 2^63) is a
``ValueError`` naming it, raised before anything is sent, also for an entry a loader returned.

Ids and keys: entry ids and key values must be UTF-8 text and key types one of the five DICT
types; anything else is a ``ValueError`` naming the argument, raised before anything is sent.
(redis-py used to send a lone surrogate as ``?``, so ``e-\\udc80`` read the entry of ``e-?``;
and a type with a ``:`` would share the pointer of another (type, value) pair.)

**Two tiers** (:mod:`smoke.strategies.tiers`). Entries, pointers, negative entries, tombstones
and leases live on the cache tier (``allkeys-lru``): an entry is a copy of the database row, and
an evicted one costs a reload. Version markers and the epoch are decisions ("v5 was written, v3
must not be stored", "this entry was invalidated after that load began"): they live on the state
tier (``noeviction``, AOF), passed as ``markers``, and cannot vanish while the entry they guard
is served (a marker outlives every entry stored under it and is never evicted). What is left of
the cache tier's eviction is the residual above.

Confirmation (issue 16 item 5): ``write`` and ``invalidate`` confirm each of their steps on its
tier by the rule of :mod:`smoke.strategies.replication` (``INFO replication``, the script and
``WAIT`` pipelined on one connection) and say so in their result (:class:`WriteResult`,
:class:`InvalidationResult`); see ``invalidate`` for what a confirmed invalidation promises.

Round trips (measured by the checks, one ``EVALSHA`` each, pipelined with its ``WAIT`` for a write
or an invalidation): ``get_by_id``/``get_by_key`` 1 on
the cache tier (hit, miss or negative; unchanged; ``get_by_id`` sends a plain ``GET``, and only a
key of a foreign type there costs the read script's call to delete it); ``write`` 2 (was 1: S reserve, C store);
``invalidate`` 2 (was 1: S, C; 3 without a committed version when the cached copy was newer than
its marker knew); ``get_or_load`` 1 on a hit and 4 on a cold key (was 2: C read + lease, S
observe, then the loader, then S check, C store), +1 (the lease given back) when S check refuses
the fill or the window ran out (a refusal by C store deletes the lease in the same call), while
a concurrent reader polls with 1 round trip every ``poll_ms`` until the fill lands. A corrupt
value costs 1 more to delete it (by key: the entry and its pointer in one call). The first call
of each script per process and per failover costs 2 more (``NOSCRIPT``, ``SCRIPT LOAD``), since
the script cache is not replicated.

Re-running after a lost reply: every script runs with ``idempotent=True``. The reservation,
the fill check, the inv_floor raise, the cache stores (full-value ``SET`` guarded by versions and
tombstones), the tombstone (maxima) and the lease (a lease already held with our own token
counts as ours) are idempotent. Two are not, and re-running them is still safe: the invalidation's
state step moves the epoch once more (one more fill in flight is dropped, nothing older is
stored), and a fill's store that ran but whose reply was lost answers ``lease-lost`` on the retry
(it deleted its lease) while the entry is stored.

Foreign values: every script, on both tiers, checks each key's ``TYPE`` before it reads or
writes it; a key of another type (a hash at an id key, a list at a pointer, a string at a marker)
is deleted, logged once and treated as absent, within the same atomic call, so WRONGTYPE never
escapes and never aborts a script half-way through its writes; an epoch that is not a counter
is deleted too (the fill in flight is dropped: it cannot be judged). Replies are read undecoded
(:mod:`smoke.strategies.lua`), so a value that is not UTF-8 is a corrupt value like any other: a
miss, deleted, logged.

Redis Cluster: the cache scripts touch the id key, its lease (which could share a hash tag
``{<id>}``) *and* a pointer key that cannot share it (a lookup by key does not know the id). On a
cluster a read by key becomes two round trips (pointer, then entry) and a store two slots (entry,
then pointer(s) in a second call), reopening a small window in which a pointer may lag its
entry; the read path already treats a pointer whose entry does not match as stale. On the state
tier the marker and the epoch are two slots: the epoch step would be a call of its own.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import repeat
from typing import Any

import redis

from smoke.strategies.client import SentinelClient, encodable
from smoke.strategies.corruption import CorruptionLog
from smoke.strategies.lua import VERSIONS_LUA, WRONG_TYPE, LuaScript, get_string, version_text
from smoke.strategies.replication import WAIT_TIMEOUT_MS, Acknowledgement, Confirmation
from smoke.strategies.tiers import refused_when_full

log = logging.getLogger(__name__)

# Every cache-tier key of this strategy starts with KEY_PREFIX, every markers'-tier key with
# MARKER_PREFIX (components/acl.py grants the application user each one on its own tier only:
# the cache tier's ``dict:entry:*`` does not match ``dict:entry-ver:``).
KEY_PREFIX = "dict:entry:"
ID_KEY = "dict:entry:id:"
POINTER_KEY = "dict:entry:key:"
LEASE_ID_KEY = "dict:entry:lease:id:"
LEASE_KEY_KEY = "dict:entry:lease:key:"
MARKER_PREFIX = "dict:entry-ver:"
MARKER_KEY = "dict:entry-ver:marker:"
# One per prefix: the invalidation counter a fill is judged by (see the module docstring).
NEGATIVE_EPOCH_KEY = "dict:entry-ver:epoch:negative-by-key"
NONE = "__dict_none__"
TOMBSTONE = "__dict_inv__:"
# The tag an entry value of layout E1 starts with (module docstring, *Data shape*); a value without
# it (a seed-era JSON document, a foreign writer's) is never served.
VALUE_TAG = "E1:"
_VALUE_TAG_BYTES = VALUE_TAG.encode()
_NONE_BYTES, _TOMBSTONE_BYTES = NONE.encode(), TOMBSTONE.encode()
DEFAULT_OWNER_TYPE = "NATURAL_PERSON"

DEFAULT_TTL_MS = 300_000
MAX_NEGATIVE_TTL_MS = 30_000
# Longest gap between a step on the markers' tier and the cache-tier store that follows it.
DEFAULT_RESERVATION_MS = 2_000
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
    type: str = DEFAULT_OWNER_TYPE


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
        """The entry as the DICT document (the seed's cached value, which the benchmark's seed
        layout stores); the cache stores :meth:`to_value`."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    def to_value(self) -> str:
        """The entry as the cache stores it at its id key: layout ``E1`` (module docstring, *Data
        shape*). ``ValueError`` for a version outside [0, 2^63 - 1], before anything is sent."""
        version = version_text("entry version", self.version)
        a, o = self.account, self.owner
        fields: list[str | int] = [self.id, a.ispb, a.branch, a.number, a.type, o.name, o.tax_id]
        fields += [_pack_stamp(self.created_at), _pack_stamp(self.updated_at)]
        if o.type != DEFAULT_OWNER_TYPE:
            fields.append(o.type)
        tail = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        if not tail.isascii():
            try:
                tail.encode()
            except UnicodeEncodeError:  # a lone surrogate in a name: escaped, as JSON allows
                tail = json.dumps(fields, separators=(",", ":"))
        size = len(self.key_value.encode())  # the key value is sent strictly (encodable) anyway
        return f"{VALUE_TAG}{version}:{self.key_type}:{size}:{self.key_value}{tail}"

    @classmethod
    def from_value(cls, raw: bytes, entry_id: str) -> Entry:
        """The entry a cached value ``raw`` (layout ``E1``) at the id key of ``entry_id`` holds;
        ``ValueError`` saying why for anything else: another layout (a seed-era JSON document),
        garbage, text that is not UTF-8, another entry's value, a field of the wrong type."""
        if not raw.startswith(_VALUE_TAG_BYTES):
            raise ValueError(f"not an entry value of layout {VALUE_TAG[:-1]}: {raw[:24]!r}")
        try:
            _, version, key_type, size, rest = raw.split(b":", 4)
            if not (version.isdigit() and size.isdigit()):
                raise ValueError("the version and the key value's length must be decimal digits")
            n = int(size)
            if n > len(rest):
                raise ValueError(f"key value of {n} bytes in {len(rest)}")
            fields = json.loads(rest[n:].decode())  # UTF-8, strictly (a UnicodeDecodeError is a ValueError)
            if type(fields) is not list or not 9 <= len(fields) <= 10:
                raise ValueError("the fields are not a list of 9 or 10")
            kind, key_value = key_type.decode(), rest[:n].decode()
            created_at, updated_at = _unpack_stamp(fields[7]), _unpack_stamp(fields[8])
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError included
            raise ValueError(f"malformed entry value: {exc}") from None
        if not all(map(isinstance, fields[:7] + fields[9:], repeat(str))):
            raise ValueError("a text field is not a string")
        if fields[0] != entry_id:
            raise ValueError(f"holds entry {fields[0]!r}")
        if kind not in KEY_TYPES:
            raise ValueError(f"key_type {kind!r}")
        number = int(version)
        version_text("version", number)  # at most 2^63 - 1, ValueError otherwise
        id_, ispb, branch, account_number, account_type, name, tax_id, _, _, *owner_type = fields
        account = Account(ispb, branch, account_number, account_type)
        owner = Owner(name, tax_id, *owner_type)
        return cls(id_, kind, key_value, account, owner, number, created_at, updated_at)


# Layout E1 stores a timestamp of the usual shape (``2025-05-21T07:38:09.092Z``, milliseconds
# optional, a year from 1000) as the JSON integer of its digits (``20250521073809092``): 9 bytes
# less, and unambiguous, since any other text stays a JSON string.
_STAMP = re.compile(r"([1-9][0-9]{3})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{3}))?Z")


def _pack_stamp(text: str) -> str | int:
    match = _STAMP.fullmatch(text)
    return int("".join(part for part in match.groups() if part)) if match else text


def _unpack_stamp(value: object) -> str:
    if type(value) is str:
        return value
    d = str(value) if type(value) is int and value > 0 else ""
    if len(d) == 17:
        return f"{d[:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:14]}.{d[14:]}Z"
    if len(d) == 14:
        return f"{d[:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:14]}Z"
    raise ValueError(f"timestamp {value!r}")


# The prelude of every script, on both tiers. A key of another type than this module writes (a
# foreign writer, a seed-era shape) is deleted before the script reads or writes it, and reported
# back in the reply's first element ({key, type, ...}) for the caller to log: GET or HGET on it
# would abort the script with WRONGTYPE, and a Lua script is not rolled back, so an abort after
# the first write would leave a partial write behind. With every key checked before use, nothing
# in these scripts can raise, and each runs all or nothing.
_PRELUDE_LUA = (
    VERSIONS_LUA
    + """
local NONE = '__dict_none__'
local TOMB = '__dict_inv__:'
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
-- A counter (the by-key negative epoch): its canonical decimal value, or nil when absent. One
-- that is not a decimal integer is deleted and reported as foreign (it cannot be judged).
local function counter(k)
  local raw = sget(k)
  if not raw then return nil end
  if string.match(raw, '^%d+$') then return vnorm(raw) end
  redis.call('DEL', k)
  foreign[#foreign + 1] = k
  foreign[#foreign + 1] = 'string (not a counter)'
  return nil
end
-- An invalidation tombstone at an id key: seq, floor, write floor (canonical), or nil.
local function tomb(v)
  if type(v) ~= 'string' or string.sub(v, 1, #TOMB) ~= TOMB then return nil end
  local s, f, w = string.match(v, '^__dict_inv__:(%d+):(%d+):(%d+)$')
  if not s then return '0', '0', '0' end  -- a damaged tombstone still hides the entry: a miss
  return vnorm(s), vnorm(f), vnorm(w)
end
-- What a cached entry value says of itself: version (canonical), key type, key value; nil for a
-- value that is not an entry. Layout E1 (module docstring, "Data shape") carries them in its head,
-- read without decoding the rest. A value of the previous layout (the JSON document, "version"
-- last: still found in a cache during a rollout) is read the old way, so a store still refuses
-- to go below its version and drops its pointer; it is never served (the client deletes it).
local function entry_head(v)
  local ver, kt, n, at = string.match(v, '^E1:(%d+):(%u+):(%d+):()')
  if ver then
    n = tonumber(n)
    if at + n - 1 > #v then return nil end
    return vnorm(ver), kt, string.sub(v, at, at + n - 1)
  end
  if string.sub(v, 1, 1) ~= '{' then return nil end
  local ok, d = pcall(cjson.decode, v)
  if not ok or type(d) ~= 'table' then return nil end
  local kt, kv = d.key_type, d.key_value
  if type(kt) ~= 'string' or type(kv) ~= 'string' then kt, kv = nil, nil end
  return json_version(v, d), kt, kv
end
"""
)

# --- state tier (the version markers and the epoch: never evicted) -------------------------------

# Step 1 of a write. KEYS: marker, epoch. ARGV: version (decimal), marker ttl ms, epoch ttl ms.
# 'stale' if the version is below the floor (or, a write-through, below inv_floor); else the floor
# rises to it. Idempotent (a max). The HSET comes first so that a full state tier refuses the
# whole call with OOM; a retry whose floor is already there only refreshes the TTLs.
_RESERVE_LUA = (
    _PRELUDE_LUA
    + """
local version = vnorm(ARGV[1])
if not version then return {foreign, 'stale'} end
local floor = vnorm(hget(KEYS[1], 'floor'))
local least = floor or '0'
local ifloor = vnorm(hget(KEYS[1], 'inv_floor'))
if ifloor and vgt(ifloor, least) then least = ifloor end
if vgt(least, version) then return {foreign, 'stale'} end
if not floor or vgt(version, floor) then redis.call('HSET', KEYS[1], 'floor', version) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if usable(KEYS[2], 'string') then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return {foreign, 'ok'}
"""
)

# Before a fill's loader runs. KEYS: epoch. Reply: {foreign, epoch} ('0' when absent; '' when a
# foreign value was there and was deleted: the fill in flight cannot be judged). Read-only
# (but for deleting a foreign value), so it answers on a full state tier too.
_OBSERVE_LUA = (
    _PRELUDE_LUA
    + """
local before = #foreign
local e = counter(KEYS[1])
if #foreign > before then return {foreign, ''} end
return {foreign, e or '0'}
"""
)

# Step 1 of a fill, after the loader. KEYS: marker of the loaded id ('' for a not-found by key),
# epoch. ARGV: epoch observed before the load, version ('' for a not-found), marker ttl ms, epoch
# ttl ms, 'key' for a not-found by key.
# 'invalidated' if an invalidation happened after the observation (a not-found by key: of any
# entry under the prefix, the epoch moved; otherwise: of this entry, its inv_seq is above the
# observed epoch), 'stale' if the version is below the floor, else 'ok' and an existing marker's
# floor rises to the version (a fill creates no marker: see "State-tier memory"). Idempotent.
# Every marker's inv_seq is at most the epoch (an invalidation sets both to one value); an epoch
# below a marker's inv_seq was lost or replaced: it is lifted back and this fill dropped, so one
# lost epoch cannot block fills for good.
_FILL_CHECK_LUA = (
    _PRELUDE_LUA
    + """
local observed = ARGV[1]
local cur = counter(KEYS[2]) or '0'
-- An epoch below what this fill observed has expired or was lost (a failover): invalidations
-- since then may have restarted it lower, so nothing can be judged: drop the fill.
if vgt(observed, cur) then return {foreign, 'invalidated'} end
if ARGV[5] == 'key' then
  if cur ~= observed then return {foreign, 'invalidated'} end
  return {foreign, 'ok'}
end
local seq = vnorm(hget(KEYS[1], 'inv_seq'))
if seq and vgt(seq, cur) then
  redis.call('SET', KEYS[2], seq, 'PX', ARGV[4])
  return {foreign, 'invalidated'}
end
if seq and vgt(seq, observed) then return {foreign, 'invalidated'} end
if ARGV[2] == '' then return {foreign, 'ok'} end
local version = vnorm(ARGV[2])
if not version then return {foreign, 'stale'} end
local floor = vnorm(hget(KEYS[1], 'floor'))
if floor and vgt(floor, version) then return {foreign, 'stale'} end
if redis.call('EXISTS', KEYS[1]) == 1 then
  if floor ~= version then redis.call('HSET', KEYS[1], 'floor', version) end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
end
return {foreign, 'ok'}
"""
)

# Step 1 of an invalidation. KEYS: marker, epoch. ARGV: committed version (decimal; '' = unknown),
# marker ttl ms, epoch ttl ms. Reply: {foreign, floor, write floor, seq}.
# The epoch (one counter per prefix; a missing one restarts at the server time in µs) goes up by
# one and the marker's inv_seq is set to its new value; floor = max(floor, committed); without a
# committed version inv_floor = floor + 1 (the highest version written through or filled under
# this marker, and older, are refused to write-throughs). The SET comes first: a full state tier
# refuses the whole call (OOM).
# Not idempotent in the strict sense: a retry after a lost reply moves the epoch once more, which
# only drops one more fill in flight (the floors are maxima). Run with idempotent=True for that.
_INVALIDATE_STATE_LUA = (
    _PRELUDE_LUA
    + """
local floor = vnorm(hget(KEYS[1], 'floor'))
local ifloor = vnorm(hget(KEYS[1], 'inv_floor')) or '0'
local seq = vnorm(hget(KEYS[1], 'inv_seq'))
local committed = vnorm(ARGV[1])
local cur = counter(KEYS[2])
-- A missing epoch (expired, or lost in a failover) restarts at the server time in µs, above
-- every value it held before (it counted up from such a start by one per invalidation), so a
-- fill that observed the old epoch never passes as if it came after this invalidation.
if not cur then cur = now_us() end
if seq and vgt(seq, cur) then cur = seq end
local nxt = vinc(cur)
local newfloor = floor or '0'
if committed and vgt(committed, newfloor) then newfloor = committed end
if not committed and floor and vgt(vinc(floor), ifloor) then ifloor = vinc(floor) end
redis.call('SET', KEYS[2], nxt, 'PX', ARGV[3])
if floor or committed then redis.call('HSET', KEYS[1], 'floor', newfloor) end
redis.call('HSET', KEYS[1], 'inv_floor', ifloor, 'inv_seq', nxt)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local wfloor = newfloor
if vgt(ifloor, wfloor) then wfloor = ifloor end
return {foreign, newfloor, wfloor, nxt}
"""
)

# Step 3 of an invalidation without a committed version, only when the cached copy it dropped was
# newer than anything the marker knew (a fill creates no marker). KEYS: marker. ARGV: inv_floor,
# marker ttl ms. Idempotent (a max).
_RAISE_INV_FLOOR_LUA = (
    _PRELUDE_LUA
    + """
local ifloor = vnorm(hget(KEYS[1], 'inv_floor'))
local want = vnorm(ARGV[1])
if want and (not ifloor or vgt(want, ifloor)) then redis.call('HSET', KEYS[1], 'inv_floor', want) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {foreign, 'ok'}
"""
)

# --- cache tier (entries, pointers, leases, tombstones: evictable) ------------------------------

# Shared by the write and fill scripts: store entry + pointer unless the cached copy is newer or a
# tombstone refuses the version (a write-through: below its write floor; a fill: below its floor,
# or an invalidation after the fill's observation); drop the old pointer when key_value changed
# (only if it still points at this id: the old key may meanwhile belong to another entry).
_STORE_LUA = (
    _PRELUDE_LUA
    + """
local function store(idkey, ptrkey, ptrprefix, id, value, version, ttl, writing, observed)
  version = vnorm(version)
  if not version then return 'stale' end  -- not comparable: never stored (the caller validates)
  local old = sget(idkey)
  local oldptr = nil
  local s, f, w = tomb(old)
  if s then
    if not writing and vgt(s, observed) then return 'invalidated' end
    local least = f
    if writing then least = w end
    if vgt(least, version) then return 'stale' end
  elseif old and old ~= NONE then
    local v, kt, kv = entry_head(old)
    if v and vgt(v, version) then return 'stale' end
    if kt then oldptr = ptrprefix .. kt .. ':' .. kv end
  end
  if oldptr and oldptr ~= ptrkey and sget(oldptr) == id then redis.call('DEL', oldptr) end
  usable(ptrkey, 'string')
  redis.call('SET', idkey, value, 'PX', ttl)
  redis.call('SET', ptrkey, id, 'PX', ttl)
  return 'stored'
end
"""
)

# Cluster: touches the pointer and the id key it names (not in KEYS): 2 round trips there.
# KEYS: lookup (id key or pointer key), lease key.
# ARGV: mode ('id'|'key'), id-key prefix, key_type, key_value, lease token ('' = no lease), lease ms.
# Reply: {foreign, 'hit', value[, id by key]} | {foreign, 'none'|'miss'|'lease'|'wait'}.
# A tombstone is never served: a miss (by key: the pointer to it is stale and dropped).
_READ_LUA = (
    _PRELUDE_LUA
    + """
local v = sget(KEYS[1])
if v == NONE then return {foreign, 'none'} end
if v and not tomb(v) then
  if ARGV[1] == 'id' then return {foreign, 'hit', v} end
  local e = sget(ARGV[2] .. v)
  if e and e ~= NONE and not tomb(e) then
    local _, kt, kv = entry_head(e)
    -- not an entry value of this layout: served as a hit for the client to judge (it deletes it)
    if string.sub(e, 1, 3) ~= 'E1:' or not kt then return {foreign, 'hit', e, v} end
    if kt == ARGV[3] and kv == ARGV[4] then return {foreign, 'hit', e, v} end
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

# Step 2 of a write. Cluster: the new and old pointers are other slots (a second call each).
# KEYS: id key, pointer key. ARGV: id, value (layout E1), version (decimal), ttl ms, pointer prefix.
_WRITE_LUA = (
    _STORE_LUA
    + """
local outcome = store(KEYS[1], KEYS[2], ARGV[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4], true, '0')
return {foreign, outcome}
"""
)

# Step 2 of a fill. Cluster: as the write script, plus the lease (the by-id lease could share
# {<id>}; by-key not).
# KEYS: lease, target (id key for an entry or a negative-by-id; pointer key for a negative-by-key),
#       pointer key (entry only; '' otherwise).
# ARGV: token, value (layout E1) or NONE, id, version (decimal), ttl ms, negative ttl ms, pointer prefix,
#       epoch observed before the load.
# Stored only while the lease is ours, never over a tombstone of a later invalidation (seq above
# the observed epoch) nor over a newer cached copy; a not-found never replaces an existing key,
# a tombstone included (outcome 'exists': the next reader loads again once it expires).
_FILL_LUA = (
    _STORE_LUA
    + """
local lease = sget(KEYS[1])
if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. ':' then return {foreign, 'lease-lost'} end
redis.call('DEL', KEYS[1])
if ARGV[2] == NONE then
  local cur = sget(KEYS[2])
  local s = tomb(cur)
  if s and vgt(s, ARGV[8]) then return {foreign, 'invalidated'} end
  -- Never over a tombstone either: its floors must refuse a late store until it expires (a
  -- not-found in its place would let a write or fill that began before the invalidation in).
  if cur then return {foreign, 'exists'} end
  redis.call('SET', KEYS[2], NONE, 'PX', ARGV[6])
  return {foreign, 'stored'}
end
local outcome = store(KEYS[2], KEYS[3], ARGV[7], ARGV[3], ARGV[2], ARGV[4], ARGV[5], false, ARGV[8])
return {foreign, outcome}
"""
)

# Step 2 of an invalidation. Cluster: the pointer (found in the entry) and the new key's pointer
# are further calls.
# KEYS: id key[, pointer key of the entry's new key].
# ARGV: id, pointer prefix, seq, floor, write floor, tombstone ttl ms, '1' if no committed version.
# Reply: {foreign, removed, write floor of the tombstone}.
# The entry (or a not-found) is replaced by a tombstone carrying the invalidation's seq and floors
# (merged with a tombstone already there: the maxima), its pointer dropped if it points at this id;
# at the new key (if the caller names it) a cached not-found, or a pointer to this id, is dropped
# too. Without a committed version the tombstone's write floor also covers the cached version
# (+ 1). Idempotent (maxima; a retry may count fewer keys removed).
_INVALIDATE_CACHE_LUA = (
    _PRELUDE_LUA
    + """
local seq, floor, wfloor = ARGV[3], ARGV[4], ARGV[5]
local old = sget(KEYS[1])
local removed = 0
local s, f, w = tomb(old)
if s then
  if vgt(s, seq) then seq = s end
  if vgt(f, floor) then floor = f end
  if vgt(w, wfloor) then wfloor = w end
elseif old then
  removed = 1
  if old ~= NONE then
    local v, kt, kv = entry_head(old)
    if v and ARGV[7] == '1' and vgt(vinc(v), wfloor) then wfloor = vinc(v) end
    if kt then
      local ptr = ARGV[2] .. kt .. ':' .. kv
      if sget(ptr) == ARGV[1] then removed = removed + redis.call('DEL', ptr) end
    end
  end
end
if KEYS[2] then
  local at = sget(KEYS[2])
  if at == NONE or at == ARGV[1] then removed = removed + redis.call('DEL', KEYS[2]) end
end
redis.call('SET', KEYS[1], TOMB .. seq .. ':' .. floor .. ':' .. wfloor, 'PX', ARGV[6])
return {foreign, removed, wfloor}
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
_INVALIDATE_CACHE = LuaScript(_INVALIDATE_CACHE_LUA)
_RESERVE = LuaScript(_RESERVE_LUA)
_OBSERVE = LuaScript(_OBSERVE_LUA)
_FILL_CHECK = LuaScript(_FILL_CHECK_LUA)
_INVALIDATE_STATE = LuaScript(_INVALIDATE_STATE_LUA)
_RAISE_INV_FLOOR = LuaScript(_RAISE_INV_FLOOR_LUA)
_DELETE_IF = LuaScript(_DELETE_IF_LUA)
_RELEASE = LuaScript(_RELEASE_LUA)


@dataclass(frozen=True)
class FillResult:
    """What :meth:`EntryCache.get_or_load` did: the entry (``None``: not found), whether the
    loader ran in this call, and the verdict (``stored``; ``stale``, ``invalidated``,
    ``lease-lost``, ``exists``, ``expired``: loaded but not cached, see the module docstring;
    ``hit``/``none`` when served from the cache; ``uncached`` when the wait for another loader
    ran out or the state tier could not be asked: the loaded entry, not cached)."""

    entry: Entry | None
    loaded: bool
    outcome: str


def _all_confirmed(*acks: Acknowledgement | None) -> bool:
    return all(ack is not None and ack.confirmed for ack in acks)


@dataclass(frozen=True)
class WriteResult:
    """What :meth:`EntryCache.write` did. ``outcome``: ``stored``, ``stale`` or ``expired`` (see
    ``write``). ``state``: the acknowledgement of the version reservation on the state tier (None
    when it refused the version: nothing written); ``cache``: of the store on the cache tier (None
    when nothing was stored). ``confirmed``: stored, and both reached every in-sync replica of
    their tier (:mod:`smoke.strategies.replication`), so a failover of either tier cannot bring
    back the version this one superseded."""

    outcome: str
    state: Acknowledgement | None = None
    cache: Acknowledgement | None = None

    @property
    def confirmed(self) -> bool:
        return self.outcome == "stored" and _all_confirmed(self.state, self.cache)


@dataclass(frozen=True)
class InvalidationResult:
    """What :meth:`EntryCache.invalidate` did. ``removed``: keys removed (the entry or a not-found,
    pointers). ``state``: the acknowledgement of the marker and epoch on the state tier;
    ``cache``: of the tombstone on the cache tier; ``write_floor``: of the third step (the
    marker's write floor raised on the state tier), None when it was not needed.

    ``confirmed``: every step reached every in-sync replica of its tier (at least the minimum):
    the promise "an acknowledged invalidation is never lost" holds for a confirmed one only (see
    ``invalidate``). Not confirmed: it happened on the masters, but a failover of either tier may
    still undo it; call ``invalidate`` again."""

    removed: int
    state: Acknowledgement
    cache: Acknowledgement
    write_floor: Acknowledgement | None = None

    @property
    def confirmed(self) -> bool:
        return _all_confirmed(self.state, self.cache) and (self.write_floor is None or self.write_floor.confirmed)

    @property
    def acked(self) -> int:
        """The fewest replicas that acknowledged any step."""
        return min(a.acked for a in (self.state, self.cache, self.write_floor) if a is not None)

    @property
    def required(self) -> int:
        """The most replicas any step required."""
        return max(a.required for a in (self.state, self.cache, self.write_floor) if a is not None)


class EntryCache:
    """Look-aside cache of DICT entries; see the module docstring for the keys and guarantees.

    ``client`` is the cache tier's client (entries, pointers, leases, tombstones); ``markers``
    the state tier's (version markers and the by-key negative epoch, never evicted). ``None``:
    the markers live on ``client`` (one instance, e.g. a test or a stack without a state tier);
    the protocol is the same either way.

    In short: reads never return a version older than one a write or invalidation has
    superseded, except within the limits below; ``write`` keeps the newest version (compared
    exactly, integers in [0, 2^63 - 1]); a fill (``get_or_load*``) is dropped when an invalidation
    happened while its loader ran (for a not-found by key: an invalidation of any entry); one
    loader runs per cold key. Every key has a TTL; a failover or an eviction of the cache tier
    loses cache data, never makes it older than the TTLs allow (but for the residual of the
    module docstring's *Two tiers*).

    Limits the application must know: ``invalidate`` without ``committed_version`` refuses only
    write-throughs of the highest version the marker or the cached copy knew and older, so a late
    write-through of another version older than the one committed may be stored and served for
    up to the entry TTL (5 min); pass the committed version. A not-found cached under a key value
    *before* an entry moved there is served until its negative TTL (15 s) unless the writer
    writes the entry through or passes ``new_key`` to ``invalidate``. A full state tier makes
    ``write`` and ``invalidate`` raise :class:`~smoke.strategies.tiers.StateTierFull`.
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
        reservation_ms: int = DEFAULT_RESERVATION_MS,
        markers: SentinelClient | None = None,
        tombstone_ms: int | None = None,
        min_replicas: int = 1,
        wait_timeout_ms: int = WAIT_TIMEOUT_MS,
    ) -> None:
        if min(ttl_ms, lease_ms, poll_ms, reservation_ms) <= 0:
            raise ValueError("ttl_ms, marker_ttl_ms, lease_ms, poll_ms and reservation_ms must be positive")
        marker_ttl_ms = ttl_ms + reservation_ms if marker_ttl_ms is None else marker_ttl_ms
        if not 0 < negative_ttl_ms <= MAX_NEGATIVE_TTL_MS:
            raise ValueError(f"negative_ttl_ms = {negative_ttl_ms}: must be in (0, {MAX_NEGATIVE_TTL_MS}]")
        if marker_ttl_ms < ttl_ms + reservation_ms:
            raise ValueError(
                f"marker_ttl_ms = {marker_ttl_ms}: the marker must outlive the entry it guards "
                f"(ttl_ms = {ttl_ms} + reservation_ms = {reservation_ms})"
            )
        self.client = client
        self.markers = client if markers is None else markers
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self.negative_ttl_ms = negative_ttl_ms
        self.marker_ttl_ms = marker_ttl_ms
        self.lease_ms = lease_ms
        self.poll_ms = poll_ms
        self.reservation_ms = reservation_ms
        # A tombstone must outlive every step 2 whose step 1 came before the invalidation's: the
        # reservation window, with a margin (and a lease, so a fill in flight meets it).
        least_tombstone_ms = max(3 * reservation_ms, lease_ms)
        if tombstone_ms is not None and tombstone_ms < least_tombstone_ms:
            raise ValueError(
                f"tombstone_ms = {tombstone_ms}: must be at least max(3 * reservation_ms, lease_ms) = "
                f"{least_tombstone_ms}, to outlive every store it must refuse"
            )
        self.tombstone_ms = least_tombstone_ms if tombstone_ms is None else tombstone_ms
        # Writes and invalidations are confirmed on each tier by its in-sync replicas (one rule:
        # smoke/strategies/replication.py); one Confirmation per tier (each keeps its own hint).
        self._confirm_state = Confirmation(min_replicas, wait_timeout_ms, fence=self.markers.replicas_accounted_for)
        self._confirm_cache = Confirmation(min_replicas, wait_timeout_ms, fence=self.client.replicas_accounted_for)
        # The epoch must outlive every marker (it is refreshed with each) and every lease.
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
        """The version marker of an entry, on the markers' tier (the state tier)."""
        return f"{self.prefix}{MARKER_KEY}{encodable('entry id', entry_id)}"

    def negative_epoch_key(self) -> str:
        """The prefix's invalidation counter, on the markers' tier (the state tier)."""
        return f"{self.prefix}{NEGATIVE_EPOCH_KEY}"

    # --- reads --------------------------------------------------------------------------------
    def get_by_id(self, entry_id: str) -> Entry | None:
        """The cached entry, or ``None`` on a miss or a cached not-found (one round trip, on the
        cache tier).

        A plain ``GET`` (:func:`~smoke.strategies.lua.get_string`), judged as the read script
        judges the id key: a not-found or a tombstone is ``None``, anything else is parsed (a
        corrupt value deleted and logged). A key of a foreign type goes to the read script,
        which deletes it and reports it (one more round trip, as for any corrupt value)."""
        key = self.id_key(entry_id)
        raw = self.client.run(lambda r: get_string(r, key), idempotent=True)
        if raw is WRONG_TYPE:
            return self._lookup_once("id", entry_id, "", "")[1]
        assert raw is None or isinstance(raw, bytes)
        if raw is None or raw == _NONE_BYTES or raw.startswith(_TOMBSTONE_BYTES):
            return None
        return self._parsed_hit(entry_id, "", "", raw, None)

    def get_by_key(self, key_type: str, key_value: str) -> Entry | None:
        """The cached entry for a DICT key, pointer followed server-side (one round trip, on the
        cache tier)."""
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
        under this prefix) happened after the loader started: the entry that now owns this key
        value may be the one just invalidated (outcome ``invalidated``, nothing cached)."""
        return self._get_or_load("key", "", key_type, key_value, lambda: loader(key_type, key_value))

    # --- writes -------------------------------------------------------------------------------
    def write(self, entry: Entry) -> WriteResult:
        """Write-through after the source of truth committed ``entry``. ``outcome``: ``stored``;
        ``stale`` when a newer version was written or an invalidation superseded this one;
        ``expired`` when more than ``reservation_ms`` passed between the two steps (nothing
        cached: a later read loads fresh). Two round trips: the reservation on the state tier,
        the store on the cache, each pipelined with its ``WAIT`` (smoke/strategies/replication.py).

        ``confirmed`` (see :class:`WriteResult`): stored, and both steps reached every in-sync
        replica of their tier. A write that supersedes a committed change and is not confirmed
        may be undone by a failover (the older copy served again until its TTL): retry it, or
        ``invalidate`` the entry, until one is confirmed.

        ``entry.version`` must be an integer in [0, 2^63 - 1] (compared exactly, so nanosecond
        timestamps work); anything else is a ``ValueError`` naming it, and nothing is sent. A full
        state tier raises :class:`~smoke.strategies.tiers.StateTierFull` (nothing written)."""
        keys = [self.id_key(entry.id), self.pointer_key(entry.key_type, entry.key_value)]
        version = version_text("entry version", entry.version)
        value = entry.to_value()  # a field that cannot be encoded is refused before anything is sent
        marker = self.marker_key(entry.id)
        reserve_args = [version, self.marker_ttl_ms, self._epoch_ttl_ms]
        with refused_when_full("entry write (version reservation)", marker):
            (reserved,), state_ack = self._run_confirmed(
                _RESERVE, [marker, self.negative_epoch_key()], reserve_args, tier="state", wrote=_said(b"ok")
            )
        if _text(reserved) != "ok":
            return WriteResult("stale")
        args = [entry.id, value, version, self.ttl_ms, self.prefix + POINTER_KEY]
        (outcome,), cache_ack = self._run_within(time.monotonic(), _WRITE, keys, args, wrote=_said(b"stored"))
        return WriteResult(_text(outcome), state_ack, cache_ack)

    def invalidate(
        self, entry_id: str, committed_version: int | None = None, *, new_key: tuple[str, str] | None = None
    ) -> InvalidationResult:
        """Drop the entry and its pointer and leave what keeps anything older from being stored
        again: no fill whose loader started before now (by id, and any not-found by key: the
        entry may have moved to that key value), and no write-through of the versions this cache
        has seen for it (or, if the caller knows the version it just committed, of anything below
        ``committed_version``, an integer in [0, 2^63 - 1]). A fill that starts after the
        invalidation is stored. Returns an :class:`InvalidationResult`: ``removed`` (the number
        of keys removed: entry or not-found, pointers) and ``confirmed``.

        **Confirmed invalidations are never lost.** An invalidation writes on both tiers, and
        both must survive a failover for its promise to hold: the tombstone on the cache tier (a
        cache failover to a replica without it would serve the old entry again, for up to the
        entry TTL) and the marker and epoch on the state tier (a state failover to a replica
        without them would let a late write-through of a superseded version, or a fill that
        loaded before the invalidation, be stored once the tombstone has expired). So each step
        is confirmed by the rule of :mod:`smoke.strategies.replication` (every replica in sync
        with that tier's master, at least ``min_replicas``, ``WAIT`` pipelined with the script on
        its connection: no extra round trip), and the result is ``confirmed`` only when every
        step is. Each step writes on every run (the tombstone ``SET``, the epoch ``SET`` and the
        marker ``HSET``), so the ``WAIT`` of a retry covers the retry's own write on every server
        line. Not confirmed (replicas down or cut off): the invalidation happened on the masters,
        but a failover may undo it; the application retries it (it is safe to repeat: it only
        moves the epoch once more) until one is confirmed, or accepts that the old entry may be
        served for up to the entry TTL after such a failover.

        Two round trips (state tier: marker and epoch; cache tier: the entry replaced by a
        short-lived tombstone, the pointers dropped); a third on the state tier only without
        ``committed_version`` when the cached copy was newer than anything its marker knew. A
        full state tier raises :class:`~smoke.strategies.tiers.StateTierFull`: nothing changed
        when it refused the first step (and the cached copy is still served until its TTL: retry
        the invalidation); when it refused only the third, the tombstone already refuses late
        writes for its lifetime, beyond the reservation window.

        Pass ``committed_version`` whenever it is known: without it, a late write-through of a
        version older than the one committed but newer than any this cache has seen is stored.

        ``new_key``: the (key_type, key_value) the entry has *now*, when the writer changed it. A
        not-found cached under it before the change (the key did not exist yet) is dropped too;
        without it, that not-found is served until its negative TTL (15 s) runs out. (A
        ``write`` of the new entry replaces it in any case.)"""
        keys = [self.id_key(entry_id)]
        if new_key is not None:
            keys.append(self.pointer_key(*new_key))
        committed = "" if committed_version is None else version_text("committed_version", committed_version)
        marker = self.marker_key(entry_id)
        state_args = [committed, self.marker_ttl_ms, self._epoch_ttl_ms]
        with refused_when_full("entry invalidation", marker):
            state_keys = [marker, self.negative_epoch_key()]
            (floor, wfloor, seq), state_ack = self._run_confirmed(
                _INVALIDATE_STATE, state_keys, state_args, tier="state"
            )
        args = [entry_id, self.prefix + POINTER_KEY, _text(seq), _text(floor), _text(wfloor), self.tombstone_ms]
        args.append("1" if committed_version is None else "")
        (removed, tomb_wfloor), cache_ack = self._run_confirmed(_INVALIDATE_CACHE, keys, args, tier="cache")
        floor_ack = None
        if committed_version is None and int(_text(tomb_wfloor)) > int(_text(wfloor)):
            with refused_when_full("entry invalidation (write floor)", marker):
                floor_args = [_text(tomb_wfloor), self.marker_ttl_ms]
                _, floor_ack = self._run_confirmed(_RAISE_INV_FLOOR, [marker], floor_args, tier="state")
        assert state_ack is not None and cache_ack is not None  # these scripts always write
        return InvalidationResult(int(removed), state_ack, cache_ack, floor_ack)

    # --- internals ----------------------------------------------------------------------------
    def _run(
        self, script: LuaScript, keys: list[Any], args: list[Any], client: SentinelClient | None = None
    ) -> list[Any]:
        """One script call on ``client`` (the cache tier's by default; replies undecoded: a
        foreign value need not be UTF-8); logs the keys of a foreign type the script deleted and
        returns the rest of the reply. Every script here is safe to re-run (see each one)."""
        target = self.client if client is None else client
        reply: list[Any] = target.run(lambda r: script(r, keys, args), idempotent=True)
        return self._unwrap(reply)

    def _run_confirmed(
        self,
        script: LuaScript,
        keys: list[Any],
        args: list[Any],
        *,
        tier: str,
        wrote: Callable[[Any], bool] = lambda reply: True,
    ) -> tuple[list[Any], Acknowledgement | None]:
        """One script call on ``tier`` (``cache`` or ``state``: the markers' client) with its
        ``WAIT``, pipelined on one connection (:class:`~smoke.strategies.replication.Confirmation`):
        the rest of the reply (foreign keys logged) and the acknowledgement, None when ``wrote``
        says the script wrote nothing to confirm."""
        client, confirmation = (
            (self.client, self._confirm_cache) if tier == "cache" else (self.markers, self._confirm_state)
        )
        reply, ack = client.run(lambda r: confirmation.run(r, script, keys, args, wrote=wrote), idempotent=True)
        return self._unwrap(reply), ack

    def _run_within(
        self,
        since: float,
        script: LuaScript,
        keys: list[Any],
        args: list[Any],
        *,
        wrote: Callable[[Any], bool] | None = None,
    ) -> tuple[list[Any], Acknowledgement | None]:
        """Step 2 on the cache tier, sent only while at most ``reservation_ms`` have passed since
        ``since`` (the monotonic time step 1 answered), checked before every attempt (a retry
        after a failover is late too): otherwise ``['expired']`` and nothing is sent. With
        ``wrote``, confirmed as :meth:`_run_confirmed` does (else no ``WAIT``, no acknowledgement)."""
        window = self.reservation_ms / 1000

        def attempt(r: redis.Redis) -> tuple[list[Any], Acknowledgement | None]:
            if time.monotonic() - since > window:
                return [[], b"expired"], None
            if wrote is None:
                return script(r, keys, args), None
            reply, ack = self._confirm_cache.run(r, script, keys, args, wrote=wrote)
            return reply, ack

        reply, ack = self.client.run(attempt, idempotent=True)
        return self._unwrap(reply), ack

    @staticmethod
    def _unwrap(reply: list[Any]) -> list[Any]:
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
        entry = self._parsed_hit(entry_id, key_type, key_value, reply[1], reply[2] if mode == "key" else None)
        return ("hit", entry) if entry is not None else ("corrupt", None)

    def _parsed_hit(
        self, entry_id: str, key_type: str, key_value: str, raw: bytes, target_id: bytes | None
    ) -> Entry | None:
        """The entry a hit holds: read by id (``target_id`` None) or by key (``target_id`` the
        pointer's id); a corrupt value is deleted (with its pointer, by key), logged once, and None."""
        try:
            # By key, the script checked the value's key against the pointer; the id is checked here.
            return Entry.from_value(raw, entry_id if target_id is None else target_id.decode())
        except ValueError as exc:  # UnicodeDecodeError included
            if target_id is None:
                where = self.id_key(entry_id)
                targets, seen = [self.id_key(entry_id)], [raw]
            else:
                where = f"{self.pointer_key(key_type, key_value)} -> {_text(target_id)}"
                # The entry and the pointer to it, each only if it still holds what was read.
                targets = [(self.prefix + ID_KEY).encode() + target_id, self.pointer_key(key_type, key_value)]
                seen = [raw, target_id]
            _log_corrupt(where, str(exc)[:120])
            self.client.run(lambda r: _DELETE_IF(r, targets, seen), idempotent=True)
            return None

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
        """The cold path, holding the lease: observe the epoch (state tier), load, check (state
        tier), store (cache tier). A fill that is not stored gives the lease back, so the waiters
        load at once instead of sitting out ``lease_ms``."""
        lookup, lease = self._lookup_keys(mode, entry_id, key_type, key_value)
        epoch = self.negative_epoch_key()
        observed: str | None = None
        try:
            try:
                (seen,) = self._run(_OBSERVE, [epoch], [], self.markers)
                observed = _text(seen)
            except redis.RedisError:
                log.warning("entry fill of %s: the state tier did not answer; loaded, not cached", lookup)
            entry = load()
            if entry is None:
                # A not-found by id is judged by the id's marker, one by key by the prefix's epoch.
                marker = self.marker_key(entry_id) if mode == "id" else ""
                check_args = [observed, "", self.marker_ttl_ms, self._epoch_ttl_ms, mode]
                keys = [lease, lookup, ""]
                args = [token, NONE, "", "0", self.ttl_ms, self.negative_ttl_ms, "", observed]
            else:  # what the loader returned is checked as a write would check it
                version = version_text("entry version", entry.version)
                marker = self.marker_key(entry.id)
                check_args = [observed, version, self.marker_ttl_ms, self._epoch_ttl_ms, "entry"]
                keys = [lease, self.id_key(entry.id), self.pointer_key(entry.key_type, entry.key_value)]
                args = [token, entry.to_value(), entry.id, version, self.ttl_ms, self.negative_ttl_ms]
                args += [self.prefix + POINTER_KEY, observed]
        except BaseException:
            self._release(lease, token)
            raise
        if observed is None:
            self._release(lease, token)
            return entry, True, "uncached"
        if observed == "":  # a foreign epoch was deleted: this fill cannot be judged
            self._release(lease, token)
            return entry, True, "invalidated"
        try:
            (verdict,) = self._run(_FILL_CHECK, [marker, epoch], check_args, self.markers)
        except redis.RedisError as exc:  # a full state tier (OOM) or one that does not answer
            log.warning("entry fill of %s: the state tier refused the check (%s); loaded, not cached", lookup, exc)
            self._release(lease, token)
            return entry, True, "uncached"
        checked = time.monotonic()
        if _text(verdict) != "ok":
            self._release(lease, token)
            return entry, True, _text(verdict)
        (outcome,), _ = self._run_within(checked, _FILL, keys, args)
        if _text(outcome) == "expired":
            self._release(lease, token)
        return entry, True, _text(outcome)

    def _release(self, lease: str, token: str) -> None:
        """Give a lease back if it is still ours (one round trip on the cache tier)."""
        self.client.run(lambda r: _RELEASE(r, [lease], [token]), idempotent=True)


def _said(status: bytes) -> Callable[[Any], bool]:
    """``wrote`` for a script whose reply ``{foreign, status, ...}`` says ``status`` when it wrote."""
    return lambda reply: bool(reply[1] == status)


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
