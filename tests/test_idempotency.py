"""The idempotency strategy against a real topology: every registered check, plus direct tests."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest

import smoke.checks.idempotency as idempotency_checks
import smoke.strategies.idempotency as idempotency
from smoke.checks import REGISTRY, CheckContext, run_check
from smoke.drills.workload import wait_replicated
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import SentinelClient
from smoke.strategies.idempotency import (
    ClaimResult,
    CompleteOutcome,
    IdempotencyStore,
    Outcome,
    ReleaseOutcome,
    fingerprint,
)
from smoke.strategies.replication import IN_SYNC_LAG_S
from tests.support import count_round_trips

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]

CHECKS = [c for c in REGISTRY if c.strategy == "idempotency"]


def payload(rid: str, amount: str = "10.00") -> dict[str, Any]:
    return {"request_id": rid, "amount": amount, "key": {"type": "EMAIL", "value": "a@b.c"}}


@pytest.fixture
def store(client: SentinelClient, ctx: CheckContext) -> IdempotencyStore:
    return IdempotencyStore(client, ctx.prefix)


def test_checks_registered() -> None:
    assert {c.name for c in CHECKS} >= {
        "claim_confirmed_by_wait",
        "replay_returns_stored_response",
        "concurrent_duplicate_in_progress",
        "payload_mismatch_detected",
        "crashed_owner_claim_expires",
        "complete_is_owner_checked",
        "completed_ttl_24h",
    }


def test_defaults_match_the_contract(store: IdempotencyStore) -> None:
    assert (store.min_replicas, store.record_ttl_s, store.wait_timeout_ms) == (1, 86400, 500)
    assert store.key("r1").endswith("bridge:idempotency:r1")


def test_fingerprint_is_canonical() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_twenty_threads_one_claim(store: IdempotencyStore) -> None:
    rid, results, start = uuid.uuid4().hex, [], threading.Barrier(20)

    def attempt() -> None:
        start.wait()
        results.append(store.claim(rid, payload(rid)))

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(r.outcome for r in results) == {Outcome.CLAIMED: 1, Outcome.IN_PROGRESS: 19}
    winner = next(r for r in results if r.outcome is Outcome.CLAIMED)
    assert store.complete(rid, winner.owner or "", {"ok": True}) is CompleteOutcome.COMPLETED


def test_many_requests_many_threads_each_runs_once(store: IdempotencyStore) -> None:
    """8 threads each try the same 30 requests: every request is executed by exactly one thread."""
    rids = [uuid.uuid4().hex for _ in range(30)]
    executions: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        for rid in rids:
            result = store.claim(rid, payload(rid))
            if result.outcome is Outcome.CLAIMED:
                with lock:
                    executions[rid] += 1
                store.complete(rid, result.owner or "", {"rid": rid})

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert executions == Counter(dict.fromkeys(rids, 1))
    assert all(store.claim(rid, payload(rid)).response == {"rid": rid} for rid in rids)


def test_unconfirmed_when_more_replicas_required_than_exist(client: SentinelClient, ctx: CheckContext) -> None:
    strict = IdempotencyStore(client, ctx.prefix, min_replicas=3, wait_timeout_ms=500)
    result = strict.claim("r", payload("r"))
    assert result.outcome is Outcome.UNCONFIRMED and result.replicas_acked == 2 and result.replicas_required == 3
    assert result.owner
    # The claim is held (fails closed for duplicates) until released.
    assert strict.claim("r", payload("r")).outcome is Outcome.IN_PROGRESS
    assert strict.release("r", result.owner) is ReleaseOutcome.RELEASED


def test_a_stalled_replica_blocks_confirmation_only_until_it_falls_out_of_sync(
    cluster: LoopbackCluster, client: SentinelClient, ctx: CheckContext
) -> None:
    """A replica stopped (SIGSTOP) still counts as in sync for IN_SYNC_LAG_S: a claim then is
    UNCONFIRMED (WAIT cannot see it acknowledge). Once it has not acknowledged for longer, claims
    are confirmed by the replica left in sync (issue 16: with "all 2 replicas", one replica down
    made every claim UNCONFIRMED for as long as it was down)."""
    store = IdempotencyStore(client, ctx.prefix, wait_timeout_ms=500)
    store.claim("warm", payload("warm"))
    replica = next(n for n in cluster.redis_nodes if n.running and cluster.role(n) == "slave")
    assert replica.process is not None
    os.killpg(replica.process.pid, signal.SIGSTOP)
    try:
        stalled = store.claim("stalled", payload("stalled"))
        time.sleep(IN_SYNC_LAG_S + 1.5)
        later = store.claim("later", payload("later"))
    finally:
        os.killpg(replica.process.pid, signal.SIGCONT)
        # The module's later tests count round trips and expect both replicas in sync.
        with cluster.client(cluster.masters()[0]) as master:
            wait_replicated(master, replicas=2, timeout_s=30)
    assert stalled.outcome is Outcome.UNCONFIRMED, stalled
    assert (stalled.replicas_acked, stalled.replicas_required) == (1, 2), stalled
    assert later.outcome is Outcome.CLAIMED, later
    assert (later.replicas_acked, later.replicas_required) == (1, 1), later
    # The unconfirmed claim is still held (fails closed), and its owner's retry is confirmed now.
    assert store.claim("stalled", payload("stalled")).outcome is Outcome.IN_PROGRESS
    assert store.claim("stalled", payload("stalled"), owner=stalled.owner).outcome is Outcome.CLAIMED


def test_retried_claim_with_own_token_is_claimed(store: IdempotencyStore) -> None:
    """The reply of a claim was lost; the retry with the same owner token must not see a duplicate."""
    first = store.claim("r", payload("r"))
    assert first.outcome is Outcome.CLAIMED
    again = store.claim("r", payload("r"), owner=first.owner)
    assert again.outcome is Outcome.CLAIMED and again.owner == first.owner
    assert store.claim("r", payload("r")).outcome is Outcome.IN_PROGRESS


def test_round_trips(store: IdempotencyStore) -> None:
    # Steady state: every path has run once, so no count includes a new connection's handshake.
    warm = store.claim("warm", payload("warm"))
    store.complete("warm", warm.owner or "", {"warm": True})
    warm2 = store.claim("warm2", payload("warm2"))
    store.release("warm2", warm2.owner or "")
    with count_round_trips() as first:
        claim = store.claim("r", payload("r"))
    with count_round_trips() as duplicate:
        assert store.claim("r", payload("r")).outcome is Outcome.IN_PROGRESS
    with count_round_trips() as mismatch:
        assert store.claim("r", payload("r", "99")).outcome is Outcome.MISMATCH
    with count_round_trips() as complete:
        assert store.complete("r", claim.owner or "", {"x": 1}) is CompleteOutcome.COMPLETED
    with count_round_trips() as replay:
        assert store.claim("r", payload("r")).outcome is Outcome.REPLAY
    claim2 = store.claim("r2", payload("r2"))
    with count_round_trips() as release:
        assert store.release("r2", claim2.owner or "") is ReleaseOutcome.RELEASED
    measured = [c[0] for c in (first, duplicate, mismatch, complete, replay, release)]
    # Each path one: INFO, the script and WAIT are pipelined on one connection (replication.py).
    assert measured == [1, 1, 1, 1, 1, 1]


def test_corrupt_record_never_crashes_nor_runs_twice(
    client: SentinelClient,
    store: IdempotencyStore,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(idempotency._log_corrupt, "warned", False)
    for i in range(3):
        client.run(lambda r, i=i: r.set(store.key(f"c{i}"), b"\xff\xfe not utf-8"), idempotent=True)
    with caplog.at_level(logging.DEBUG, logger="smoke.strategies.idempotency"):
        results = [store.claim(f"c{i}", payload(f"c{i}")) for i in range(3)]
    assert all(r.outcome is Outcome.IN_PROGRESS and r.corrupt and r.owner is None for r in results)
    warnings = [r for r in caplog.records if r.name == "smoke.strategies.idempotency" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    ttls = client.run(lambda r: [r.ttl(store.key(f"c{i}")) for i in range(3)], idempotent=True)
    assert all(0 < t <= 86400 for t in ttls), ttls  # fail closed, but never forever
    assert store.complete("c0", "anyone", {"x": 1}) is CompleteOutcome.CORRUPT
    assert store.release("c0", "anyone") is ReleaseOutcome.CORRUPT


def test_wait_timeout_must_stay_below_the_read_timeout(client: SentinelClient) -> None:
    with pytest.raises(ValueError):
        IdempotencyStore(client, wait_timeout_ms=5000)


def test_checks_fail_when_unconfirmed_passes_as_safe(ctx: CheckContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: a store that reports every claim as confirmed is caught."""

    class Careless(IdempotencyStore):
        def claim(self, request_id: str, payload: Any, owner: str | None = None) -> ClaimResult:
            result = super().claim(request_id, payload, owner)
            if result.outcome is Outcome.UNCONFIRMED:
                return ClaimResult(Outcome.CLAIMED, request_id, result.owner, result.replicas_acked)
            return result

    monkeypatch.setattr(idempotency_checks, "IdempotencyStore", Careless)
    item = next(c for c in CHECKS if c.name == "claim_confirmed_by_wait")
    result = run_check(item, ctx)
    assert not result.passed and "UNCONFIRMED" in result.detail


