"""Workflow state cache (seed TSP-003 §3.3): a short-lived status and long-lived metadata per workflow.

Contract kept from the seed: ``workflow:claim:<id>:status`` lives 30 s, ``workflow:claim:<id>:metadata``
lives 30 days. What changes, and why:

* The seed wrote status and metadata with two independent ``SETEX`` calls, so a late (delayed or
  retried) writer could put an old status back over a newer one. Every write now carries a
  **version** (a monotonically increasing integer the workflow owns, e.g. Temporal's event id), and
  one Lua script writes both keys only when the version is newer than the one stored. The version
  is kept in *both* values; the copy inside the metadata outlives the 30 s status, so a writer
  arriving after the status expired is still rejected for 30 days.
* Data shape: the status value is no longer a bare string but JSON ``{"status": ..., "version": n}``;
  the metadata JSON gains a ``"version"`` field beside the seed's fields (workflow_id,
  workflow_type, started_at, claim_id, current_activity). Both are always written together.
* Reads are one ``MGET`` of both keys from the master (1 round trip). A corrupt or foreign value
  (not JSON, wrong shape, wrong Redis type) is treated as a miss: logged once per process and
  deleted only if it is still the same value (compare-and-delete), so a concurrent valid write is
  never removed. A key of another Redis type reads as nil through ``MGET`` (a miss) and is
  replaced by the next ``set``.

* Versions are integers in [1, 2^63 - 1] (a database BIGINT, an event id, nanoseconds since the
  epoch), compared **exactly**: the script compares them as decimal strings, because Lua numbers
  are doubles and 2^53 + 1 is 2^53 there (the first version refused versions above 2^53 for that
  reason). Anything else (0, a bool, a float, a string, 2^63) is a ``ValueError`` naming it.
* The workflow id must be UTF-8 text: one that is not (a lone surrogate from ``json.loads``) is a
  ``ValueError`` naming it, before anything is sent (it would reach Redis as another id's key).

**Tier: state** (:mod:`smoke.strategies.tiers`). Both keys carry the version, which is a decision
(the floor a late writer is refused by): with the status and metadata evicted, version 3 is
applied after version 10 (issue 13 measured 200 of 200 workflows regressing on an LRU cache). So
the application passes the **state tier's** client (``noeviction``).

**Full state tier**: a ``set`` that would apply raises
:class:`~smoke.strategies.tiers.StateTierFull` (the script's first write is refused, so neither
key changed: a retryable 503, never ``applied=True``); a ``set`` whose version is not newer
writes nothing and is answered as usual (``applied=False``); ``get`` (``MGET``) keeps working,
and so does its compare-and-delete of a corrupt value (``DEL`` is allowed on a full tier).

Redis 7.0 has no per-field ``HEXPIRE``, which is why this stays two keys and not one hash.

**Confirmed versions** (issue 16; found when a failover in CI took an acknowledged version
back: the test read 1258 three times, then 1257). A version applied on the master is not yet
on a replica; a failover can lose it, and with it the floor that refuses older writers. So
``set`` confirms an applied write the way claims are confirmed (``WAIT`` for every replica in
sync, at least one) and says so in ``SetResult.confirmed``; a confirmed version is never taken
back by a failover of the master alone. Reads are not confirmations: ``get`` may show a version
that is applied but not yet confirmed, which a failover can still take back.

Round trips: ``set`` 1 (``INFO replication``, ``EVALSHA`` and ``WAIT`` pipelined on one
connection, :mod:`smoke.strategies.replication`; +1 ``SCRIPT LOAD`` once per process and per failover),
``get`` 1 (``MGET``; +1 compare-and-delete only when a corrupt value is found).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from redis.client import NEVER_DECODE

from smoke.strategies.client import SentinelClient, encodable
from smoke.strategies.corruption import CorruptionLog
from smoke.strategies.lua import VERSIONS_LUA, LuaScript, version_text
from smoke.strategies.replication import WAIT_TIMEOUT_MS, Confirmation
from smoke.strategies.tiers import refused_when_full

log = logging.getLogger(__name__)

# Every key of this strategy starts with KEY_PREFIX (the application ACL user is limited to it).
KEY_PREFIX = "workflow:claim:"
STATUS_TTL_S = 30
METADATA_TTL_S = 30 * 24 * 3600  # 2592000

_log_corrupt = CorruptionLog(log, "workflow cache: corrupt or foreign value treated as a miss: %s")

# KEYS[1] status, KEYS[2] metadata. ARGV: version (decimal), status JSON, metadata JSON, status TTL s,
# metadata TTL s. Returns {applied 0|1, stored version after the call (decimal text), corrupt 0|1};
# applied is 1 also for a retry of the same write (same version, same texts), which writes again.
# Versions are compared exactly, as decimal strings (VERSIONS_LUA in smoke/strategies/lua.py): Lua
# numbers are doubles, and 2^53 + 1 is 2^53 there. A stored version is read from the JSON text,
# where this module always writes it last (``...,"version":<n>}``), not from cjson's double.
# Redis Cluster: the two keys hash to different slots as named; on a cluster the contract would need
# a hash tag (workflow:claim:{<id>}:status|metadata) so this script stays one atomic call, otherwise
# the version guard and the two writes cannot be atomic (CROSSSLOT).
_SET = LuaScript(
    VERSIONS_LUA
    + """
