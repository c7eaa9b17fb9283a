"""Checks of the idempotency strategy (smoke/strategies/idempotency.py): WAIT-confirmed claims, replays,
duplicates, mismatches, crash recovery, owner checks, TTLs and corrupt records."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from typing import Any, cast

from smoke.checks import CheckContext, check, expect
from smoke.strategies.idempotency import (
    RECORD_TTL_S,
    ClaimResult,
    CompleteOutcome,
    IdempotencyStore,
    Outcome,
    ReleaseOutcome,
    fingerprint,
)

STRATEGY = "idempotency"


def _store(ctx: CheckContext, **kwargs: Any) -> IdempotencyStore:
    kwargs.setdefault("min_replicas", ctx.state_tier_replicas)
    return IdempotencyStore(ctx.state, ctx.prefix, **kwargs)


def _payload(request_id: str, amount: str = "100.00") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "operation": "CreateClaim",
        "key": {"type": "CPF", "value": "123"},
        "amount": amount,
    }


def _response(request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "operation": "CreateClaim",
        "claim_id": f"claim-{request_id}",
        "external_id": "ext-9",
        "status": "OPEN",
        "response_code": "201",
        "timestamp": "2025-10-25T12:00:00Z",
    }


def _claim(
    ctx: CheckContext, store: IdempotencyStore, request_id: str, payload: Any, owner: str | None = None
) -> ClaimResult:
    name = "idempotency.claim"
    return cast(ClaimResult, ctx.timed(name, lambda: store.claim(request_id, payload, owner)))


def _replay(ctx: CheckContext, store: IdempotencyStore, request_id: str, payload: Any) -> ClaimResult:
    return cast(ClaimResult, ctx.timed("idempotency.replay", lambda: store.claim(request_id, payload)))


def _complete(
    ctx: CheckContext, store: IdempotencyStore, request_id: str, owner: str, response: Any
) -> CompleteOutcome:
    return cast(CompleteOutcome, ctx.timed("idempotency.complete", lambda: store.complete(request_id, owner, response)))


def _claimed(ctx: CheckContext, store: IdempotencyStore, request_id: str) -> ClaimResult:
    result = _claim(ctx, store, request_id, _payload(request_id))
    expect(result.outcome is Outcome.CLAIMED and result.owner is not None, f"first claim: {result}")
    return result


@check(STRATEGY, "claim_confirmed_by_wait")
def claim_confirmed_by_wait(ctx: CheckContext) -> str:
    store = _store(ctx)
    rid = uuid.uuid4().hex
    result = _claimed(ctx, store, rid)
    expect(
        result.replicas_acked is not None and result.replicas_acked >= ctx.state_tier_replicas,
        f"WAIT acknowledged {result.replicas_acked} replicas, expected {ctx.state_tier_replicas}",
    )
    pttl = ctx.state.run(lambda r: r.pttl(store.key(rid)), idempotent=True)
    expect(0 < pttl <= store.lock_ttl_ms, f"in-progress PTTL {pttl} ms, expected in (0, {store.lock_ttl_ms}]")
    # More replicas than exist can never acknowledge: the claim must say so, not pass as safe.
    strict = _store(ctx, min_replicas=ctx.state_tier_replicas + 1, wait_timeout_ms=500)
    rid2 = uuid.uuid4().hex
    # Not timed: it waits out the WAIT timeout on purpose and would skew idempotency.claim.
    unconfirmed = strict.claim(rid2, _payload(rid2))
    expect(
        unconfirmed.outcome is Outcome.UNCONFIRMED and unconfirmed.replicas_acked == ctx.state_tier_replicas,
        f"asking WAIT for {ctx.state_tier_replicas + 1} replicas: {unconfirmed}, expected UNCONFIRMED",
    )
    released = strict.release(rid2, cast(str, unconfirmed.owner))
    expect(released is ReleaseOutcome.RELEASED, f"releasing the unconfirmed claim: {released}")
    return (
        f"WAIT {ctx.state_tier_replicas} acked {result.replicas_acked}, lock PTTL {pttl} ms; "
        f"WAIT {ctx.state_tier_replicas + 1} → UNCONFIRMED ({unconfirmed.replicas_acked} acked), released"
    )


@check(STRATEGY, "replay_returns_stored_response")
def replay_returns_stored_response(ctx: CheckContext) -> str:
    store = _store(ctx)
    rid = uuid.uuid4().hex
    first = _claimed(ctx, store, rid)
    done = _complete(ctx, store, rid, cast(str, first.owner), _response(rid))
    expect(done is CompleteOutcome.COMPLETED, f"complete: {done}")
    # The same request with its keys in another order has the same fingerprint.
    reordered = dict(reversed(list(_payload(rid).items())))
    replays = [_replay(ctx, store, rid, reordered) for _ in range(3)]
    for replay in replays:
        expect(replay.outcome is Outcome.REPLAY, f"retry after completion: {replay}, expected REPLAY")
        expect(replay.response == _response(rid), f"replayed {replay.response}, stored {_response(rid)}")
    texts = {replay.response_json for replay in replays}
    expect(len(texts) == 1, f"replays differ byte-wise: {texts}")
    expected_text = json.dumps(_response(rid), sort_keys=True, separators=(",", ":"))
    expect(texts == {expected_text}, "the replayed text is not the text complete() stored")
    return f"3 replays byte-identical ({len(expected_text)} B), also with reordered payload keys"


@check(STRATEGY, "concurrent_duplicate_in_progress")
def concurrent_duplicate_in_progress(ctx: CheckContext) -> str:
    store = _store(ctx)
    rid = uuid.uuid4().hex
    results: list[ClaimResult] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def attempt() -> None:
        start.wait()
        result = _claim(ctx, store, rid, _payload(rid))
        with lock:
            results.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = Counter(result.outcome for result in results)
    expect(
        counts == Counter({Outcome.CLAIMED: 1, Outcome.IN_PROGRESS: 19}),
        f"20 concurrent claims: {dict(counts)}, expected 1 CLAIMED and 19 IN_PROGRESS",
    )
    waiting = [r for r in results if r.outcome is Outcome.IN_PROGRESS]
    expect(all(r.ttl_ms and 0 < r.ttl_ms <= store.lock_ttl_ms for r in waiting), "IN_PROGRESS without a retry hint")
    expect(all(r.owner is None for r in waiting), "a duplicate got an owner token")
    return "20 concurrent claims → 1 CLAIMED, 19 IN_PROGRESS with a retry-after hint"


@check(STRATEGY, "payload_mismatch_detected")
def payload_mismatch_detected(ctx: CheckContext) -> str:
    store = _store(ctx)
    rid = uuid.uuid4().hex
    first = _claimed(ctx, store, rid)
    other = _payload(rid, amount="999.00")
    during = _replay(ctx, store, rid, other)
    expect(during.outcome is Outcome.MISMATCH, f"different payload while in progress: {during}, expected MISMATCH")
    _complete(ctx, store, rid, cast(str, first.owner), _response(rid))
    after = _replay(ctx, store, rid, other)
    expect(after.outcome is Outcome.MISMATCH, f"different payload after completion: {after}, expected MISMATCH")
    expect(after.response is None, "a mismatch returned the stored response")
    return "different payload → MISMATCH while in progress and after completion"


@check(STRATEGY, "crashed_owner_claim_expires")
def crashed_owner_claim_expires(ctx: CheckContext) -> str:
    # 1 s: the second claim must come while the first is held, and a loaded machine can take a
    # few hundred ms between the two (the first one's WAIT included).
    store = _store(ctx, lock_ttl_ms=1000)
    rid = uuid.uuid4().hex
    crashed = _claimed(ctx, store, rid)
    blocked = _claim(ctx, store, rid, _payload(rid))
    expect(blocked.outcome is Outcome.IN_PROGRESS, f"retry while the owner may still run: {blocked}")
    time.sleep(1.1)
    retry = _claim(ctx, store, rid, _payload(rid))
    expect(retry.outcome is Outcome.CLAIMED, f"retry after the 1000 ms lock TTL: {retry}, expected CLAIMED")
    late = _complete(ctx, store, rid, cast(str, crashed.owner), _response(rid))
    expect(late is CompleteOutcome.NOT_OWNER, f"the crashed owner completing late: {late}, expected NOT_OWNER")
    done = _complete(ctx, store, rid, cast(str, retry.owner), _response(rid))
    expect(done is CompleteOutcome.COMPLETED, f"the new owner completing: {done}")
    return "IN_PROGRESS until the 1000 ms lock expired, then CLAIMED by the retry; the old owner got NOT_OWNER"


@check(STRATEGY, "complete_is_owner_checked")
def complete_is_owner_checked(ctx: CheckContext) -> str:
    store = _store(ctx)
    rid = uuid.uuid4().hex
    claim = _claimed(ctx, store, rid)
    owner = cast(str, claim.owner)
    wrong = _complete(ctx, store, rid, "not-the-owner", _response(rid))
    expect(wrong is CompleteOutcome.NOT_OWNER, f"complete by another owner: {wrong}")
    expect(store.release(rid, "not-the-owner") is ReleaseOutcome.NOT_OWNER, "release by another owner succeeded")
    still = _claim(ctx, store, rid, _payload(rid))
    expect(still.outcome is Outcome.IN_PROGRESS, f"after foreign complete/release the claim is {still.outcome}")
    expect(_complete(ctx, store, rid, owner, _response(rid)) is CompleteOutcome.COMPLETED, "owner's complete failed")
    again = _complete(ctx, store, rid, owner, _response(rid))
    expect(again is CompleteOutcome.ALREADY_COMPLETED, f"a retried complete: {again}")
    kept = store.release(rid, owner)
    expect(kept is ReleaseOutcome.COMPLETED, f"release after completion: {kept}, must not delete the record")
    missing = _complete(ctx, store, uuid.uuid4().hex, owner, _response(rid))
    expect(missing is CompleteOutcome.MISSING, f"complete of an unknown request: {missing}")
    # Release before the side effect lets a retry run at once.
    rid2 = uuid.uuid4().hex
    claim2 = _claimed(ctx, store, rid2)
    expect(store.release(rid2, cast(str, claim2.owner)) is ReleaseOutcome.RELEASED, "owner's release failed")
    expect(_claim(ctx, store, rid2, _payload(rid2)).outcome is Outcome.CLAIMED, "no claim after release")
    return "foreign complete/release refused; complete idempotent; completed record never released"


@check(STRATEGY, "completed_ttl_24h")
def completed_ttl_24h(ctx: CheckContext) -> str:
    store = _store(ctx)
    rid = uuid.uuid4().hex
    claim = _claimed(ctx, store, rid)
    _complete(ctx, store, rid, cast(str, claim.owner), _response(rid))
    ttl = ctx.state.run(lambda r: r.ttl(store.key(rid)), idempotent=True)
    expect(
        RECORD_TTL_S - 5 < ttl <= RECORD_TTL_S,
        f"completed TTL {ttl} s, expected in ({RECORD_TTL_S - 5}, {RECORD_TTL_S}]",
    )
    return f"completed record TTL {ttl} s"


@check(STRATEGY, "corrupt_record_fails_closed")
def corrupt_record_fails_closed(ctx: CheckContext) -> str:
    store = _store(ctx)
    seen = []
    for label in ("not JSON, no TTL", "wrong shape", "response not JSON", "a hash"):
        rid = uuid.uuid4().hex
        key = store.key(rid)
        # A well-formed envelope for this very payload whose response is not JSON.
        envelope = {"state": "completed", "owner": "o", "fp": fingerprint(_payload(rid)), "response": "{x"}
        writes = {
            "not JSON, no TTL": lambda r, k=key: r.set(k, b"\xff garbage"),
            "wrong shape": lambda r, k=key: r.set(k, b'{"state": "completed"}', ex=60),
            "response not JSON": lambda r, k=key, v=envelope: r.set(k, json.dumps(v), ex=60),
            "a hash": lambda r, k=key: r.hset(k, "state", "completed"),
        }
        ctx.state.run(writes[label], idempotent=True)
        result = _claim(ctx, store, rid, _payload(rid))
        expect(
            result.outcome is Outcome.IN_PROGRESS and result.corrupt,
            f"{label}: {result.outcome}, expected IN_PROGRESS (corrupt) — a corrupt record must not allow a run",
        )
        ttl = ctx.state.run(lambda r, k=key: r.ttl(k), idempotent=True)
        expect(0 < ttl <= RECORD_TTL_S, f"{label}: corrupt record TTL {ttl}, expected in (0, {RECORD_TTL_S}]")
        seen.append(label)
    return f"{len(seen)} corrupt records ({', '.join(seen)}) → IN_PROGRESS, kept with a TTL, no crash"
