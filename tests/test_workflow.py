"""The workflow state strategy against a real topology: every registered check, plus direct tests."""

from __future__ import annotations

import logging
import threading
from unittest import mock

import pytest

import smoke.checks.workflow as workflow_checks
import smoke.strategies.workflow as workflow
from smoke.checks import REGISTRY, CheckContext, run_check
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import SentinelClient
from smoke.strategies.workflow import SetResult, WorkflowCache, WorkflowMetadata
from tests.support import count_round_trips

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]

CHECKS = [c for c in REGISTRY if c.strategy == "workflow"]


def metadata(wid: str, activity: str = "Validate") -> WorkflowMetadata:
    return WorkflowMetadata(wid, "ClaimWorkflow", "2025-10-25T12:00:00Z", f"claim-{wid}", activity)


def test_checks_registered() -> None:
    names = {c.name for c in CHECKS}
    assert {"status_and_metadata_ttls", "late_writer_never_regresses", "corrupt_value_is_a_miss"} <= names


def test_round_trips(client: SentinelClient, ctx: CheckContext) -> None:
    cache = WorkflowCache(client, ctx.prefix)
    cache.set("warm", 1, "OPEN", metadata("warm"))  # loads the script, opens a connection
    with count_round_trips() as calls:
        cache.set("w1", 1, "OPEN", metadata("w1"))
    assert calls[0] == 1
    with count_round_trips() as calls:
        state = cache.get("w1")
    assert calls[0] == 1 and state is not None and state.status == "OPEN"


def test_script_reloaded_after_flush(client: SentinelClient, ctx: CheckContext, cluster: LoopbackCluster) -> None:
    """A new master has an empty script cache (it is not replicated): NOSCRIPT loads it again.
    (The flush is an operator's command: the application user may not run SCRIPT FLUSH.)"""
    cache = WorkflowCache(client, ctx.prefix)
    for node in cluster.redis_nodes:
        with cluster.client(node) as admin:
            admin.script_flush()
    assert cache.set("w", 3, "OPEN", metadata("w")) == SetResult(True, 3, confirmed=True)


def test_late_writer_after_status_expired_for_real(client: SentinelClient, ctx: CheckContext) -> None:
    cache = WorkflowCache(client, ctx.prefix, status_ttl_s=1)
    assert cache.set("w", 5, "CONFIRMED", metadata("w", "Confirm")).applied
    client.run(lambda r: r.pexpire(cache.status_key("w"), 50), idempotent=True)
    threading.Event().wait(0.15)
    assert client.run(lambda r: r.exists(cache.status_key("w")), idempotent=True) == 0
    assert cache.set("w", 4, "OPEN", metadata("w")) == SetResult(False, 5)
    state = cache.get("w")
    assert state is not None and state.status is None and state.version == 5
    assert state.metadata == metadata("w", "Confirm")