local corrupt = 0
local function version_of(key)
  local raw = redis.pcall('GET', key)
  if raw == false then return '0' end
  if type(raw) == 'table' then corrupt = 1 return '0' end
  local ok, doc = pcall(cjson.decode, raw)
  local v = ok and type(doc) == 'table' and type(doc.version) == 'number' and json_version(raw, doc)
  if v then return v end
  corrupt = 1
  return '0'
end
local a, b = version_of(KEYS[1]), version_of(KEYS[2])
local stored = vgt(a, b) and a or b
local version = vnorm(ARGV[1])
local function holds(key, text) return redis.pcall('GET', key) == text end
if version and version == stored and holds(KEYS[1], ARGV[2]) and holds(KEYS[2], ARGV[3]) then
  -- A retry of this very write (its reply was lost): write it again, unchanged and with the TTLs
  -- it has left, so the WAIT behind this script covers it (Redis >= 7.2 and Valkey count the
  -- calling connection's own last write; one that wrote nothing is "confirmed" at once).
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  redis.call('SET', KEYS[2], ARGV[3], 'KEEPTTL')
  return {1, version, corrupt}
end
if not version or not vgt(version, stored) then return {0, stored, corrupt} end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[5])
return {1, version, corrupt}
"""
)

# Compare-and-delete: removes a corrupt value only if nobody replaced it since it was read.
_DELETE_IF_EQUAL = LuaScript(
    """
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'table' then return redis.call('DEL', KEYS[1]) end
if raw == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)


@dataclass(frozen=True)
class WorkflowMetadata:
    """The seed's metadata fields (``started_at`` as an ISO 8601 string)."""

    workflow_id: str
    workflow_type: str
    started_at: str
    claim_id: str
    current_activity: str


@dataclass(frozen=True)
class SetResult:
    """``applied`` is False when the stored version was newer, or equal with other contents: a
    late writer lost. ``confirmed``: applied, and acknowledged by every replica in sync with the
    master (at least one), so a failover keeps it (:mod:`smoke.strategies.replication`). Applied
    but not confirmed: on the master only, a failover may take it back (and with it the floor
    that refuses older versions): call ``set`` again with the same arguments until it is
    confirmed or superseded."""

    applied: bool
    stored_version: int
    confirmed: bool = False


@dataclass(frozen=True)
class WorkflowState:
    """What a read found; ``status`` is None once the 30 s status expired, the version survives
    in the metadata for 30 days."""

    workflow_id: str
    version: int
    status: str | None
    metadata: WorkflowMetadata | None


