"""A confirmation covers the write it confirms, on every server line.

Redis 7.2 (and Valkey 8.0, its fork) changed ``WAIT``: it waits for the replicas to reach the
*calling client's own last write*, not the master's offset. A retried operation whose script
finds its work already done and writes nothing would then be "confirmed" by a ``WAIT`` that
waited for nothing. Redis 7.0 sets every client's offset to the master's after each command,
which hides this; the drill runs on both lines.

The drill: claim (CLAIMED), stop both replicas (SIGSTOP: they stay connected and acknowledge
nothing), call ``complete()`` and kill its connection (``CLIENT KILL ID``) while its pipelined
``WAIT`` blocks. The client retries on a new connection; the record is completed by then.
Without the replicas' acknowledgement that answer must be UNCONFIRMED, never a confirmation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from smoke.local.rehearsal import LoopbackCluster, Node
from smoke.strategies.client import SentinelClient
from smoke.strategies.idempotency import CompleteOutcome, IdempotencyStore, Outcome

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]

KILL_WITHIN_S = 5.0  # how long the killer looks for the blocked WAIT before it gives up


@contextlib.contextmanager
def replicas_stopped(cluster: LoopbackCluster) -> Iterator[list[Node]]:
    """SIGSTOP every replica the rehearsal started, SIGCONT them again on exit (also on failure)."""
    (master,) = cluster.masters()
    replicas = [n for n in cluster.redis_nodes if n is not master and n.running]
    stopped: list[Node] = []
    try:
        for node in replicas:
            assert node.process is not None
            os.killpg(node.process.pid, signal.SIGSTOP)
            stopped.append(node)
        yield replicas
    finally:
        for node in stopped:
            assert node.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGCONT)


def kill_the_blocked_wait(cluster: LoopbackCluster, master: Node, killed: list[str]) -> None:
    """Find the application's connection blocked in WAIT on ``master`` and kill it, once."""
    deadline = time.monotonic() + KILL_WITHIN_S
    with cluster.client(master) as admin:
        while time.monotonic() < deadline and not killed:
            for entry in admin.client_list():
                # Blocked ("b") in WAIT: an idle connection whose last command was WAIT shows cmd=wait too.
                if entry.get("cmd") == "wait" and "b" in entry.get("flags", "") and entry.get("user") == "app":
                    admin.client_kill_filter(_id=entry["id"])
                    killed.append(entry["id"])
                    return
            time.sleep(0.005)


def evalsha_calls(cluster: LoopbackCluster, master: Node) -> int:
    """Scripts the master ran to the end (a NOSCRIPT answer, before the script is loaded, fails)."""
    with cluster.client(master) as admin:
        stats = admin.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)) - int(stats.get("failed_calls", 0))


def test_a_retried_complete_is_unconfirmed_while_no_replica_has_the_record(
    fresh_cluster: LoopbackCluster,
) -> None:
    cluster = fresh_cluster
    with SentinelClient(cluster.client_config()) as client:
        store = IdempotencyStore(client, f"smoke:confirm:{uuid.uuid4().hex[:8]}:")
        request_id = uuid.uuid4().hex
        claim = store.claim(request_id, {"amount": "10.00"})
        assert claim.outcome is Outcome.CLAIMED and claim.owner is not None
        # Load the completion script first: a NOSCRIPT round would put a WAIT of its own before
        # the completion, and the killer could catch that one instead.
        warm = store.claim(uuid.uuid4().hex, {"amount": "1.00"})
        assert warm.owner is not None
        assert store.complete(warm.request_id, warm.owner, {"status": "done"}) is CompleteOutcome.COMPLETED
        (master,) = cluster.masters()
        killed: list[str] = []
        scripts_before = evalsha_calls(cluster, master)
        with replicas_stopped(cluster):
            killer = threading.Thread(target=kill_the_blocked_wait, args=(cluster, master, killed))
            killer.start()
            try:
                outcome = store.complete(request_id, claim.owner, {"status": "done"})
            finally:
                killer.join(timeout=KILL_WITHIN_S + 1)
            assert killed, "the drill never saw complete()'s WAIT blocked: nothing was tested"
            # Two runs of the completion script: the first (its connection killed in WAIT), the retry.
            assert evalsha_calls(cluster, master) - scripts_before == 2, "complete() was not retried"
            # The retry found the record completed; no replica has it: not confirmed.
            assert outcome is CompleteOutcome.UNCONFIRMED, outcome
        cluster.wait_for("the replicas caught up again", cluster.converged, timeout=60)
        # Once the replicas have it, the same retry is a confirmation.
        assert store.complete(request_id, claim.owner, {"status": "done"}) is CompleteOutcome.ALREADY_COMPLETED