def test_corrupt_values_do_not_crash_and_log_once(
    client: SentinelClient, ctx: CheckContext, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflow._log_corrupt, "warned", False)
    cache = WorkflowCache(client, ctx.prefix)
    for i in range(3):
        client.run(lambda r, i=i: r.set(cache.status_key(f"c{i}"), b"\xff\x00", ex=60), idempotent=True)
    with caplog.at_level(logging.DEBUG, logger="smoke.strategies.workflow"):
        assert [cache.get(f"c{i}") for i in range(3)] == [None, None, None]
    warnings = [r for r in caplog.records if r.name == "smoke.strategies.workflow" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert client.run(lambda r: r.exists(*[cache.status_key(f"c{i}") for i in range(3)]), idempotent=True) == 0


def test_corrupt_delete_spares_a_newer_value(client: SentinelClient, ctx: CheckContext) -> None:
    """The compare-and-delete removes only the corrupt bytes it read, never a value written since."""
    cache = WorkflowCache(client, ctx.prefix)
    key = cache.status_key("race")
    client.run(lambda r: r.set(key, "garbage", ex=60), idempotent=True)
    original = cache._decode

    def write_between(k: str, raw: bytes | None, parse: object) -> object:
        if raw is not None and k == key:
            client.run(lambda r: r.set(key, '{"status":"NEW","version":9}', ex=60), idempotent=True)
        return original(k, raw, parse)

    with mock.patch.object(cache, "_decode", write_between):
        cache.get("race")
    assert client.run(lambda r: r.get(key), idempotent=True) == '{"status":"NEW","version":9}'


def test_every_key_has_a_ttl(client: SentinelClient, ctx: CheckContext) -> None:
    cache = WorkflowCache(client, ctx.prefix)
    for v in range(1, 6):
        cache.set(f"w{v % 2}", v, f"S{v}", metadata(f"w{v % 2}"))
    ttls = client.run(lambda r: [r.ttl(k) for k in r.scan_iter(match=f"{ctx.prefix}*")], idempotent=True)
    assert len(ttls) == 4 and all(t > 0 for t in ttls)


def test_checks_fail_on_the_seed_design(ctx: CheckContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: with the seed's unguarded writes the late writer wins."""

    class SeedCache(WorkflowCache):
        def set(self, workflow_id: str, version: int, status: str, metadata: WorkflowMetadata) -> SetResult:
            key = self.status_key(workflow_id)
            value = f'{{"status":"{status}","version":{version}}}'
            self.client.run(lambda r: r.set(key, value, ex=30), idempotent=True)
            return SetResult(True, version, confirmed=True)

    monkeypatch.setattr(workflow_checks, "WorkflowCache", SeedCache)
    item = next(c for c in CHECKS if c.name == "late_writer_never_regresses")
    result = run_check(item, ctx)
    assert not result.passed and "late version 1" in result.detail


def test_version_validated(client: SentinelClient) -> None:
    cache = WorkflowCache(client, "x:")
    for bad in (0, -1, True, 2**63, 1.5, "7"):
        with pytest.raises(ValueError, match=r"version .*: an integer in \[1, 2\*\*63 - 1\]"):
            cache.set("w", bad, "OPEN", metadata("w"))  # type: ignore[arg-type]


# --- issue 15: versions above 2^53, ids that cannot be encoded


def test_versions_above_2_53_keep_their_order(client: SentinelClient, ctx: CheckContext) -> None:
    """Lua numbers are doubles (2^53 + 1 is 2^53 there): versions are compared exactly, up to
    2^63 - 1, so nanosecond timestamps work as versions."""
    cache = WorkflowCache(client, ctx.prefix)
    big = 2**53
    assert cache.set("w", big + 1, "CONFIRMED", metadata("w")).applied
    late = cache.set("w", big, "OPEN", metadata("w"))
    assert not late.applied and late.stored_version == big + 1
    state = cache.get("w")
    assert state is not None and state.version == big + 1 and state.status == "CONFIRMED"
    ns = 1_732_000_000_123_456_789
    assert cache.set("w", ns, "A", metadata("w")).applied
    assert not cache.set("w", ns - 1, "B", metadata("w")).applied
    assert cache.set("w", ns + 1, "C", metadata("w")) == SetResult(True, ns + 1, confirmed=True)
    # With the status expired, the metadata's copy of the version still decides, exactly.
    client.run(lambda r: r.delete(cache.status_key("w")), idempotent=True)
    assert cache.set("w", ns, "D", metadata("w")) == SetResult(False, ns + 1)
    assert cache.set("w", 2**63 - 1, "E", metadata("w")) == SetResult(True, 2**63 - 1, confirmed=True)


def test_a_workflow_id_that_cannot_be_encoded_is_refused(client: SentinelClient, ctx: CheckContext) -> None:
    cache = WorkflowCache(client, ctx.prefix)
    assert cache.set("w-?", 5, "CONFIRMED", metadata("w-?")).applied
    with pytest.raises(ValueError, match=r"workflow id 'w-\\udc80' cannot be encoded as UTF-8"):
        cache.set("w-\udc80", 9, "OPEN", metadata("w-?"))
    with pytest.raises(ValueError, match="workflow id"):
        cache.get("w-\udc80")
    state = cache.get("w-?")
    assert state is not None and state.version == 5 and state.status == "CONFIRMED"
