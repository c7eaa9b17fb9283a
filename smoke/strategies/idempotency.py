"""Idempotency records for Bridge/Bacen requests (seed TSP-003 §3.4): each request runs at most once.

Contract kept from the seed: key ``bridge:idempotency:<request_id>``, completed records live 24 h.
The seed wrote the response *after* the side effect, so two concurrent duplicates both executed.
Now a request is **claimed before** its side effect:

1. ``claim`` — one Lua script: it reads the record; without one it claims (``SET key <record>
   NX PX <lock_ttl>``); otherwise it decides from the stored record and writes nothing: a
   different payload fingerprint → MISMATCH, completed → REPLAY (the stored response), in
   progress under another owner → IN_PROGRESS. A claim that finds its own
   owner token (a retry after a lost reply) re-writes its record and counts as claimed, which
   makes the claim safe to retry.
2. ``WAIT`` on the same connection: the claim is CLAIMED only when every replica *in sync* with
   the master acknowledged it, at least one (:mod:`smoke.strategies.replication` states the rule
   and what can still lose a confirmed write). Otherwise the outcome is UNCONFIRMED: the claim
   exists on the master but may be lost in a failover, so the caller must not run the side
   effect as if it were safe (release it and answer a retryable 503). The notes measured
   ``WAIT 1`` losing claims and ``WAIT``-all losing none; a fixed "all 2" made every claim
   UNCONFIRMED while one replica was down (issue 16), "all in sync" keeps claims available then.
3. ``complete`` — owner-checked Lua: stores the response, state "completed", 24 h TTL; the
   ``WAIT`` pipelined behind it decides COMPLETED or UNCONFIRMED. A retried ``complete`` (the
   record is completed already) writes the record again, unchanged, so that ``WAIT`` covers it.
   ``release`` — owner-checked delete of an in-progress claim, for a transient failure *before*
   the side effect. A crashed owner's claim expires after ``lock_ttl_ms``, then a retry can run.

Data shape (changed from the seed's bare ``BridgeResponse`` JSON): the value is an envelope
``{"state": "in_progress"|"completed", "owner": <token>, "fp": <sha256 hex of the canonical
request>, "at_ms": <server time>, "response": <the response as a JSON text, completed only>}``.
The response is kept as text so a replay is byte-identical to what ``complete`` stored.

Request fingerprint (:func:`fingerprint`, :func:`canonical_json`): RFC 8785 canonical JSON with
numbers written from their exact decimal value, so a retry that re-serialises the payload (key
order, ``10`` or ``10.0``, ``-0.0``) is a REPLAY and not a MISMATCH, and no two different
payloads (2^53 and 2^53 + 1 included) share a fingerprint. Changed from the first version (plain
``json.dumps`` with sorted keys), which gave ``10`` and ``10.0`` different fingerprints: for
payloads of strings, integers below 10^21, booleans and nulls, with member names in the BMP, the
two agree, so a record claimed before the change still matches its retry. One with a float
written differently (``10.0``; ``10.5`` is written alike), an integer from 10^21 or a member
name outside the BMP, claimed in the 24 h before the deploy, may answer MISMATCH to its retries
until its record expires (fails safe: a 422, never a second run).

Ids: the request id and the owner token must be UTF-8 text; one that is not (a lone surrogate
from ``json.loads``) is a ``ValueError`` naming it, before anything is sent: it used to reach
Redis as ``?`` and share the record of another request id.

Corrupt or foreign record (not JSON, wrong shape, wrong Redis type): **fails closed**. Unlike the
cache strategies it is *not* deleted, because it may be a completed request whose side effect
already ran; deleting it would allow a silent second execution. The claim answers IN_PROGRESS
with ``corrupt=True`` (logged once per process) until the record expires; a record found without
a TTL gets the 24 h record TTL, so nothing blocks forever. An operator may delete it sooner.

**Every confirmation covers the write it confirms, on every server line.** Since Redis 7.2 (and
in Valkey) ``WAIT`` counts replicas that reached the *calling connection's own last write*; a
connection that wrote nothing is "acknowledged" at once. So each path that answers CLAIMED,
COMPLETED or ALREADY_COMPLETED has written on that connection just before its ``WAIT``: a new
claim by its ``SET NX``, a retried claim and a retried completion by writing their record
again. ``release`` is not confirmed (a lost release only makes a retry wait for the lock TTL);
REPLAY, IN_PROGRESS and MISMATCH answer from the record as it is and confirm nothing.
``tests/test_confirmation.py`` drills a killed connection mid-``WAIT`` with the replicas stopped.

**Tier: state** (:mod:`smoke.strategies.tiers`). Every key of this strategy, the record
``bridge:idempotency:<request_id>``, is a decision: "this request ran, here is its answer". An
evicted completed record answers CLAIMED again, i.e. a second PIX execution (issue 13 measured
300 of 300 on an LRU cache), so the application passes the **state tier's** client
(``noeviction``), never the cache tier's.

**Full state tier** (used memory above ``maxmemory`` under ``noeviction``): the server refuses a
script at its first write that may grow memory (``SET``), as long as the script has written
nothing before it (see :mod:`smoke.strategies.tiers`), so a write path raises
:class:`~smoke.strategies.tiers.StateTierFull` (a retryable 503) and wrote nothing: a new claim
never answers CLAIMED (the side effect must not run), ``complete`` never answers COMPLETED (the
response was not stored: retry it before the lock expires), a retried own claim or completion is
refused the same way. What only reads keeps working: REPLAY of a completed record (the claim
script reads first and writes only a new claim), IN_PROGRESS and MISMATCH. ``release`` deletes,
which a full tier allows (and which frees memory).

Round trips: claim 1 and complete 1 (``INFO replication``, the script and ``WAIT`` pipelined on
one connection; a second ``WAIT`` only just after a replica came back, see
:mod:`smoke.strategies.replication`), release 1 (+1 ``SCRIPT LOAD`` once per process and per
failover). A ``WAIT`` after a replay, duplicate or mismatch confirms nothing and is not looked at
(on Redis 7.2 and Valkey it returns at once: that connection wrote nothing). All decisions read
the master.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis

from smoke.strategies.client import SentinelClient, encodable
from smoke.strategies.corruption import CorruptionLog
from smoke.strategies.lua import LuaScript
from smoke.strategies.replication import WAIT_TIMEOUT_MS, Acknowledgement, Confirmation
from smoke.strategies.tiers import refused_when_full

log = logging.getLogger(__name__)

# Every key of this strategy starts with KEY_PREFIX (the application ACL user is limited to it).
KEY_PREFIX = "bridge:idempotency:"
RECORD_TTL_S = 24 * 3600  # 86400: how long a completed request replays its response
# How long a claim protects a request whose owner may have crashed; long enough for the slowest
# Bridge call (read/write timeouts are 3 s), short enough that a retry after a crash gets through.
LOCK_TTL_MS = 30_000
_log_corrupt = CorruptionLog(log, "idempotency: corrupt or foreign record, failing closed: %s")

# Shared Lua prelude: read and validate the record. Returns rec (a table) or nil plus a reason.
_READ = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function read_record(key)
  local raw = redis.pcall('GET', key)
  if raw == false then return nil, 'missing' end
  if type(raw) == 'table' then return nil, 'corrupt' end
  local ok, rec = pcall(cjson.decode, raw)
  if not ok or type(rec) ~= 'table' or type(rec.owner) ~= 'string' or type(rec.fp) ~= 'string' then
    return nil, 'corrupt'
  end
  if rec.state == 'in_progress' then return rec, 'in_progress' end
  if rec.state == 'completed' and type(rec.response) == 'string' then return rec, 'completed' end
  return nil, 'corrupt'
end
"""

