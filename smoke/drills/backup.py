"""The backup drill: a full cluster loss on the rehearsal, both data tiers recovered from S3 backups.

``python -m smoke.drills.backup`` (``make drill-backup``):

1. start the dev stack's rendered files on loopback (:class:`smoke.local.rehearsal.LoopbackCluster`:
   the cache tier, the state tier and the Sentinels) and moto's S3 with a prod-like bucket
   (:mod:`smoke.local.moto_s3`);
2. write a known dataset (>= 100k keys shaped like the five strategies, built with their own key
   builders, every key with a TTL), each key on the tier it lives on: entries and claims on the
   cache, workflow status/metadata, idempotency records and rate-limit counters on the state
   tier; record each key's value and absolute expiry;
3. run the rendered ``backup.sh`` (the CronJob's script) once per tier, state first, as the pod's
   containers do (``BACKUP_TIER``, ``MASTER_NAME``, the tier's pods): the ACL user ``backup``
   and the Sentinels' password from the stand-in Secret; the data nodes' ACL logs must show
   nothing refused;
4. kill every process and delete every data directory, both tiers and the Sentinels;
5. restore the state tier first, then the cache (the runbook's order): per tier the rendered
   ``restore.sh fetch <tier>`` + ``restore.sh prepare <tier>`` into its pod 0's data directory,
   then its pods started as Kubernetes would until its replicas are linked; then the Sentinels;
6. compare every key on both tiers: value, type, absolute expiry (``PEXPIRETIME``, kept exactly
   by RDB) and a remaining TTL in (0, the TTL it was written with];
7. write ``build/drill-backup.json`` (totals, and per tier under ``tiers``) and print it; exit 1
   on any mismatch.

Each phase is announced on stderr as it starts (the report goes to stdout). Bad arguments (a
``--keys`` below 1, a ``--report`` that cannot be written) exit 2 before anything starts.

TTLs: the strategies' own TTLs, except that none is shorter than ``MIN_TTL_S``: a 30 s workflow
status or a 60 s rate-limit window would expire during the drill, and expiry is not loss.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
import yaml

from components.backup import BACKUP_ORDER
from components.renderers.scripts import BACKUP_SCRIPTS
from smoke.drills.checkers import DatasetRestored
from smoke.drills.drill import Drill
from smoke.drills.faults import FullClusterLoss
from smoke.drills.workload import Dataset, strategy_dataset, wait_replicated
from smoke.local.moto_s3 import MotoS3, moto_s3
from smoke.local.rehearsal import LoopbackCluster, Node, RehearsalError, RenderedFiles
from smoke.strategies.client import SentinelClient

ROOT = Path(__file__).resolve().parents[2]
MIN_TTL_S = 900
# Keys written per unit (one entry with its claim, workflow, idempotency record and counter).
KEYS_PER_UNIT = 10
# Which tier each strategy's keys live on (components/acl.py TIER_KEY_PREFIXES): the decisions on
# the state tier, the rest on the cache.
STRATEGY_TIER = {
    "entries": "cache",
    "entry-markers": "state",
    "claims": "cache",
    "workflow": "state",
    "idempotency": "state",
    "ratelimit": "state",
}
# Seconds the restored tiers and the Sentinels get to come back.
RESTORE_TIMEOUT_S = 120.0


class DrillError(RuntimeError):
    """A step of the drill failed; the message names the step and the script's own error."""


# --- the rendered backup scripts -----------------------------------------------------------------


def backup_scripts_from_render_dir(k8s_dir: Path) -> dict[str, str]:
    """The backup ConfigMap's scripts as ``make render`` wrote them."""
    path = k8s_dir / "configmap-redis-backup-scripts.yaml"
    if not path.exists():
        raise RehearsalError(f"{path} is missing: the stack must have backup.enabled (run 'make render STACK=dev')")
    data = yaml.safe_load(path.read_text())["data"]
    return {name: data[name] for name in BACKUP_SCRIPTS}


