"""`make drill-backup` end to end: 100k keys on both tiers through backup.sh, a full loss and restore.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smoke.bench import report as bench_report
from smoke.bench import restore
from smoke.drills.backup import ROOT, DrillReport, TierReport, main
from smoke.local.moto_s3 import moto_s3
from tests.support import require_redis_binaries

pytestmark = pytest.mark.redis


def test_the_drill_restores_every_key_value_and_ttl_of_both_tiers_after_a_full_cluster_loss(
    dev_render_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_redis_binaries()
    report_path = tmp_path / "drill-backup.json"
    code = main(["--render-dir", str(dev_render_dir / "k8s"), "--report", str(report_path)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    report = json.loads(report_path.read_text())
    assert json.loads(printed.out) == report  # printed as written
    assert report["keys_written"] >= 100_000
    assert report["keys_restored"] == report["keys_written"] and report["mismatches"] == 0
    assert report["mismatch_samples"] == []
    assert set(report["keys_by_strategy"]) == {
        "entries",
        "entry-markers",
        "claims",
        "workflow",
        "idempotency",
        "ratelimit",
    }
    assert report["backup_acl_denials"] == []  # the ACL user `backup` had every command it sent
    assert report["backup_seconds"] > 0 and report["restore_seconds"] > 0
    # Both tiers: each with its own keys (the decisions on the state tier), backed up from a
    # replica under its own prefix, restored (state first) and compared key by key.
    assert report["restore_order"] == ["state", "cache"]
    tiers = report["tiers"]
    assert set(tiers) == {"cache", "state"}
    by_strategy = report["keys_by_strategy"]
    expected = {
        "cache": by_strategy["entries"] + by_strategy["claims"],
        "state": by_strategy["entry-markers"]
        + by_strategy["workflow"]
        + by_strategy["idempotency"]
        + by_strategy["ratelimit"],
    }
    for tier, figures in tiers.items():
        assert figures["keys"] == expected[tier] > 0, tier
        assert figures["keys_restored"] == figures["keys"] and figures["mismatches"] == 0, tier
        assert figures["replicas_keys"] == [figures["keys"]] * 2, tier
        assert figures["backup_source"].startswith("replica "), tier
        assert figures["backup_key"].startswith(f"redis/dev/{tier}/"), tier
        assert figures["backup_seconds"] > 0 and figures["restore_seconds"] > 0, tier
        assert set(figures["restore_steps_seconds"]) == {"fetch", "prepare", "start_and_link"}, tier
    assert tiers["state"]["backup_source"].split()[1].startswith("127.")  # one of the state pods
    assert sum(t["keys"] for t in tiers.values()) == report["keys_written"]
    assert len(report["data_dirs_destroyed"]) == 9  # 3 cache + 3 state data nodes + 3 Sentinels
    assert {f"redis-state-{i}" for i in range(3)} <= set(report["data_dirs_destroyed"])
    # Each phase is announced on stderr as it starts, in order (stdout is the report).
    phases = [line.split(":")[1].strip() for line in printed.err.splitlines() if line.startswith("backup drill: ")]
    assert phases[:2] == ["start", "start"] and "dataset" in phases and phases[-1] == "restore", printed.err
    assert phases.index("dataset") < phases.index("backup") < phases.index("restore")
    restoring = [line for line in printed.err.splitlines() if line.startswith("backup drill: restore: the ")]
    assert [line.split()[4] for line in restoring[:2]] == ["state", "cache"], printed.err

    # The same report as make bench's restore_at_scale section: phases, megabytes and the RTO.
    drill = DrillReport(**{**report, "tiers": {k: TierReport(**v) for k, v in report["tiers"].items()}})
    section = restore.section(dev_render_dir / "k8s", drill)
    assert tuple(section) == bench_report.RESTORE_FIELDS
    assert section["keys"] == section["keys_restored"] == report["keys_written"] and section["mismatches"] == 0
    assert section["acl_denials"] == 0 and section["rto_seconds"] == 1800
    assert 0 < section["restore_seconds"] < section["rto_seconds"]
    for tier, figures in section["tiers"].items():
        assert figures["rdb_mb"] > 0 and figures["used_memory_mb"] > 0, tier
        assert 0 < figures["maxmemory_share"] < 1, tier
    assert section["tiers"]["cache"]["maxmemory_mb"] == 256.0  # the dev stack's (512 MiB limit x 0.5)


# --- the command line: bad arguments are refused before anything starts ---------------------------


def drill(*args: str) -> subprocess.CompletedProcess[str]:
    # A wide terminal: argparse wraps --help at $COLUMNS, and a long checkout path would split a default.
    return subprocess.run(
        [sys.executable, "-m", "smoke.drills.backup", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "1000"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("keys", "why"), [("0", "0: must be at least 1"), ("-5", "-5: must be at least 1"),
                                           ("many", "'many': not a whole number")])  # fmt: skip
def test_a_key_count_below_one_is_a_usage_error(keys: str, why: str) -> None:
    result = drill("--keys", keys)
    assert result.returncode == 2
    assert f"argument --keys: {why}" in result.stderr and "Traceback" not in result.stderr


def test_a_report_path_that_cannot_be_written_is_refused_before_the_drill(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = drill("--render-dir", str(tmp_path), "--report", str(blocker / "drill.json"))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"backup drill: --report {blocker / 'drill.json'}: {blocker} is a file, not a directory"
    )


def test_help_shows_the_defaults() -> None:
    result = drill("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "(default: 100000)" in text and "(default: " + str(ROOT / "build") in text


def test_each_s3_stand_in_starts_empty_even_in_one_process() -> None:
    """moto keeps its state process-wide: a second stand-in in the same process (the bench's
    restore at scale after a drill) must not find the first one's bucket or objects."""
    with moto_s3() as first:
        first.client().put_object(Bucket=first.bucket, Key="old/dump.rdb", Body=b"x")
    with moto_s3() as second:
        assert second.client().list_objects_v2(Bucket=second.bucket).get("KeyCount") == 0