def test_record_without_ttl_gets_one(client: SentinelClient, store: IdempotencyStore) -> None:
    """A well-formed record written without a TTL (an old writer) replays and gets the 24 h TTL."""
    record = {"state": "completed", "owner": "o", "fp": fingerprint(payload("old")), "response": '{"ok":true}'}
    client.run(lambda r: r.set(store.key("old"), json.dumps(record)), idempotent=True)
    result = store.claim("old", payload("old"))
    assert result.outcome is Outcome.REPLAY and result.response == {"ok": True}
    assert 86390 < client.run(lambda r: r.ttl(store.key("old")), idempotent=True) <= 86400


def test_an_unconfirmed_completion_is_reported(client: SentinelClient, ctx: CheckContext) -> None:
    """Asking for more replicas than exist: the response is stored, but never reported as safe."""
    confirmed = IdempotencyStore(client, ctx.prefix)
    claim = confirmed.claim("req-complete", {"amount": 1})
    assert claim.outcome is Outcome.CLAIMED and claim.owner
    demanding = IdempotencyStore(client, ctx.prefix, min_replicas=3, wait_timeout_ms=100)
    assert demanding.complete("req-complete", claim.owner, {"ok": True}) is CompleteOutcome.UNCONFIRMED
    assert confirmed.complete("req-complete", claim.owner, {"ok": True}) is CompleteOutcome.ALREADY_COMPLETED
    assert confirmed.claim("req-complete", {"amount": 1}).outcome is Outcome.REPLAY


