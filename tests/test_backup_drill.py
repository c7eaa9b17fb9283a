"""`make drill-backup` end to end: 100k keys through backup.sh, a full loss and restore.sh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoke.drills.backup import main
from tests.support import require_redis_binaries

pytestmark = pytest.mark.redis


def test_the_drill_restores_every_key_value_and_ttl_after_a_full_cluster_loss(
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
    assert report["replicas_keys"] == [report["keys_written"]] * 2
    assert set(report["keys_by_strategy"]) == {"entries", "claims", "workflow", "idempotency", "ratelimit"}
    assert report["backup_source"].startswith("replica ")
    assert report["backup_acl_denials"] == []  # the ACL user `backup` had every command it sent
    assert len(report["data_dirs_destroyed"]) == 6
    assert report["backup_seconds"] > 0 and report["restore_seconds"] > 0