class WorkflowCache:
    """Versioned workflow status (30 s) and metadata (30 days) on the master."""

    def __init__(
        self,
        client: SentinelClient,
        prefix: str = "",
        *,
        status_ttl_s: int = STATUS_TTL_S,
        metadata_ttl_s: int = METADATA_TTL_S,
        min_replicas: int = 1,
        wait_timeout_ms: int = WAIT_TIMEOUT_MS,
    ) -> None:
        if status_ttl_s <= 0 or metadata_ttl_s < status_ttl_s:
            raise ValueError("TTLs must be positive, and the metadata must outlive the status (it keeps the version)")
        self.client = client
        self.prefix = prefix
        self.status_ttl_s = status_ttl_s
        self.metadata_ttl_s = metadata_ttl_s
        self.confirmation = Confirmation(min_replicas, wait_timeout_ms, fence=client.replicas_accounted_for)

    # The key builders refuse an id that cannot be sent as it is (not UTF-8: it would reach Redis
    # as another id's key), with a ValueError naming it, before anything is sent.
    def status_key(self, workflow_id: str) -> str:
        return f"{self.prefix}{KEY_PREFIX}{encodable('workflow id', workflow_id)}:status"

    def metadata_key(self, workflow_id: str) -> str:
        return f"{self.prefix}{KEY_PREFIX}{encodable('workflow id', workflow_id)}:metadata"

    def set(self, workflow_id: str, version: int, status: str, metadata: WorkflowMetadata) -> SetResult:
        """Write status and metadata together if ``version`` is newer than the stored one.

        Idempotent: a repeated write (same version, same status and metadata) finds itself,
        writes itself again so that the replicas' acknowledgement covers it, and answers
        ``applied`` as the first did; so the client may retry it after a connection error, and
        the caller should retry one that is applied but not ``confirmed``. Raises
        :class:`~smoke.strategies.tiers.StateTierFull` when the state tier is full and the
        version is newer (nothing was written); a stale version is refused without writing.
        """
        version_arg = version_text("version", version, low=1)
        status_json = json.dumps({"status": status, "version": version}, separators=(",", ":"))
        metadata_json = json.dumps({**vars(metadata), "version": version}, separators=(",", ":"))
        keys = [self.status_key(workflow_id), self.metadata_key(workflow_id)]
        args = [version_arg, status_json, metadata_json, self.status_ttl_s, self.metadata_ttl_s]
        with refused_when_full("workflow set", keys[0]):
            (applied, stored, corrupt), ack = self.client.run(
                lambda r: self.confirmation.run(r, _SET, keys, args, wrote=lambda reply: reply[0] == 1), idempotent=True
            )
        if corrupt:
            _log_corrupt(f"{workflow_id}: stored version unreadable, {'overwritten' if applied else 'kept'}")
        return SetResult(bool(applied), int(stored), confirmed=ack is not None and ack.confirmed)

    def get(self, workflow_id: str) -> WorkflowState | None:
        """Status and metadata in one ``MGET``; None when neither is cached."""
        keys = [self.status_key(workflow_id), self.metadata_key(workflow_id)]
        raw_status, raw_metadata = self.client.run(
            lambda r: r.execute_command("MGET", *keys, **{NEVER_DECODE: True}), idempotent=True
        )
        status_doc = self._decode(keys[0], raw_status, _parse_status)
        metadata_doc = self._decode(keys[1], raw_metadata, _parse_metadata)
        if status_doc is None and metadata_doc is None:
            return None
        status, status_version = status_doc if status_doc else (None, 0)
        metadata, metadata_version = metadata_doc if metadata_doc else (None, 0)
        return WorkflowState(workflow_id, max(status_version, metadata_version), status, metadata)

    def _decode(self, key: str, raw: bytes | None, parse: Any) -> Any:
        if raw is None:
            return None
        try:
            return parse(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
            _log_corrupt(f"{key}: {type(exc).__name__}")
            self.client.run(lambda r: _DELETE_IF_EQUAL(r, [key], [raw]), idempotent=True)
            return None


def _parse_status(doc: Any) -> tuple[str, int]:
    if not isinstance(doc, dict) or not isinstance(doc.get("status"), str):
        raise ValueError("status: not an object with a string 'status'")
    return doc["status"], _version(doc)


def _parse_metadata(doc: Any) -> tuple[WorkflowMetadata, int]:
    if not isinstance(doc, dict):
        raise ValueError("metadata: not an object")
    fields = {name: doc[name] for name in WorkflowMetadata.__dataclass_fields__}
    if not all(isinstance(value, str) for value in fields.values()):
        raise ValueError("metadata: a field is not a string")
    return WorkflowMetadata(**fields), _version(doc)


def _version(doc: dict[str, Any]) -> int:
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError("version: not a positive integer")
    return version