@dataclass
class BackupRunner:
    """Runs backup.sh / restore.sh under busybox sh with the rehearsal's addresses and the bucket."""

    cluster: LoopbackCluster
    s3: MotoS3
    scripts: dict[str, str]
    scratch: Path = field(init=False)

    def __post_init__(self) -> None:
        self.dir = self.cluster.workdir / "backup-scripts"
        self.dir.mkdir(exist_ok=True)
        for name, text in self.scripts.items():
            (self.dir / name).write_text(text)
        self.scratch = self.cluster.workdir / "backup-scratch"

    def env(self, tier: str = "cache", **extra: str) -> dict[str, str]:
        """The environment of the pod's containers for one ``tier``, as the CronJob gives it: the
        tier (``BACKUP_TIER``), its Sentinel master name and pods, the Sentinels, the mounted
        Secret's directory (the scripts' own defaults pick the ``backup`` user's and the
        Sentinels' files in it), TLS on or off with the CA as the cluster runs, and the tier's
        redis.conf for ``restore.sh prepare``."""
        common = self.cluster.tier_nodes(tier)[0].env
        python_bin = str(Path(sys.executable).parent)  # the venv's `aws`
        return {
            "PATH": f"{common['PATH']}:{python_bin}",
            "HOME": str(self.cluster.workdir),
            "BACKUP_TIER": tier,
            "SENTINEL_ADDRS": common["SENTINEL_ADDRS"],
            "SENTINEL_MONITORS": common["SENTINEL_MONITORS"],
            "REDIS_ADDRS": common["REDIS_ADDRS"],
            "REDIS_SEED_HOST": common["REDIS_SEED_HOST"],
            "MASTER_NAME": common["MASTER_NAME"],
            "SERVER_LINE": common["SERVER_LINE"],
            "AUTH_DIR": common["AUTH_DIR"],
            "REDIS_TLS": common["REDIS_TLS"],
            "TLS_DIR": common["TLS_DIR"],
            "REDIS_CONFIG_TEMPLATE": common.get("REDIS_CONFIG_TEMPLATE", str(self.cluster.workdir / "etc/redis.conf")),
            "BACKUP_DIR": str(self.scratch),
            **self.s3.env(),
            **extra,
        }

    def run(
        self, script: str, *args: str, timeout: float = 300, tier: str = "cache", **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """One script with ``tier``'s environment (``extra`` overrides any variable)."""
        return subprocess.run(
            ["busybox", "sh", str(self.dir / script), *args],
            env=self.env(tier, **extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def checked(self, script: str, *args: str, tier: str = "cache", **extra: str) -> str:
        """Run a script; raise :class:`DrillError` with its log when it fails; return its last line."""
        done = self.run(script, *args, tier=tier, **extra)
        if done.returncode != 0:
            raise DrillError(f"{script} {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


# --- the drill: a dataset x a full cluster loss after the last backup x every key restored -------


class BackupProcedure:
    """The two halves under test, as an operator runs them: ``take()`` is the CronJob's run
    (``backup.sh all`` per tier, state first; ACL logs checked for refusals), ``restore()`` the
    runbook's, state tier first: per tier ``restore.sh fetch <tier>`` + ``restore.sh prepare
    <tier>`` into its pod 0's data directory and its pods started as Kubernetes would, then the
    Sentinels. Each records its figures, in total and per tier."""

    def __init__(
        self, cluster: LoopbackCluster, runner: BackupRunner, say: Callable[[str], None] = lambda _: None
    ) -> None:
        self.cluster, self.runner, self.say = cluster, runner, say
        self.tiers = [tier for tier in BACKUP_ORDER if tier in cluster.tiers]
        self.keys: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.tier_seconds: dict[str, dict[str, float]] = {tier: {} for tier in self.tiers}
        self.acl_denials: list[str] = []

    def take(self) -> None:
        for node in self.cluster.data_nodes:
            with self.cluster.client(node) as admin:
                admin.execute_command("ACL", "LOG", "RESET")
        started = time.monotonic()
        for tier in self.tiers:
            self.say(f"backup: running the rendered backup.sh all for the {tier} tier as the ACL user backup")
            began = time.monotonic()
            self.keys[tier] = self.runner.checked("backup.sh", "all", tier=tier)
            self.tier_seconds[tier]["backup"] = time.monotonic() - began
        self.seconds["backup"] = time.monotonic() - started
        # The dump ran as the ACL user `backup`: anything it was refused shows in the ACL logs.
        for node in self.cluster.data_nodes:
            with self.cluster.client(node) as admin:
                log = admin.acl_log()
                self.acl_denials += [f"{node.name}: {e['username']} {e['reason']} {e['object']}" for e in log]
        shutil.rmtree(self.runner.scratch, ignore_errors=True)
        stored = ", ".join(f"{tier} {self.keys[tier]}" for tier in self.tiers)
        self.say(
            f"backup: {stored} uploaded in {self.seconds['backup']:.1f} s; full cluster loss: killing every "
            "process and deleting every data directory of both tiers and the Sentinels"
        )

    def _linked(self, tier: str) -> bool:
        """One master on the tier and every other pod of it a replica with its link up."""
        try:
            masters = self.cluster.masters(tier)
            if len(masters) != 1:
                return False
            replicas = [n for n in self.cluster.tier_nodes(tier) if n is not masters[0]]
            return all(self.cluster.replication(n).get("master_link_status") == "up" for n in replicas)
        except redis.RedisError:
            return False

    def _restore_tier(self, tier: str) -> None:
        seconds = self.tier_seconds[tier]
        nodes: list[Node] = self.cluster.tier_nodes(tier)
        self.say(
            f"restore: the {tier} tier: restore.sh fetch {tier} latest + prepare into {nodes[0].name}'s data directory"
        )
        started = time.monotonic()
        target = nodes[0].workdir / "data"
        target.mkdir(parents=True)
        self.runner.checked("restore.sh", "fetch", tier, "latest", str(target), tier=tier)
        seconds["fetch"] = time.monotonic() - started
        self.runner.checked("restore.sh", "prepare", tier, str(target), tier=tier)
        seconds["prepare"] = time.monotonic() - started - seconds["fetch"]
        # Pod 0 finds no Sentinel and no master: it starts as master on the restored data, the
        # others as its replicas (one Sentinel query each: none is up yet).
        for node in nodes:
            self.cluster.start_node(node, extra_env={"SENTINEL_QUERY_ATTEMPTS": "1"})
        self.cluster.wait_for(f"the {tier} tier's replicas linked", lambda: self._linked(tier), RESTORE_TIMEOUT_S)
        seconds["restore"] = time.monotonic() - started
        seconds["start_and_link"] = seconds["restore"] - seconds["fetch"] - seconds["prepare"]

    def restore(self) -> None:
        """State first (the decisions: the applications may take traffic once it is back; the
        cache may even start empty), then the cache, then the Sentinels."""
        started = time.monotonic()
        try:
            for tier in self.tiers:
                self._restore_tier(tier)
            self.say("restore: both tiers up; starting the Sentinels")
            for node in self.cluster.sentinels:
                self.cluster.start_node(node)
            self.cluster.wait_for("the Sentinels agreeing on both tiers", self.cluster.converged, RESTORE_TIMEOUT_S)
        except BaseException:
            self.cluster.stop()
            raise
        self.seconds["restore"] = time.monotonic() - started
        self.say(f"restore: the topology is back after {self.seconds['restore']:.1f} s; comparing every key")


@dataclass
class TierReport:
    """One tier's figures: its keys, its backup and its restore."""

    keys: int
    keys_restored: int
    mismatches: int
    backup_seconds: float
    restore_seconds: float
    replicas_keys: list[int]
    rdb_bytes: int
    backup_key: str
    backup_source: str
    restore_steps_seconds: dict[str, float]
    # The restored master's memory (INFO memory) and its maxmemory: how much of the tier the
    # dataset fills.
    used_memory_bytes: int = 0
    maxmemory_bytes: int = 0


@dataclass
class DrillReport:
    # Totals over both tiers; each tier's own figures under ``tiers``.
    keys_written: int
    keys_restored: int
    mismatches: int
    backup_seconds: float
    restore_seconds: float
    keys_by_strategy: dict[str, int]
    # The tiers in the order they were restored (state first).
    restore_order: list[str]
    tiers: dict[str, TierReport]
    write_seconds: float
    server: str  # what the masters run: "valkey 8.0.1", "redis 7.0.15"
    mismatch_samples: list[str]
    data_dirs_destroyed: list[str]
    # ACL log entries on the data nodes during the backup (user, reason, command): none expected.
    backup_acl_denials: list[str]

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.keys_restored == self.keys_written and not self.backup_acl_denials


def run_drill(
    files: RenderedFiles, scripts: dict[str, str], keys: int, say: Callable[[str], None] = lambda _: None
) -> DrillReport:
    """The drill; ``say`` hears each phase as it starts."""
    units = -(-keys // KEYS_PER_UNIT)
    say("start: moto's S3 and the rendered stack on loopback")
    with moto_s3() as s3, LoopbackCluster(files) as cluster:
        if "state" not in cluster.tiers:
            raise DrillError("the render has no state tier (configmap-redis-state-config.yaml): render the stack again")
        say(
            f"start: {len(cluster.redis_nodes)} cache and {len(cluster.state_nodes)} state data nodes, "
            f"{len(cluster.sentinels)} Sentinels up"
        )
        with SentinelClient(cluster.client_config(min_idle=0)) as names:
            rows = list(strategy_dataset(names, units, MIN_TTL_S))
        say(f"dataset: writing {len(rows)} keys of the five strategies, each on its tier, with its TTL")

        def master_of(tier: str) -> Callable[[], redis.Redis]:
            return lambda: cluster.client(cluster.masters(tier)[0], decode_responses=True)

        procedure = BackupProcedure(cluster, BackupRunner(cluster, s3, scripts), say)
        datasets: dict[str, Dataset] = {}
        checkers: list[DatasetRestored] = []
        for tier in procedure.tiers:
            tier_rows = [row for row in rows if STRATEGY_TIER[row[0]] == tier]
            datasets[tier] = Dataset(tier_rows, master_of(tier), replicas=len(cluster.tier_nodes(tier)) - 1)
            checker = DatasetRestored(datasets[tier], master_of(tier))
            checker.name = f"dataset_restored_{tier}"
            checkers.append(checker)
        loss = FullClusterLoss(cluster, last_act=procedure.take, recovery=procedure.restore)
        run = Drill(list(datasets.values()), loss, checkers, steady_seconds=0, settle_seconds=0).run()
        if run.heal_error is not None:
            raise DrillError(f"the restore failed: {run.heal_error}")

        tiers: dict[str, TierReport] = {}
        for tier, data in datasets.items():
            restored = run.verdict(f"dataset_restored_{tier}").figures
            master_node = cluster.masters(tier)[0]
            with cluster.client(master_node) as node:
                wait_replicated(node, len(cluster.tier_nodes(tier)) - 1)
                memory = node.info("memory")
            replica_keys = []
            for node in cluster.tier_nodes(tier):
                if node is not master_node:
                    with cluster.client(node) as replica:
                        replica_keys.append(int(replica.dbsize()))
            head = s3.client().head_object(Bucket=s3.bucket, Key=procedure.keys[tier])
            seconds = procedure.tier_seconds[tier]
            tiers[tier] = TierReport(
                keys=len(data.rows),
                keys_restored=restored["restored"],
                mismatches=restored["mismatches"],
                backup_seconds=round(seconds["backup"], 2),
                restore_seconds=round(seconds["restore"], 2),
                replicas_keys=replica_keys,
                rdb_bytes=int(head["ContentLength"]),
                backup_key=procedure.keys[tier],
                backup_source=f"{head['Metadata'].get('role')} {head['Metadata'].get('source')}",
                restore_steps_seconds={k: round(seconds[k], 2) for k in ("fetch", "prepare", "start_and_link")},
                used_memory_bytes=int(memory["used_memory"]),
                maxmemory_bytes=int(memory.get("maxmemory", 0)),
            )
        samples = [sample for tier in datasets for sample in run.verdict(f"dataset_restored_{tier}").figures["samples"]]
        return DrillReport(
            keys_written=len(rows),
            keys_restored=sum(t.keys_restored for t in tiers.values()),
            mismatches=sum(t.mismatches for t in tiers.values()),
            backup_seconds=round(procedure.seconds["backup"], 2),
            restore_seconds=round(procedure.seconds["restore"], 2),
            keys_by_strategy={k: v for data in datasets.values() for k, v in data.by_strategy().items()},
            restore_order=procedure.tiers,
            tiers=tiers,
            write_seconds=round(sum(data.write_seconds for data in datasets.values()), 2),
            server=" / ".join(sorted({data.server_version for data in datasets.values()})),
            mismatch_samples=samples,
            data_dirs_destroyed=loss.destroyed,
            backup_acl_denials=procedure.acl_denials,
        )


def _keys(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1 (the drill compares the keys it wrote)")
    return value


def _say(text: str) -> None:
    print(f"backup drill: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    from smoke.cli import unwritable

    parser = argparse.ArgumentParser(
        prog="python -m smoke.drills.backup",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--render-dir", type=Path, default=ROOT / "build/render/dev/k8s", help="the k8s/ directory of a render"
    )
    parser.add_argument("--report", type=Path, default=ROOT / "build/drill-backup.json", help="JSON report path")
    parser.add_argument("--keys", type=_keys, default=100_000, help="keys to write (at least 1)")
    args = parser.parse_args(argv)
    problem = unwritable(args.report)
    if problem:
        print(f"backup drill: --report {args.report}: {problem}", file=sys.stderr)
        return 2
    try:
        files = RenderedFiles.from_render_dir(args.render_dir)
        scripts = backup_scripts_from_render_dir(args.render_dir)
        report = run_drill(files, scripts, args.keys, _say)
    except (RehearsalError, DrillError) as exc:
        print(f"backup drill failed: {exc}", file=sys.stderr)
        return 1
    body = json.dumps(asdict(report), indent=2)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(body + "\n")
    print(body)
    if not report.ok:
        print(f"backup drill FAILED: {report.mismatches} of {report.keys_written} keys not restored", file=sys.stderr)
        if report.backup_acl_denials:
            print(f"backup drill FAILED: refused by ACL: {'; '.join(report.backup_acl_denials)}", file=sys.stderr)
        return 1
    per_tier = ", ".join(f"{tier} {t.keys_restored}/{t.keys}" for tier, t in report.tiers.items())
    print(
        f"backup drill passed: {report.keys_restored}/{report.keys_written} keys restored ({per_tier})", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
