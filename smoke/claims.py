"""Claim cache (seed TSP-003 §3.2): claim objects, their status, and the claims of an entry, fixed.

The seed writes the object and the status with two independent ``SETEX`` (a reader can see one
without the other) and indexes claims per entry in a ``SADD`` set that never gets a TTL: the
notes (cache-strategies.md §9) measured it keeping every dead id forever (``TTL -1``), growing
without bound and returning ids whose claims expired long ago. This module keeps the seed's key
names and the 1 min TTL as the contract and fixes the mechanics.

Data shape (changed from the seed where marked, all keys under ``prefix``):

* ``dict:claim:id:<id>`` — the claim JSON, ``PX ttl_ms`` (1 min).
* ``dict:claim:status:<id>`` — the status string alone (cheap polling), same TTL; written in the
  same Lua call as the object, so the two never disagree.
* ``dict:claim:index:entry:<entry_id>`` — **changed**: a sorted set (was a set) of claim ids
  scored by their expiry time in ms (server clock). Every write prunes members whose score has
  passed and sets the key's TTL to the latest live expiry + ``index_slack_ms``, so the index is
  bounded by the live claims of the entry, disappears when they do, and never lacks a TTL.
  (On Redis ≥ 7.4 a hash with ``HEXPIRE`` per field would do the same without the pruning.)

Round trips: create/update 1 (one Lua call), status 1 (``GET``), get 1, list 1 (one Lua call
prunes, ranges and fetches the objects). Every read goes to the master (the client only talks to
the master), so a status decision never sees a replica lagging behind a write. All scripts are
full-value writes that are safe to re-run after a lost reply, hence ``idempotent=True``.

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
from dataclasses import asdict, dataclass
from typing import Any

from smoke.client import SentinelClient
from smoke.corruption import CorruptionLog

log = logging.getLogger(__name__)

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
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Claim:
        """Parse and check the shape; ``ValueError`` for anything that is not a claim."""
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"JSON {type(data).__name__}, not an object")
        try:
            claim = cls(**{name: data[name] for name in cls.__dataclass_fields__})
        except KeyError as exc:
            raise ValueError(f"missing field {exc}") from None
        if not all(isinstance(v, str) for v in asdict(claim).values()):
            raise ValueError("a field is not a string")
        if claim.claim_type not in CLAIM_TYPES:
            raise ValueError(f"claim_type {claim.claim_type!r}")
        if claim.status not in STATUSES:
            raise ValueError(f"status {claim.status!r}")
        return claim


_NOW_MS_LUA = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Cluster: object + status could share {<claim id>}; the index is per entry: a second call there.
# KEYS: object, status, index. ARGV: claim id, json, status, ttl ms, index slack ms.
# Returns the claim's expiry (server ms) and the index size after pruning.
_PUT_LUA = (
    _NOW_MS_LUA
    + """