def test_a_retried_claim_rewrites_its_record_so_wait_covers_it(fresh_cluster: LoopbackCluster) -> None:
    """The claim's retry path (its own owner token found) rewrites the record: with no replica
    acknowledging, the retried claim is UNCONFIRMED, not CLAIMED."""
    cluster = fresh_cluster
    with SentinelClient(cluster.client_config()) as client:
        store = IdempotencyStore(client, f"smoke:confirm:{uuid.uuid4().hex[:8]}:")
        request_id = uuid.uuid4().hex
        first = store.claim(request_id, {"amount": "10.00"})
        assert first.outcome is Outcome.CLAIMED
        with replicas_stopped(cluster):
            # A fresh connection (the old one may hold an offset from the first claim).
            client.master.connection_pool.disconnect()
            retried = store.claim(request_id, {"amount": "10.00"}, owner=first.owner)
            assert retried.outcome is Outcome.UNCONFIRMED, retried
        cluster.wait_for("the replicas caught up again", cluster.converged, timeout=60)


def test_the_rewrite_of_a_retried_complete_keeps_the_record_and_its_remaining_ttl(cluster: LoopbackCluster) -> None:
    """The retry writes the completed record again: same bytes, the TTL it had left (never a
    fresh 24 h, never forever), on the master and on the replicas."""
    with SentinelClient(cluster.client_config()) as client:
        store = IdempotencyStore(client, f"smoke:confirm:{uuid.uuid4().hex[:8]}:")
        request_id = uuid.uuid4().hex
        claim = store.claim(request_id, {"amount": "10.00"})
        assert claim.owner is not None
        assert store.complete(request_id, claim.owner, {"status": "done"}) is CompleteOutcome.COMPLETED
        key = store.key(request_id)
        (master,) = cluster.masters()
        with cluster.client(master) as admin:
            before = admin.get(key)
            admin.pexpire(key, 5000)
            assert store.complete(request_id, claim.owner, {"status": "done"}) is CompleteOutcome.ALREADY_COMPLETED
            assert admin.get(key) == before
            assert 0 < admin.pttl(key) <= 5000
            expires_at = admin.pexpiretime(key)
        for replica in (n for n in cluster.redis_nodes if n is not master):
            with cluster.client(replica) as node:
                deadline = time.monotonic() + 5
                while node.pexpiretime(key) != expires_at:
                    assert time.monotonic() < deadline, "the replica did not get the rewrite's absolute expiry"
                    time.sleep(0.05)


@pytest.mark.default_server_line  # the rule is the client's; the servers' part is Sentinel's failover
def test_no_claim_confirmed_on_the_old_master_during_a_failover_is_lost_and_a_replica_cut_off_does_not_fence(
    fresh_cluster: LoopbackCluster,
) -> None:
    """The master-hang drill lost confirmed claims (185 and 470 in two runs at down-after 1.5 s):
    between the Sentinels' promotion of one replica and their re-pointing of the other (about
    1 s), the old master still had that other replica in sync, which acknowledged claims that the
    re-pointing then erased. Made likely here: claims go on to the old master (a client without
    the Sentinel watch, so its pool stays there) through a SENTINEL FAILOVER. With the old rule
    ("every replica in sync") one run of two lost 865 of 22,588 confirmed claims; the fence (the
    failover leader flags the promotion) makes them UNCONFIRMED. Then the other side of the fence: a replica cut off
    from the master alone (its masterauth wrong) is still this master's replica in every
    Sentinel's eyes, so claims stay confirmed by the replica left, as issue 16 asks."""
    cluster = fresh_cluster
    name = cluster.tier_master_name("state")
    (old,) = cluster.masters("state")
    with SentinelClient(cluster.client_config("state", watch_sentinels=False)) as state:
        store = IdempotencyStore(state, f"smoke:fence:{uuid.uuid4().hex[:8]}:")
        assert store.claim("warm", {"n": 0}).outcome is Outcome.CLAIMED
        confirmed: list[str] = []
        stop = threading.Event()

        def claims() -> None:
            n = 0
            while not stop.is_set() and n < 100_000:
                n += 1
                with contextlib.suppress(Exception):  # the failover's errors: only confirmations count
                    if store.claim(f"r-{n}", {"n": n}).outcome is Outcome.CLAIMED:
                        confirmed.append(f"r-{n}")

        writer = threading.Thread(target=claims, daemon=True)
        writer.start()
        try:
            time.sleep(0.5)
            with cluster.client(cluster.sentinels[0]) as sentinel:
                sentinel.execute_command("SENTINEL", "FAILOVER", name)
            cluster.wait_for("the old master demoted", lambda: cluster.role(old) == "slave", timeout=30)
            time.sleep(1.0)
        finally:
            stop.set()
            writer.join(timeout=30)
        cluster.wait_for("the state tier converged", lambda: cluster.converged("state"), timeout=60)
        (new,) = cluster.masters("state")
        assert new is not old and confirmed
        with cluster.client(new) as c:
            lost = [rid for rid in confirmed if not c.exists(store.key(rid))]
        assert lost == [], f"{len(lost)} of {len(confirmed)} confirmed claims lost"

        # The replica that stayed one (the Sentinels' INFO of the old master as a replica may be
        # up to 10 s away: until then they cannot vouch for whom it follows).
        cut = next(n for n in cluster.tier_nodes("state") if n is not new and n is not old)
        with cluster.client(cut) as c:
            c.config_set("masterauth", "not-the-password")
            c.client_kill_filter(_type="master")
        with cluster.client(new) as c:
            one_left = lambda: c.info("replication")["connected_slaves"] == 1  # noqa: E731
            cluster.wait_for("the master listing one replica", one_left, timeout=10)
        state.master.connection_pool.disconnect()
        after = store.claim("cut-off", {"n": -1})
        assert after.outcome is Outcome.CLAIMED and (after.replicas_acked, after.replicas_required) == (1, 1), after