def test_complete_reloads_its_script_after_noscript_and_stores_once(
    store: IdempotencyStore, cluster: LoopbackCluster
) -> None:
    claim = store.claim("flushed", payload("flushed"))
    # A new master after a failover has an empty script cache: NOSCRIPT, then a reload and one run.
    with cluster.client(cluster.masters()[0]) as admin:
        admin.script_flush()
    assert store.complete("flushed", claim.owner or "", {"x": 2}) is CompleteOutcome.COMPLETED
    assert store.claim("flushed", payload("flushed")).response == {"x": 2}


# --- issue 15: ids that cannot be encoded, equal numbers in a retried payload


def test_a_request_id_that_cannot_be_encoded_never_shares_a_record(
    store: IdempotencyStore, client: SentinelClient
) -> None:
    """``pix-\\udc80`` used to be sent as ``pix-?`` and replayed that request's response: a
    distinct payment deduplicated. Now it is refused before anything is sent."""
    first = store.claim("pix-?", payload("pix-?"))
    assert store.complete("pix-?", first.owner or "", {"paid": "pix-?"}) is CompleteOutcome.COMPLETED
    for call in (
        lambda: store.claim("pix-\udc80", payload("pix-?")),
        lambda: store.complete("pix-\udc80", first.owner or "", {"paid": "other"}),
        lambda: store.release("pix-\udc80", first.owner or ""),
    ):
        with pytest.raises(ValueError, match=r"request id 'pix-\\udc80' cannot be encoded as UTF-8"):
            call()
    with pytest.raises(ValueError, match="owner"):
        store.claim("pix-ok", payload("pix-ok"), owner="o-\ud800")
    with pytest.raises(ValueError, match="payload"):
        store.claim("pix-ok", {"name": "\udc80"})
    assert store.claim("pix-?", payload("pix-?")).response == {"paid": "pix-?"}
    assert client.run(lambda r: r.exists(store.key("pix-ok")), idempotent=True) == 0


def test_a_retry_that_reserialises_an_amount_replays(store: IdempotencyStore) -> None:
    """``{"amount": 10}`` and ``{"amount": 10.0}`` are one request: the retry gets REPLAY, not a 422."""
    first = store.claim("amount", {"amount": 10, "fee": 0.0, "key": "a@b.c"})
    assert store.complete("amount", first.owner or "", {"ok": True}) is CompleteOutcome.COMPLETED
    retry = store.claim("amount", {"key": "a@b.c", "fee": -0.0, "amount": 10.0})
    assert retry.outcome is Outcome.REPLAY and retry.response == {"ok": True}
    assert store.claim("amount", {"amount": 10.01, "fee": 0, "key": "a@b.c"}).outcome is Outcome.MISMATCH
