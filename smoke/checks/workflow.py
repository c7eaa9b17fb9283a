"""Checks of the workflow state strategy (smoke/strategies/workflow.py): TTLs, the version guard, corrupt values."""

from __future__ import annotations

import random
import threading
import uuid
from typing import cast

from smoke.checks import CheckContext, check, expect
from smoke.strategies.workflow import (
    METADATA_TTL_S,
    STATUS_TTL_S,
    SetResult,
    WorkflowCache,
    WorkflowMetadata,
    WorkflowState,
)

STRATEGY = "workflow"


def _metadata(workflow_id: str, activity: str) -> WorkflowMetadata:
    return WorkflowMetadata(
        workflow_id=workflow_id,
        workflow_type="ClaimWorkflow",
        started_at="2025-10-25T12:00:00Z",
        claim_id=f"claim-{workflow_id}",
        current_activity=activity,
    )


def _set(ctx: CheckContext, cache: WorkflowCache, workflow_id: str, version: int, status: str) -> SetResult:
    return cast(
        SetResult,
        ctx.timed("workflow.set", lambda: cache.set(workflow_id, version, status, _metadata(workflow_id, status))),
    )


def _get(ctx: CheckContext, cache: WorkflowCache, workflow_id: str) -> WorkflowState | None:
    return cast("WorkflowState | None", ctx.timed("workflow.get", lambda: cache.get(workflow_id)))


@check(STRATEGY, "status_and_metadata_ttls")
def status_and_metadata_ttls(ctx: CheckContext) -> str:
    cache = WorkflowCache(ctx.state, ctx.prefix)
    wid = uuid.uuid4().hex
    expect(_set(ctx, cache, wid, 1, "OPEN").applied, "the first write (version 1) was not applied")
    status_ttl, metadata_ttl = ctx.state.run(
        lambda r: (r.ttl(cache.status_key(wid)), r.ttl(cache.metadata_key(wid))), idempotent=True
    )
    expect(0 < status_ttl <= STATUS_TTL_S, f"status TTL {status_ttl} s, expected in (0, {STATUS_TTL_S}]")
    expect(
        METADATA_TTL_S - 5 < metadata_ttl <= METADATA_TTL_S,
        f"metadata TTL {metadata_ttl} s, expected in ({METADATA_TTL_S - 5}, {METADATA_TTL_S}]",
    )
    state = _get(ctx, cache, wid)
    expect(
        state == WorkflowState(wid, 1, "OPEN", _metadata(wid, "OPEN")),
        f"read back {state}, expected status OPEN version 1 with its metadata",
    )
    return f"status TTL {status_ttl} s, metadata TTL {metadata_ttl} s, read back in one MGET"


@check(STRATEGY, "late_writer_never_regresses")
def late_writer_never_regresses(ctx: CheckContext) -> str:
    cache = WorkflowCache(ctx.state, ctx.prefix)
    wid = uuid.uuid4().hex
    _set(ctx, cache, wid, 2, "CONFIRMED")
    late = _set(ctx, cache, wid, 1, "OPEN")
    expect(not late.applied and late.stored_version == 2, f"late version 1 after 2: {late}")
    same = _set(ctx, cache, wid, 2, "OPEN")
    expect(not same.applied, "a second write of version 2 was applied over the first")
    state = _get(ctx, cache, wid)
    expect(state is not None and state.status == "CONFIRMED", f"status after late writes: {state}")
    # The status expires after 30 s; the version must survive in the metadata. Expire it now.
    ctx.state.run(lambda r: r.delete(cache.status_key(wid)), idempotent=True)
    after_expiry = _set(ctx, cache, wid, 1, "OPEN")
    expect(not after_expiry.applied, "a late version 1 was applied after the status expired (version lost)")
    # Writers racing in random order: the newest version must win.
    wid2 = uuid.uuid4().hex
    versions = list(range(1, 41))
    random.shuffle(versions)
    threads = [
        threading.Thread(target=_set, args=(ctx, cache, wid2, v, f"S{v}")) for v in versions
    ]  # 40 writers, one version each
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = _get(ctx, cache, wid2)
    expect(
        final is not None and final.version == 40 and final.status == "S40",
        f"after 40 writers in random order: {final}, expected version 40",
    )
    return "v1 after v2 rejected (also after the status expired); 40 racing writers left v40"


@check(STRATEGY, "corrupt_value_is_a_miss")
def corrupt_value_is_a_miss(ctx: CheckContext) -> str:
    cache = WorkflowCache(ctx.state, ctx.prefix)
    seen = []
    for label, status_raw, metadata_raw in (
        ("not JSON", b"not json", b"\xff\xfe\x00"),
        ("wrong shape", b'{"status": 5}', b'{"workflow_id": 1, "version": "x"}'),
        ("JSON array", b"[1, 2]", b"null"),
    ):
        wid = uuid.uuid4().hex
        skey, mkey = cache.status_key(wid), cache.metadata_key(wid)
        ctx.state.run(
            lambda r, s=skey, m=mkey, a=status_raw, b=metadata_raw: (r.set(s, a, ex=60), r.set(m, b, ex=60)),
            idempotent=True,
        )
        state = _get(ctx, cache, wid)
        expect(state is None, f"{label}: read {state}, expected a miss")
        left = ctx.state.run(lambda r, s=skey, m=mkey: r.exists(s, m), idempotent=True)
        expect(left == 0, f"{label}: {left} corrupt key(s) left after the read, expected them deleted")
        seen.append(label)
    # A key of another Redis type: a miss on read, replaced by the next write.
    wid = uuid.uuid4().hex
    ctx.state.run(
        lambda r: r.hset(cache.status_key(wid), "x", "y") and r.expire(cache.status_key(wid), 60), idempotent=True
    )
    expect(_get(ctx, cache, wid) is None, "a hash at the status key was not read as a miss")
    expect(_set(ctx, cache, wid, 1, "OPEN").applied, "a write over a hash at the status key was refused")
    state = _get(ctx, cache, wid)
    expect(state is not None and state.status == "OPEN", f"after the repairing write: {state}")
    return f"{', '.join(seen)} and a hash read as misses and deleted; a write repairs a wrong type"