local now = now_ms()
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], now + ttl, ARGV[1])
local top = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[3], math.floor(tonumber(top[2]) - now + tonumber(ARGV[5])))
return {now + ttl, redis.call('ZCARD', KEYS[3])}
"""
)

# KEYS: index. ARGV: object key prefix. Prune, range the live ids, fetch their objects; drop ids
# whose object is gone (evicted or deleted). The object keys are derived here, not declared in
# KEYS: fine on one master, a cluster would need the per-slot MGET described in the docstring.
_LIST_LUA = (
    _NOW_MS_LUA
    + """
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then
    out[#out + 1] = id
    out[#out + 1] = v
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""
)

# KEYS: object, status, index. ARGV: claim id.
_REMOVE_LUA = """
return redis.call('DEL', KEYS[1], KEYS[2]) + redis.call('ZREM', KEYS[3], ARGV[1])
"""

_DELETE_IF_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(frozen=True)
class PutResult:
    """When the claim expires (server clock, ms) and how many live claims its entry has: a
    growing ``index_size`` is the one number to watch for a leak."""

    expires_at_ms: int
    index_size: int


class ClaimCache:
    """Write-through cache of claims and their per-entry index; see the module docstring."""

    def __init__(
        self, client: SentinelClient, prefix: str = "", *, ttl_ms: int = DEFAULT_TTL_MS, index_slack_ms: int = 5_000
    ) -> None:
        if ttl_ms <= 0 or index_slack_ms < 0:
            raise ValueError("ttl_ms must be positive and index_slack_ms not negative")
        self.client = client
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self.index_slack_ms = index_slack_ms
        master = client.master
        self._put = master.register_script(_PUT_LUA)
        self._list = master.register_script(_LIST_LUA)
        self._remove = master.register_script(_REMOVE_LUA)
        self._delete_if = master.register_script(_DELETE_IF_LUA)

    def object_key(self, claim_id: str) -> str:
        return f"{self.prefix}{OBJECT_KEY}{claim_id}"

    def status_key(self, claim_id: str) -> str:
        return f"{self.prefix}{STATUS_KEY}{claim_id}"

    def index_key(self, entry_id: str) -> str:
        return f"{self.prefix}{INDEX_KEY}{entry_id}"

    # --- writes -------------------------------------------------------------------------------
    def put(self, claim: Claim) -> PutResult:
        """Create or update: object, status and index entry in one Lua call (one round trip)."""
        keys = [self.object_key(claim.id), self.status_key(claim.id), self.index_key(claim.entry_id)]
        args = [claim.id, claim.to_json(), claim.status, self.ttl_ms, self.index_slack_ms]
        expires, size = self.client.run(lambda r: self._put(keys, args, client=r), idempotent=True)
        return PutResult(int(expires), int(size))

    create = put
    update = put

    def remove(self, claim: Claim) -> int:
        """Drop a claim that ended (object, status, index member) in one round trip."""
        keys = [self.object_key(claim.id), self.status_key(claim.id), self.index_key(claim.entry_id)]
        return int(self.client.run(lambda r: self._remove(keys, [claim.id], client=r), idempotent=True))

    # --- reads (all from the master) ----------------------------------------------------------
    def get(self, claim_id: str) -> Claim | None:
        key = self.object_key(claim_id)
        raw = self.client.run(lambda r: r.get(key), idempotent=True)
        return None if raw is None else self._parse(claim_id, str(raw))

    def status(self, claim_id: str) -> str | None:
        """The claim's status, or ``None`` on a miss (one ``GET`` on the master)."""
        key = self.status_key(claim_id)
        raw = self.client.run(lambda r: r.get(key), idempotent=True)
        if raw is None:
            return None
        if raw not in STATUSES:
            _log_corrupt(key, f"unknown status {str(raw)[:40]!r}")
            self._delete_stale(key, str(raw))
            return None
        return str(raw)

    def list_for_entry(self, entry_id: str) -> list[Claim]:
        """The live claims of an entry, oldest expiry first (one round trip)."""
        key = self.index_key(entry_id)
        prefix = self.prefix + OBJECT_KEY
        reply: list[Any] = self.client.run(lambda r: self._list([key], [prefix], client=r), idempotent=True)
        claims = []
        for claim_id, raw in zip(reply[::2], reply[1::2], strict=True):
            claim = self._parse(str(claim_id), str(raw))
            if claim is not None and claim.entry_id == entry_id:
                claims.append(claim)
        return claims

    # --- internals ----------------------------------------------------------------------------
    def _parse(self, claim_id: str, raw: str) -> Claim | None:
        try:
            claim = Claim.from_json(raw)
            if claim.id != claim_id:
                raise ValueError(f"holds claim {claim.id!r}")
        except ValueError as exc:
            key = self.object_key(claim_id)
            _log_corrupt(key, str(exc))
            self._delete_stale(key, raw)
            return None
        return claim

    def _delete_stale(self, key: str, raw: str) -> None:
        """Delete a corrupt value, but only that value: never a good one written meanwhile."""
        self.client.run(lambda r: self._delete_if([key], [raw], client=r), idempotent=True)


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