@pytest.mark.default_server_line  # the fence is the client's
def test_a_hung_sentinel_costs_a_confirmed_claim_no_timeout_once_a_dead_replica_is_seen_down(
    fresh_cluster: LoopbackCluster,
) -> None:
    """With a replica dead, the fence asks the Sentinels whether it is down on every confirmed
    write. It asked a hung Sentinel too, one after another, so every claim waited out that
    Sentinel's timeout (0.5 s) while holding a connection, for as long as the hang lasted. Now a
    Sentinel that failed the roster's last round is not asked (a missing vote only ever refuses):
    the two that answer are a majority, and the claims are confirmed at their usual pace."""
    cluster = fresh_cluster
    name = cluster.tier_master_name("state")
    (master,) = cluster.masters("state")
    dead, alive = (n for n in cluster.tier_nodes("state") if n is not master)
    hung, *answering = cluster.sentinels
    config = cluster.client_config("state", watch_sentinels=False, watch_interval=0.2)
    with SentinelClient(config) as state:
        store = IdempotencyStore(state, f"smoke:hung-sentinel:{uuid.uuid4().hex[:8]}:")
        assert store.claim("warm", {"n": 0}).outcome is Outcome.CLAIMED
        cluster.kill_node(dead, signal.SIGKILL)
        cluster.pause_node(hung)
        try:

            def seen_down() -> bool:
                for sentinel in answering:
                    with cluster.client(sentinel) as s:
                        entry = next(r for r in s.sentinel_slaves(name) if f"{r['ip']}:{r['port']}" == dead.address)
                        if not entry.get("is_sdown"):
                            return False
                return hung.address in state._roster.silent()

            cluster.wait_for("the dead replica down for two Sentinels, the hung one silent", seen_down, timeout=15)
            started = time.monotonic()
            answers = [store.claim(f"r-{n}", {"n": n}) for n in range(10)]
            took = time.monotonic() - started
        finally:
            cluster.resume_node(hung)
    assert [a.outcome for a in answers] == [Outcome.CLAIMED] * 10
    assert all((a.replicas_acked, a.replicas_required) == (1, 1) for a in answers), answers
    assert alive.running
    # Asking the hung Sentinel cost each claim its timeout: 10 claims at least 5 s.
    assert took < 10 * config.sentinel_timeout / 2, took


def test_a_client_listing_one_sentinel_of_three_never_confirms_on_that_sentinels_word_alone(
    fresh_cluster: LoopbackCluster,
) -> None:
    """The fence confirms past a missing replica when a majority of the Sentinels see it down. It
    counted the majority over the addresses the client lists, so a client given one address of
    three took one Sentinel's view for a majority (a Sentinel cut off from a replica sees it down
    while the other two may be promoting it). It now counts every Sentinel any of them knows: the
    one-address client answers UNCONFIRMED where the client that lists all three confirms."""
    cluster = fresh_cluster
    name = cluster.tier_master_name("state")
    (master,) = cluster.masters("state")
    dead = next(n for n in cluster.tier_nodes("state") if n is not master)
    first = cluster.sentinels[0]
    quiet = {"watch_sentinels": False, "watch_interval": 0.2}
    full = cluster.client_config("state", **quiet)
    one = cluster.client_config("state", sentinels=[(first.host, first.port)], **quiet)
    prefix = f"smoke:one-sentinel:{uuid.uuid4().hex[:8]}:"
    with SentinelClient(full) as every, SentinelClient(one) as single:
        stores = {"all three": IdempotencyStore(every, prefix), "one": IdempotencyStore(single, prefix)}
        assert [s.claim(f"warm-{label}", {"n": 0}).outcome for label, s in stores.items()] == [Outcome.CLAIMED] * 2
        cluster.kill_node(dead, signal.SIGKILL)

        def seen_down() -> bool:
            for sentinel in cluster.sentinels:
                with cluster.client(sentinel) as s:
                    entry = next(r for r in s.sentinel_slaves(name) if f"{r['ip']}:{r['port']}" == dead.address)
                    if not entry.get("is_sdown"):
                        return False
            return True

        cluster.wait_for("the dead replica down for every Sentinel", seen_down, timeout=15)
        answers = {label: store.claim(f"after-{label}", {"n": 1}) for label, store in stores.items()}
    assert answers["all three"].outcome is Outcome.CLAIMED, answers
    assert answers["one"].outcome is Outcome.UNCONFIRMED, answers
