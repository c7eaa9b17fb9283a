"""Claim-cache checks: each proves one property of :mod:`smoke.strategies.claims` on a live master.

Expiry is exercised with second-or-less TTLs passed to the constructor; the production defaults
(60 s claims, 5 s index slack) are checked as values, never waited for.
"""

from __future__ import annotations

import threading
import time
import uuid

from smoke.checks import CheckContext, check, expect
from smoke.checks.entry import (
    CountingClient,
    connection_still_works,
    exists,
    isolated,
    keys_under,
    plant_type,
    pttl,
    set_raw,
)
from smoke.strategies.claims import DEFAULT_TTL_MS, INDEX_KEY, Claim, ClaimCache, sample_claim


def new_id() -> str:
    return str(uuid.uuid4())


def _create(ctx: CheckContext, cache: ClaimCache, claim: Claim) -> object:
    return ctx.timed("claim.create", lambda: cache.create(claim))


def _list(ctx: CheckContext, cache: ClaimCache, entry_id: str) -> list[Claim]:
    return ctx.timed("claim.list", lambda: cache.list_for_entry(entry_id))  # type: ignore[return-value]


def _status(ctx: CheckContext, cache: ClaimCache, claim_id: str) -> str | None:
    return ctx.timed("claim.status", lambda: cache.status(claim_id))  # type: ignore[return-value]