# KEYS[1] record. ARGV: owner, fingerprint, lock TTL ms, record TTL s.
# Returns {outcome, pttl ms, response or ''}; outcome is claimed|own|mismatch|replay|in_progress|corrupt.
# One key: cluster-safe as is.
# Reads first and writes only a new (or own retried) claim: on a full state tier (noeviction)
# the server refuses a script at its first denyoom write, so a script that began with SET NX
# was refused even for a completed record, and a replay failed. Read, then SET NX, is the same
# decision (the script is atomic); REPLAY, IN_PROGRESS and MISMATCH now write nothing (but
# the EXPIRE repair of a record without a TTL, which the server allows on a full tier).
_CLAIM = LuaScript(
    _READ
    + """
local key, owner, fp = KEYS[1], ARGV[1], ARGV[2]
local rec, kind = read_record(key)
local record = cjson.encode({state = 'in_progress', owner = owner, fp = fp, at_ms = now_ms()})
if kind == 'missing' then
  if redis.call('SET', key, record, 'NX', 'PX', ARGV[3]) then return {'claimed', tonumber(ARGV[3]), ''} end
  return {'in_progress', 0, ''}  -- appeared between GET and SET NX (same script: cannot happen), be safe
end
local pttl = redis.call('PTTL', key)
-- Never forever: a record found without a TTL (foreign, or an old writer) gets the 24 h record TTL.
if pttl == -1 then redis.call('EXPIRE', key, ARGV[4]) pttl = tonumber(ARGV[4]) * 1000 end
if kind == 'corrupt' then return {'corrupt', pttl, ''} end  -- fail closed
if rec.fp ~= fp then return {'mismatch', pttl, ''} end
if kind == 'completed' then return {'replay', pttl, rec.response} end
if rec.owner == owner then
  -- A retry of our own claim: re-write it so WAIT on this connection covers it, refresh the lock.
  redis.call('SET', key, record, 'PX', ARGV[3])
  return {'own', tonumber(ARGV[3]), ''}
end
return {'in_progress', pttl, ''}
"""
)

