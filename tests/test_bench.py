"""The benchmark (``make bench``) at tiny sizes, so it cannot rot: layout of bench.json, sane figures,
and the bulk fill storing entries exactly as the entry cache does. The full run is not a test."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from smoke.bench import report
from smoke.bench.__main__ import Sizes, main, run_bench
from smoke.bench.dataset import entries, entry_json, fill_our_layout, realistic_entry
from smoke.local.rehearsal import LoopbackCluster
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import KEY_TYPES, EntryCache

OPERATIONS = {
    "entry.get_by_id", "entry.get_by_key", "entry.write", "entry.invalidate",
    "claim.create", "claim.status", "claim.list", "workflow.set", "workflow.get",
    "idempotency.claim", "idempotency.complete", "idempotency.replay", "ratelimit.check",
}  # fmt: skip
TINY = Sizes(
    samples=60,
    rounds=2,
    counted=20,
    memory_entries=400,
    growth_keys=(300, 1200),
    growth_samples=60,
    threads=(1, 4),
    throughput_seconds=0.3,
    exactness_attempts=20,
    failover_runs=1,
)


@pytest.mark.redis
def test_quick_bench_writes_the_issue_layout_with_sane_figures(fresh_cluster: LoopbackCluster, tmp_path: Path) -> None:
    document, extra = run_bench(fresh_cluster, TINY, say=lambda _: None)
    out = tmp_path / "bench.json"
    report.write(document, out)
    data = json.loads(out.read_text())

    assert list(data) == list(report.TOP_LEVEL)
    assert set(data["operations"]) == OPERATIONS
    for name, op in [*data["operations"].items(), *data["baseline"].items()]:
        assert list(op) == list(report.OPERATION_FIELDS), name
        assert 0 < op["p50_us"] <= op["p95_us"] <= op["p99_us"] < 1_000_000, (name, op)
        assert op["commands"] >= op["round_trips"] >= 1, (name, op)
    # Round trips are counted: one per operation (a WAIT-confirmed claim or completion pipelines
    # its script and its WAIT), two for an entry write or invalidation (the version marker on the
    # state tier, then the entry).
    trips = {name: op["round_trips"] for name, op in data["operations"].items()}
    two = {"entry.write", "entry.invalidate"}
    assert trips == {name: 2 if name in two else 1 for name in OPERATIONS}
    assert data["baseline"]["get"]["commands"] == data["baseline"]["setex"]["commands"] == 1
    # A Lua operation runs more than one command on the server (the script's own calls count).
    assert data["operations"]["entry.write"]["commands"] > 3

    memory = data["memory"]
    assert memory["entries"] == TINY.memory_entries
    assert 200 < memory["bytes_per_entry"] < 5000 and 200 < memory["seed_layout_bytes_per_entry"] < 5000

    points = data["growth"]["points"]
    assert [p["keys"] for p in points] == list(TINY.growth_keys)
    assert all(p["dbsize"] >= p["keys"] and p["entry.get_by_id"]["p50_us"] > 0 for p in points)

    exactness = data["concurrency"]["ratelimit_exactness"]
    assert exactness["clients"] == 8 and exactness["attempts"] > exactness["limit"]
    assert exactness["allowed"] == exactness["limit"] and exactness["exact"] is True
    assert [t["threads"] for t in data["concurrency"]["throughput"]] == list(TINY.threads)
    assert all(t["ops_per_second"] > 0 and t["errors"] == 0 for t in data["concurrency"]["throughput"])

    failover = data["failover"]
    assert failover["down_after_ms"] == 1000  # the dev stack's
    assert len(failover["outage_seconds"]) == 1 and 0 < failover["outage_seconds"][0] < 30
    assert failover["lost_confirmed_claims"] == 0
    assert extra["confirmed_claims"] > 0 and extra["plain_writes"] > 0

    # Per tier: the failover figures (SIGKILL of that tier's master) and the memory at the end.
    tiers = data["tiers"]
    assert set(tiers) == {"cache", "state"} and tiers["cache"]["failover"] == failover
    assert len(tiers["state"]["failover"]["outage_seconds"]) == 1
    assert tiers["state"]["failover"]["lost_confirmed_claims"] == 0
    policies = {tier: tiers[tier]["memory"]["maxmemory_policy"] for tier in tiers}
    assert policies == {"cache": "allkeys-lru", "state": "noeviction"}
    assert tiers["state"]["memory"]["evicted_keys"] == 0
    assert all(0 < tiers[t]["memory"]["used_memory_bytes"] < tiers[t]["memory"]["maxmemory_bytes"] for t in tiers)

    # The table judges every target of the issue.
    printed = report.table(data, extra)
    assert "targets:" in printed and printed.count("] ") >= 6


def test_entry_json_is_entry_to_json_byte_for_byte() -> None:
    batch = list(entries(5, 0, 200))
    assert {e.key_type for e in batch} == set(KEY_TYPES)
    assert all(entry_json(e) == e.to_json() for e in batch)
    # Realistic sizes: the payload is what memory per entry depends on.
    assert 280 < sum(len(e.to_json()) for e in batch) / len(batch) < 450


@pytest.mark.redis
def test_bulk_fill_stores_what_entry_write_stores(cluster: LoopbackCluster) -> None:
    entry = realistic_entry(random.Random(1), 3)
    with SentinelClient(cluster.client_config(min_idle=1)) as client:
        written, filled = EntryCache(client, "smoke:bench-a:"), EntryCache(client, "smoke:bench-b:")
        assert written.write(entry).outcome == "stored"
        assert client.run(lambda r: fill_our_layout(r, filled, [entry]), idempotent=True) == ["stored"]
        assert filled.get_by_key(entry.key_type, entry.key_value) == entry

        def layout(prefix: str) -> dict[str, tuple[str, object, bool]]:
            node = cluster.client(cluster.masters()[0])
            shape = {}
            for key in node.scan_iter(match=f"{prefix}*"):
                kind = node.type(key)
                value = node.get(key) if kind == "string" else node.hgetall(key)
                shape[key.removeprefix(prefix)] = (kind, value, 0 < node.pttl(key) <= written.ttl_ms)
            return shape

        assert layout("smoke:bench-a:") == layout("smoke:bench-b:")
        assert len(layout("smoke:bench-a:")) == 3  # entry, pointer, version marker


def test_cli_rejects_bad_sizes_naming_the_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--growth-keys", "10k,100k"])
    assert exit_info.value.code == 2
    assert "'10k,100k': give positive integers separated by commas" in capsys.readouterr().err


def test_cli_without_a_render_says_how_to_make_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--render-dir", str(tmp_path), "--out", str(tmp_path / "bench.json")]) == 1
    assert "make render" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


def test_layout_check_refuses_a_renamed_field() -> None:
    op = dict.fromkeys(report.OPERATION_FIELDS, 1.0)
    good = {
        "machine": {},
        "baseline": {"get": op, "setex": op},
        "operations": {"entry.get_by_id": op},
        "memory": {"entries": 1, "bytes_per_entry": 1.0, "seed_layout_bytes_per_entry": 2.0},
        "growth": {},
        "concurrency": {},
        "failover": {
            "down_after_ms": 1000,
            "outage_seconds": [1.0],
            "lost_plain_writes": 0,
            "lost_confirmed_claims": 0,
        },
        "tiers": {},
    }
    report.check_layout(good)
    renamed = {**good, "operations": {"entry.get_by_id": {**op, "p99": op["p99_us"]}}}
    with pytest.raises(ValueError, match=r"entry\.get_by_id"):
        report.check_layout(renamed)
    with pytest.raises(ValueError, match="top level"):
        report.check_layout({k: v for k, v in good.items() if k != "growth"})