@check("claim", "object_and_status_one_round_trip")
def object_and_status_one_round_trip(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    counting = CountingClient(ctx.client)
    cache = ClaimCache(counting, ctx.prefix)
    expect(cache.ttl_ms == DEFAULT_TTL_MS == 60_000, f"default claim TTL {cache.ttl_ms} ms, the contract says 60 s")
    entry_id = new_id()
    cache.create(sample_claim(new_id(), entry_id))  # loads the script (NOSCRIPT -> SCRIPT LOAD)
    cache.status(new_id())  # and the read script
    claim = sample_claim(new_id(), entry_id)
    _, cmds = counting.count(lambda: _create(ctx, cache, claim))
    expect(len(cmds) == 1, f"create took {len(cmds)} round trips: {cmds}")
    ttls = [pttl(ctx, cache.object_key(claim.id)), pttl(ctx, cache.status_key(claim.id))]
    expect(all(0 < t <= 60_000 for t in ttls), f"object/status PTTL {ttls}, expected (0, 60000]")
    # Compared as absolute expiry times: two PTTLs read in two round trips differ by the time between them.
    keys = (cache.object_key(claim.id), cache.status_key(claim.id))
    ends = ctx.client.run(lambda r: [r.pexpiretime(k) for k in keys], idempotent=True)
    expect(abs(ends[0] - ends[1]) <= 5, f"object and status expire apart: PEXPIRETIME {ends}")
    status, status_cmds = counting.count(lambda: _status(ctx, cache, claim.id))
    got = cache.get(claim.id)
    expect(status == claim.status and got == claim, f"read back status {status!r}, claim {got!r}")
    expect(len(status_cmds) == 1, f"status took {len(status_cmds)} round trips: {status_cmds}")
    return f"create = {len(cmds)} RTT ({cmds[0]}) writing object + status + index; status = 1 RTT; PTTL {ttls[0]} ms"


@check("claim", "status_reads_own_write")
def status_reads_own_write(ctx: CheckContext) -> str:
    """Decisions read the master: a status read right after an update never sees the old one (a
    replica read could, for the replication lag)."""
    ctx = isolated(ctx)
    cache = ClaimCache(ctx.client, ctx.prefix)
    claim = sample_claim(new_id(), new_id())
    statuses = ("OPEN", "WAITING_RESOLUTION", "CONFIRMED", "COMPLETED")
    stale = 0
    rounds = 25
    for i in range(rounds):
        status = statuses[i % len(statuses)]
        cache.update(Claim(**{**claim.__dict__, "status": status}))
        if _status(ctx, cache, claim.id) != status:
            stale += 1
    expect(stale == 0, f"{stale} of {rounds} status reads right after an update returned an older status")
    return f"{rounds} update-then-read pairs on the master, 0 stale reads"


@check("claim", "index_bounded_and_has_ttl")
def index_bounded_and_has_ttl(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    short = ClaimCache(ctx.client, ctx.prefix, ttl_ms=300, index_slack_ms=200)
    entry_id = new_id()
    index = short.index_key(entry_id)
    for _ in range(40):
        _create(ctx, short, sample_claim(new_id(), entry_id))
    ttl = pttl(ctx, index)
    expect(0 < ttl <= 300 + 200, f"index PTTL {ttl} after 40 creates, expected (0, 500]")
    size_full = int(ctx.client.run(lambda r: r.zcard(index), idempotent=True))
    time.sleep(0.35)
    result = _create(ctx, short, sample_claim(new_id(), entry_id))
    size_after = int(ctx.client.run(lambda r: r.zcard(index), idempotent=True))
    expect(size_after == 1, f"after the first 40 claims expired the index holds {size_after} ids, expected 1")
    expect(result.index_size == 1, f"create reported index size {result.index_size}")  # type: ignore[attr-defined]
    time.sleep(0.55)
    exists = ctx.client.run(lambda r: r.exists(index), idempotent=True)
    expect(exists == 0, f"the index outlived its last claim by more than the slack (exists={exists})")
    # The default cache keeps the index alive for its longest claim + slack, no longer.
    default = ClaimCache(ctx.client, ctx.prefix)
    other = new_id()
    default.create(sample_claim(new_id(), other))
    ttl_default = pttl(ctx, default.index_key(other))
    limit = DEFAULT_TTL_MS + default.index_slack_ms
    expect(DEFAULT_TTL_MS < ttl_default <= limit, f"default index PTTL {ttl_default}, expected (60000, {limit}]")
    return (
        f"40 claims -> {size_full} ids, PTTL {ttl} ms; pruned to 1 after expiry; gone after slack; "
        f"default index PTTL {ttl_default} ms"
    )


@check("claim", "listing_returns_only_live_claims")
def listing_returns_only_live_claims(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    counting = CountingClient(ctx.client)
    short = ClaimCache(counting, ctx.prefix, ttl_ms=300, index_slack_ms=200)
    long = ClaimCache(counting, ctx.prefix, ttl_ms=10_000, index_slack_ms=200)
    entry_id = new_id()
    dead = [sample_claim(new_id(), entry_id) for _ in range(3)]
    live = [sample_claim(new_id(), entry_id) for _ in range(3)]
    evicted = sample_claim(new_id(), entry_id)
    for c in dead:
        short.create(c)
    for c in [*live, evicted]:
        long.create(c)
    # A claim object gone before its index entry (eviction, a manual delete) is not listed either.
    ctx.client.run(lambda r: r.delete(long.object_key(evicted.id)), idempotent=True)
    time.sleep(0.35)
    long.list_for_entry(new_id())  # loads the script
    listed, cmds = counting.count(lambda: _list(ctx, long, entry_id))
    expect(len(cmds) == 1, f"list took {len(cmds)} round trips: {cmds}")
    got = sorted(c.id for c in listed)
    expect(got == sorted(c.id for c in live), f"listed {len(got)} claims {got}, expected the 3 live ones")
    expect(all(c in live for c in listed), "a listed claim differs from what was written")
    members = ctx.client.run(lambda r: r.zcard(long.index_key(entry_id)), idempotent=True)
    expect(members == len(live), f"after listing the index holds {members} ids, expected {len(live)}")
    return f"3 expired + 1 evicted + 3 live -> listed 3 in {len(cmds)} RTT ({cmds[0]}); index pruned to {members}"


@check("claim", "concurrent_creates_all_indexed")
def concurrent_creates_all_indexed(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    cache = ClaimCache(ctx.client, ctx.prefix)
    entry_id = new_id()
    claims = [sample_claim(new_id(), entry_id) for _ in range(20)]
    barrier = threading.Barrier(len(claims))
    errors: list[BaseException] = []

    def create(claim: Claim) -> None:
        try:
            barrier.wait(5)
            _create(ctx, cache, claim)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(c,)) for c in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    expect(not errors, f"creates failed: {errors[:2]}")
    listed = sorted(c.id for c in _list(ctx, cache, entry_id))
    expect(listed == sorted(c.id for c in claims), f"{len(listed)} of {len(claims)} concurrent creates listed")
    ttl = pttl(ctx, cache.index_key(entry_id))
    expect(0 < ttl <= DEFAULT_TTL_MS + cache.index_slack_ms, f"index PTTL {ttl} after concurrent creates")
    return f"{len(claims)} concurrent creates all listed; index PTTL {ttl} ms"


@check("claim", "corrupt_value_is_a_miss")
def corrupt_value_is_a_miss(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    cache = ClaimCache(ctx.client, ctx.prefix)
    entry_id = new_id()
    good = sample_claim(new_id(), entry_id)
    cache.create(good)
    bad_values = ("{not json", '{"id": 1}', "null", sample_claim(new_id(), entry_id).to_json(), b"\xff\xfe{")
    bad_ids = []
    for garbage in bad_values:
        bad = sample_claim(new_id(), entry_id)
        cache.create(bad)
        set_raw(ctx, cache.object_key(bad.id), garbage)
        bad_ids.append(bad.id)
    listed = [c.id for c in _list(ctx, cache, entry_id)]
    expect(listed == [good.id], f"listing with corrupt neighbours returned {listed}, expected only the good claim")
    for claim_id, garbage in zip(bad_ids, bad_values, strict=True):
        set_raw(ctx, cache.object_key(claim_id), garbage)  # again: the listing deleted it
        expect(cache.get(claim_id) is None, f"a corrupt claim {claim_id} ({garbage!r}) was returned")
        expect(not exists(ctx, cache.object_key(claim_id)), f"the corrupt value {garbage!r} was not deleted")
    for garbage in ("NOT_A_STATUS", b"\xff\xfe{"):
        status_key = cache.status_key(good.id)
        set_raw(ctx, status_key, garbage)
        expect(_status(ctx, cache, good.id) is None, f"the status {garbage!r} was returned")
        expect(not exists(ctx, status_key), f"the bad status {garbage!r} was kept")
    connection_still_works(ctx)
    cache.list_for_entry(entry_id)
    members = ctx.client.run(lambda r: r.zcard(cache.index_key(entry_id)), idempotent=True)
    expect(members == 1, f"the index still names {members} claims after the corrupt ones were dropped")
    kinds = wrong_types_are_misses(ctx, cache)
    return (
        f"{len(bad_values)} corrupt/foreign objects (1 not UTF-8) + 2 bad statuses read as misses and deleted; "
        f"index pruned; {kinds} keys of a wrong type replaced atomically"
    )


def wrong_types_are_misses(ctx: CheckContext, cache: ClaimCache) -> int:
    """A key of the wrong Redis type at the object, status or index key is deleted and read as a
    miss; a put over it writes all three keys (never object + status and then a WRONGTYPE)."""
    planted = 0
    # The seed's index: a SET without a TTL. The first put replaces it with the sorted set.
    entry_id = new_id()
    index = cache.index_key(entry_id)
    expect(index == f"{cache.prefix}{INDEX_KEY}{entry_id}", f"index key {index}")
    for kind in ("set", "hash", "list", "string"):
        plant_type(ctx, index, kind)
        claim = sample_claim(new_id(), entry_id)
        result = cache.put(claim)
        ttl = pttl(ctx, index)
        expect(result.index_size == 1, f"a put over a {kind} index reported size {result.index_size}")
        expect(cache.get(claim.id) == claim and cache.status(claim.id) == claim.status, f"put over a {kind} index")
        expect(0 < ttl <= cache.ttl_ms + cache.index_slack_ms, f"the index replacing a {kind} has PTTL {ttl}")
        cache.remove(claim)
        plant_type(ctx, index, kind)
        expect(cache.list_for_entry(entry_id) == [], f"listing a {kind} index returned claims")
        expect(not exists(ctx, index), f"a {kind} index survived a listing")
        plant_type(ctx, index, kind)
        expect(cache.remove(claim) == 0 and not exists(ctx, index), f"remove over a {kind} index")
        planted += 3
    for kind in ("hash", "list", "set", "zset"):
        claim = sample_claim(new_id(), entry_id)
        for key in (cache.object_key(claim.id), cache.status_key(claim.id)):
            plant_type(ctx, key, kind)
            read = cache.get(claim.id) if key == cache.object_key(claim.id) else cache.status(claim.id)
            expect(read is None and not exists(ctx, key), f"a {kind} at {key} read as {read!r}")
            plant_type(ctx, key, kind)
            cache.put(claim)
            expect(cache.get(claim.id) == claim, f"a put over a {kind} at {key} did not store the claim")
            planted += 2
        # A foreign-typed object behind a live index member: dropped from the listing and the index.
        plant_type(ctx, cache.object_key(claim.id), kind)
        listed = [c.id for c in cache.list_for_entry(entry_id)]
        expect(claim.id not in listed and not exists(ctx, cache.object_key(claim.id)), f"a {kind} object was listed")
        planted += 1
    connection_still_works(ctx)
    return planted


@check("claim", "every_key_has_ttl")
def every_key_has_ttl(ctx: CheckContext) -> str:
    ctx = isolated(ctx)
    cache = ClaimCache(ctx.client, ctx.prefix)
    entry_id = new_id()
    claims = [sample_claim(new_id(), entry_id) for _ in range(5)]
    for c in claims:
        cache.create(c)
    cache.update(Claim(**{**claims[0].__dict__, "status": "CONFIRMED"}))
    cache.remove(claims[1])
    cache.list_for_entry(entry_id)
    ttls = {key: pttl(ctx, key) for key in keys_under(ctx, "dict:claim:*")}
    immortal = sorted(k for k, t in ttls.items() if t == -1)
    expect(not immortal, f"keys without a TTL: {immortal}")
    expect(len(ttls) == 2 * 4 + 1, f"expected 4 objects, 4 statuses and 1 index, found {len(ttls)} keys")
    index = cache.index_key(entry_id)
    bounds = {k: DEFAULT_TTL_MS + (cache.index_slack_ms if k == index else 0) for k in ttls}
    over = {k: t for k, t in ttls.items() if t > bounds[k]}
    expect(not over, f"keys above their TTL bound (claims 60 s, index 60 s + slack): {over}")
    return f"{len(ttls)} claim keys all with a TTL (max {max(ttls.values())} ms, index {ttls[index]} ms)"