# KEYS[1] record. ARGV: owner, response JSON text, record TTL s.
# Returns completed|already_completed|not_owner|missing|corrupt. One key: cluster-safe.
_COMPLETE = LuaScript(
    _READ
    + """
local rec, kind = read_record(KEYS[1])
if kind == 'missing' or kind == 'corrupt' then return kind end
if rec.owner ~= ARGV[1] then return 'not_owner' end
if kind == 'completed' then
  -- A retry (its first reply was lost). Write the record again, unchanged and with the TTL it
  -- has left: on Redis >= 7.2 WAIT waits only for this connection's own last write, so a retry
  -- that wrote nothing would be "confirmed" at once, whatever the replicas have.
  -- (PTTL -1: a record without a TTL gets the record TTL, never forever; 0: it expires now.)
  local pttl = redis.call('PTTL', KEYS[1])
  if pttl == -1 then pttl = tonumber(ARGV[3]) * 1000 elseif pttl < 1 then pttl = 1 end
  redis.call('SET', KEYS[1], redis.call('GET', KEYS[1]), 'PX', pttl)
  return 'already_completed'
end
local done = cjson.encode({state = 'completed', owner = rec.owner, fp = rec.fp, at_ms = now_ms(), response = ARGV[2]})
redis.call('SET', KEYS[1], done, 'EX', ARGV[3])
return 'completed'
"""
)

# KEYS[1] record. ARGV: owner. Returns released|not_owner|missing|completed|corrupt. One key: cluster-safe.
_RELEASE = LuaScript(
    _READ
    + """
local rec, kind = read_record(KEYS[1])
if kind == 'missing' or kind == 'corrupt' then return kind end
if rec.owner ~= ARGV[1] then return 'not_owner' end
if kind == 'completed' then return 'completed' end
redis.call('DEL', KEYS[1])
return 'released'
"""
)


class Outcome(enum.Enum):
    """What ``claim`` decided. Only CLAIMED allows the side effect to run."""

    CLAIMED = "claimed"  # new (or own retried) claim, acknowledged by the required replicas
    UNCONFIRMED = "unconfirmed"  # claimed on the master, but WAIT saw too few replicas: not safe
    IN_PROGRESS = "in_progress"  # another owner holds it (or the record is corrupt): retry later (409)
    MISMATCH = "mismatch"  # same request id, different payload (422)
    REPLAY = "replay"  # completed before: return the stored response


class CompleteOutcome(enum.Enum):
    COMPLETED = "completed"  # stored and confirmed by the required replicas (WAIT)
    ALREADY_COMPLETED = "already_completed"  # a retried complete by the same owner
    # Stored on the master, but WAIT saw too few replicas: a failover now could lose the response,
    # and the request could run again once its claim lock expires. Reconcile, do not assume done.
    UNCONFIRMED = "unconfirmed"
    NOT_OWNER = "not_owner"  # the claim expired and another owner took it
    MISSING = "missing"  # the claim expired (or was lost in a failover): outcome uncertain
    CORRUPT = "corrupt"


