"""Version ordering is exact in every strategy that orders versions (issue 15, defect 2), as a
property against a real master: for any two versions in [0, 2^63 - 1] (drawn around 2^53, where
doubles stop holding every integer, and around nanosecond timestamps and 2^63), the newer one
wins whatever the order of the writes. Lua numbers are doubles; the scripts compare decimal
strings (length, then digits)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from smoke.bench.dataset import fill_our_layout
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import Entry, EntryCache, sample_entry
from smoke.strategies.workflow import WorkflowCache, WorkflowMetadata

# Hypothesis keeps caches in a .hypothesis/ folder; build/ is ignored by git and `make clean`.
set_hypothesis_home_dir(str(Path(__file__).resolve().parents[1] / "build" / "hypothesis"))

pytestmark = pytest.mark.redis

TOP = 2**63 - 1


def near(center: int, spread: int = 600) -> st.SearchStrategy[int]:
    return st.integers(min_value=max(0, center - spread), max_value=min(TOP, center + spread))


versions = (
    near(2**53)
    | near(1_732_000_000_000_000_000)  # a nanosecond commit timestamp
    | near(TOP)
    | near(10**15)  # where a decimal's digit count changes
    | st.integers(min_value=0, max_value=TOP)
)


@st.composite
def version_pairs(draw: st.DrawFn, low: int = 0) -> tuple[int, int]:
    """Two versions, half of the time a few apart (where doubles round them to one number)."""
    first = draw(versions.filter(lambda v: v >= low))
    if draw(st.booleans()):
        return first, draw(versions.filter(lambda v: v >= low))
    return first, min(TOP, max(low, first + draw(st.integers(min_value=-300, max_value=300))))


property_settings = settings(
    database=None, max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@property_settings
@given(version_pairs())
def test_entry_writes_keep_the_newest_version(client: SentinelClient, pair: tuple[int, int]) -> None:
    first, second = pair
    cache = EntryCache(client, f"smoke:versions:{uuid.uuid4().hex[:12]}:")
    a = sample_entry(str(uuid.uuid4()), first)
    b = sample_entry(a.id, second, a.key_value)
    assert cache.write(a).outcome == "stored"
    assert cache.write(b).outcome == ("stored" if second >= first else "stale")
    cached = cache.get_by_id(a.id)
    assert cached is not None and cached.version == max(first, second)
    # A committed version given to an invalidation is a floor, exactly.
    cache.invalidate(a.id, committed_version=second)
    assert cache.write(sample_entry(a.id, first, a.key_value)).outcome == ("stored" if first >= second else "stale")


@property_settings
@given(version_pairs())
def test_the_cache_tiers_own_guard_keeps_the_newest_version(client: SentinelClient, pair: tuple[int, int]) -> None:
    # The store step alone (no marker: the cache tier's guard, which catches a late store when the
    # state tier's step came first): the version is read from the head of the cached value
    # (layout E1) as text and compared exactly.
    first, second = pair
    cache = EntryCache(client, f"smoke:versions:{uuid.uuid4().hex[:12]}:")
    a = sample_entry(str(uuid.uuid4()), first)
    b = sample_entry(a.id, second, a.key_value)

    def store(entry: Entry) -> list[str]:
        return client.run(lambda r: fill_our_layout(r, cache, [entry], cache_tier_only=True), idempotent=True)

    assert store(a) == ["stored"]
    assert store(b) == ["stored" if second >= first else "stale"]
    cached = cache.get_by_id(a.id)
    assert cached is not None and cached.version == max(first, second)


@property_settings
@given(version_pairs(low=1))
def test_workflow_writes_keep_the_newest_version(client: SentinelClient, pair: tuple[int, int]) -> None:
    first, second = pair
    cache = WorkflowCache(client, f"smoke:versions:{uuid.uuid4().hex[:12]}:")
    meta = WorkflowMetadata("w", "ClaimWorkflow", "2025-10-25T12:00:00Z", "claim-w", "Validate")
    assert cache.set("w", first, f"S{first}", meta).applied
    result = cache.set("w", second, f"T{second}", meta)  # equal versions: other contents, not a retry
    assert result.applied == (second > first) and result.stored_version == max(first, second)
    state = cache.get("w")
    winner = f"T{second}" if second > first else f"S{first}"
    assert state is not None and state.version == max(first, second) and state.status == winner
