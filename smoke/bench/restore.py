"""Restore at scale: the backup drill (:mod:`smoke.drills.backup`) at the size production holds,
its seconds per phase and megabytes next to the seed's recovery time objective.

The drill runs on its own rehearsal (after the benchmark's has stopped) from a render of its
own: by default the prod stack's (``make bench`` renders it), whose ``maxmemory`` is what a
production dataset fills (2 GiB on the cache tier, 512 MiB on the state tier; the dev stack's
256 / 128 MiB would evict or refuse a dataset of a million keys). What is reported: the keys
written and restored and the mismatches (must be 0), the seconds of each phase (write, backup,
restore with its fetch / prepare / start-and-link steps per tier), each tier's RDB and
memory in MB with its share of ``maxmemory``, and the restore time against the seed's RTO for a
full cluster loss (30 minutes, docs/runbooks/full-cluster-loss.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from smoke.drills.backup import DrillReport, backup_scripts_from_render_dir, run_drill
from smoke.local.rehearsal import RenderedFiles

SEED_RTO_SECONDS = 30 * 60  # TSP-003: a full cluster loss restored within 30 minutes
MB = 1024 * 1024


def _mb(value: int) -> float:
    return round(value / MB, 1)


def summary(report: DrillReport) -> dict[str, Any]:
    """The drill's report as the ``restore_at_scale`` section of bench.json."""
    tiers = {}
    for name, tier in report.tiers.items():
        tiers[name] = {
            "keys": tier.keys,
            "mismatches": tier.mismatches,
            "rdb_mb": _mb(tier.rdb_bytes),
            "used_memory_mb": _mb(tier.used_memory_bytes),
            "maxmemory_mb": _mb(tier.maxmemory_bytes),
            "maxmemory_share": round(tier.used_memory_bytes / tier.maxmemory_bytes, 3)
            if tier.maxmemory_bytes
            else None,
            "backup_seconds": tier.backup_seconds,
            "restore_seconds": tier.restore_seconds,
            "restore_steps_seconds": tier.restore_steps_seconds,
        }
    return {
        "keys": report.keys_written,
        "keys_restored": report.keys_restored,
        "mismatches": report.mismatches,
        "server": report.server,
        "write_seconds": report.write_seconds,
        "backup_seconds": report.backup_seconds,
        "restore_seconds": report.restore_seconds,
        "rdb_mb": round(sum(t["rdb_mb"] for t in tiers.values()), 1),
        "rto_seconds": SEED_RTO_SECONDS,
        "restore_share_of_rto": round(report.restore_seconds / SEED_RTO_SECONDS, 4),
        "acl_denials": len(report.backup_acl_denials),
        "tiers": tiers,
    }


def measure_restore(render_dir: Path, keys: int, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The backup drill with ``keys`` keys on a rehearsal of ``render_dir`` (a render's k8s/)."""
    files = RenderedFiles.from_render_dir(render_dir)
    scripts = backup_scripts_from_render_dir(render_dir)
    return section(render_dir, run_drill(files, scripts, keys, say))


def section(render_dir: Path, report: DrillReport) -> dict[str, Any]:
    """The ``restore_at_scale`` section of bench.json for a drill run on ``render_dir``."""
    return {"render": str(render_dir), **summary(report)}