# The script replies whose write a completion confirms (both wrote the record just before WAIT).
_CONFIRMED_COMPLETIONS = (b"completed", b"already_completed")


class ReleaseOutcome(enum.Enum):
    RELEASED = "released"
    NOT_OWNER = "not_owner"
    MISSING = "missing"
    COMPLETED = "completed"  # never deletes a completed record
    CORRUPT = "corrupt"


@dataclass(frozen=True)
class ClaimResult:
    outcome: Outcome
    request_id: str
    # The token complete() and release() need; set for CLAIMED and UNCONFIRMED.
    owner: str | None = None
    # Replicas that acknowledged the claim (CLAIMED/UNCONFIRMED) and how many were required.
    replicas_acked: int | None = None
    replicas_required: int | None = None
    # REPLAY: the stored response, decoded, and the exact text stored.
    response: Any = None
    response_json: str | None = None
    # IN_PROGRESS/MISMATCH/REPLAY: ms until the record expires (a Retry-After hint for IN_PROGRESS).
    ttl_ms: int | None = None
    corrupt: bool = False


def fingerprint(payload: Any) -> str:
    """sha256 (hex) of :func:`canonical_json` of the request, UTF-8: equal requests get equal
    fingerprints however the client serialised them (key order, ``10`` or ``10.0``), different
    requests never share one."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def canonical_json(payload: Any) -> str:
    """The canonical JSON text of a request, the input of :func:`fingerprint`.

    RFC 8785 (JSON Canonicalization Scheme) with one deliberate difference, numbers:

    * no whitespace; object members sorted by the UTF-16 code units of their names (RFC 8785
      §3.2.3); strings written as RFC 8785 writes them (``"``, ``\\`` and control characters
      escaped, ``\\u00xx`` in lower case, everything else as itself); ``true``, ``false``, ``null``;
    * a number (``int``, ``float`` or ``decimal.Decimal``) is written from its **exact decimal
      value** in RFC 8785's (ECMAScript's) notation: ``10``, ``10.0``, ``1e1`` and
      ``Decimal("10.00")`` are all ``10``; ``0.0`` and ``-0.0`` are ``0``; ``0.1`` is ``0.1`` (a
      float counts as the shortest decimal that reads back as it, i.e. what the JSON text said);
      ``1e+21`` and up, and below ``1e-6``, in exponent form. RFC 8785 would first round every
      number to a double, making 2^53 and 2^53 + 1 one number: two different payments would pass
      as one request, so integers and decimals keep every digit here. (For floats and for
      integers up to 2^53 the output is RFC 8785's.) A JSON library that rounds (``json.loads``
      reads ``10.10`` as a double) still gives equal fingerprints for equal texts; pass
      ``parse_float=decimal.Decimal`` to keep more than 17 significant digits apart;
    * a number and a string are different (``10`` is not ``"10"``), as are ``true`` and ``1``.
      PIX amounts are decimals with two places: send them as numbers or as strings, consistently.
      Strings are not Unicode-normalised (NFC and NFD forms are different requests).

    Refused, naming where in the payload: NaN and infinities (``ValueError``), strings with a
    lone surrogate (``ValueError``: not UTF-8), object member names that are not strings and
    values of other types (``TypeError``). Lists and tuples are arrays.

    Written here (about 40 lines) rather than taken from a library: the RFC 8785 packages on PyPI
    round or refuse integers above 2^53 and take no ``Decimal``.
    """
    out: list[str] = []
    _canonical(payload, "payload", out)
    return "".join(out)


def _canonical(value: Any, path: str, out: list[str]) -> None:
    if value is None or isinstance(value, bool):
        out.append({None: "null", True: "true", False: "false"}[value])
    elif isinstance(value, (int, float, Decimal)):
        out.append(_canonical_number(value, path))
    elif isinstance(value, str):
        out.append(_canonical_string(value, path))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _canonical(item, f"{path}[{index}]", out)
        out.append("]")
    elif isinstance(value, Mapping):
        members = []  # (sort key, name as written, name): every name checked before any value
        for name in value:
            if not isinstance(name, str):
                raise TypeError(f"{path}: object member names must be strings, not {type(name).__name__} ({name!r})")
            written = _canonical_string(name, f"{path} member name")
            members.append((name.encode("utf-16-be"), written, name))
        out.append("{")
        for index, (_, written, name) in enumerate(sorted(members)):
            if index:
                out.append(",")
            out.append(written)
            out.append(":")
            _canonical(value[name], f"{path}.{name}", out)
        out.append("}")
    else:
        raise TypeError(f"{path}: {type(value).__name__} has no JSON form ({value!r:.60})")


def _canonical_string(text: str, path: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{path}: {text!r:.60} cannot be encoded as UTF-8 ({exc.reason})") from None
    return _json_string(text)


# json.dumps(text, ensure_ascii=False) without building an encoder per call (6x faster).
_json_string = json.JSONEncoder(ensure_ascii=False).encode


def _canonical_number(number: int | float | Decimal, path: str) -> str:
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueError(f"{path}: {number!r} - NaN and infinities have no JSON form")
        exact = Decimal(repr(number))  # the shortest decimal that reads back as this double
    elif isinstance(number, int):
        exact = Decimal(number)  # exact at any size
    else:
        if not number.is_finite():
            raise ValueError(f"{path}: {number!r} - NaN and infinities have no JSON form")
        exact = number
    sign, digit_tuple, exponent = exact.as_tuple()
    assert isinstance(exponent, int)  # finite
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    if not digits:
        return "0"  # 0, -0.0, 0E+7
    exponent += len(digit_tuple) - len(digits)
    # ECMAScript Number::toString on s x 10^(n - k): k digits, decimal point after n of them.
    k, n = len(digits), len(digits) + exponent
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = f"0.{'0' * -n}{digits}"
    else:
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if n - 1 > 0 else '-'}{abs(n - 1)}"
    return f"-{text}" if sign else text


class IdempotencyStore:
    """Claim → side effect → complete, with WAIT-confirmed claims on the master."""

    def __init__(
        self,
        client: SentinelClient,
        prefix: str = "",
        *,
        min_replicas: int = 1,
        wait_timeout_ms: int = WAIT_TIMEOUT_MS,
        lock_ttl_ms: int = LOCK_TTL_MS,
        record_ttl_s: int = RECORD_TTL_S,
    ) -> None:
        """A claim or completion is confirmed when every replica in sync with the master
        acknowledged it, and at least ``min_replicas`` did (:mod:`smoke.strategies.replication`).
        ``wait_timeout_ms`` must stay well below the client's read timeout (3 s), or the client
        would time out before ``WAIT`` answers."""
        if lock_ttl_ms < 1 or record_ttl_s < 1:
            raise ValueError(f"lock TTL {lock_ttl_ms} ms, record TTL {record_ttl_s} s: both must be at least 1")
        if wait_timeout_ms >= client.config.read_timeout * 1000:
            raise ValueError(
                f"wait_timeout_ms {wait_timeout_ms}: must be below the client's read timeout "
                f"({client.config.read_timeout * 1000:g} ms), or the client gives up before WAIT answers"
            )
        self.client = client
        self.prefix = prefix
        self.confirmation = Confirmation(min_replicas, wait_timeout_ms, fence=client.replicas_accounted_for)
        self.min_replicas = min_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.lock_ttl_ms = lock_ttl_ms
        self.record_ttl_s = record_ttl_s

    def key(self, request_id: str) -> str:
        """The record's key; ``ValueError`` for an id that cannot be sent as it is (not UTF-8)."""
        return f"{self.prefix}{KEY_PREFIX}{encodable('request id', request_id)}"

    def claim(self, request_id: str, payload: Any, owner: str | None = None) -> ClaimResult:
        """Claim ``request_id`` for ``payload`` before running its side effect.

        Pass the ``owner`` of an earlier attempt to retry a claim whose reply was lost; a new
        token is made otherwise. Safe to retry (``idempotent=True``): a retry finds its own token.

        Raises :class:`~smoke.strategies.tiers.StateTierFull` when the state tier is full and the
        claim would have to write (a new claim, or an own retry re-writing its record): nothing
        was written, nothing may run, answer a retryable 503 (an earlier attempt's claim, if
        any, stays until ``release`` or its lock TTL). REPLAY, IN_PROGRESS and MISMATCH
        write nothing and are answered on a full tier too.
        """
        owner = encodable("owner", owner) if owner else uuid.uuid4().hex
        key, fp = self.key(request_id), fingerprint(payload)
        args = [owner, fp, self.lock_ttl_ms, self.record_ttl_s]

        def operation(r: redis.Redis) -> tuple[list[Any], Acknowledgement | None]:
            return self.confirmation.run(r, _CLAIM, [key], args, wrote=lambda reply: reply[0] in (b"claimed", b"own"))

        with refused_when_full("claim", key):
            reply, ack = self.client.run(operation, idempotent=True)
        kind, ttl_ms, response = reply[0].decode(), int(reply[1]), reply[2]
        if kind in ("claimed", "own"):
            assert ack is not None
            outcome = Outcome.CLAIMED if ack.confirmed else Outcome.UNCONFIRMED
            return ClaimResult(outcome, request_id, owner, ack.acked, ack.required, ttl_ms=ttl_ms)
        if kind == "mismatch":
            return ClaimResult(Outcome.MISMATCH, request_id, ttl_ms=ttl_ms)
        if kind == "in_progress":
            return ClaimResult(Outcome.IN_PROGRESS, request_id, ttl_ms=ttl_ms)
        if kind == "replay":
            try:
                text = response.decode("utf-8")
                return ClaimResult(
                    Outcome.REPLAY, request_id, response=json.loads(text), response_json=text, ttl_ms=ttl_ms
                )
            except ValueError:  # UnicodeDecodeError and JSONDecodeError both are ValueErrors
                kind = "corrupt"
        _log_corrupt(f"{key} ({kind})")
        return ClaimResult(Outcome.IN_PROGRESS, request_id, ttl_ms=ttl_ms, corrupt=True)

    def complete(self, request_id: str, owner: str, response: Mapping[str, Any] | list[Any]) -> CompleteOutcome:
        """Store the response of a claimed request (24 h), only while ``owner`` still holds it.

        MISSING or NOT_OWNER mean the claim expired while the side effect ran: the caller must
        treat the request's uniqueness as uncertain (log, reconcile), not as done.

        Raises :class:`~smoke.strategies.tiers.StateTierFull` when the state tier is full: the
        response was **not** stored (a retried completion that would re-write its record is
        refused too). The claim stays in progress until its lock TTL expires; retry
        ``complete`` with backoff before then, or reconcile as for MISSING: never report done.
        """
        key = self.key(request_id)
        encodable("owner", owner)
        # ASCII only (ensure_ascii): a lone surrogate in the response is stored escaped and
        # replayed as it was.
        text = json.dumps(response, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

        def operation(r: redis.Redis) -> tuple[bytes, Acknowledgement | None]:
            # Like the claim: the stored response must reach the replicas before it counts, or a
            # failover could bring back the bare claim and, after its lock, a second execution.
            args = [owner, text, self.record_ttl_s]
            return self.confirmation.run(r, _COMPLETE, [key], args, wrote=lambda reply: reply in _CONFIRMED_COMPLETIONS)

        with refused_when_full("complete", key):
            result, ack = self.client.run(operation, idempotent=True)
        outcome = CompleteOutcome(result.decode())
        if ack is not None and not ack.confirmed:
            outcome = CompleteOutcome.UNCONFIRMED
        if outcome is CompleteOutcome.CORRUPT:
            _log_corrupt(f"{self.key(request_id)} on complete")
        return outcome

    def release(self, request_id: str, owner: str) -> ReleaseOutcome:
        """Give up a claim after a transient failure *before* the side effect, so a retry can
        run at once instead of waiting for the lock TTL. Never removes a completed record.

        Works on a full state tier (its only write is ``DEL``, which ``noeviction`` allows and
        which frees memory); should a server refuse it, that is
        :class:`~smoke.strategies.tiers.StateTierFull` (nothing released), never RELEASED."""
        key = self.key(request_id)
        encodable("owner", owner)
        with refused_when_full("release", key):
            result = self.client.run(lambda r: _RELEASE(r, [key], [owner]), idempotent=True)
        return ReleaseOutcome(result.decode())
