"""The backup drill: a full cluster loss on the rehearsal, recovered from an S3 backup.

``python -m smoke.drills.backup`` (``make drill-backup``):

1. start the dev stack's rendered files on loopback (:class:`smoke.local.rehearsal.LoopbackCluster`)
   and moto's S3 with a prod-like bucket (:mod:`smoke.local.moto_s3`);
2. write a known dataset (>= 100k keys shaped like the five strategies, built with their own key
   builders, every key with a TTL) and record each key's value and absolute expiry;
3. run the rendered ``backup.sh`` (the CronJob's script) against the Sentinels and the bucket, as
   the pod does: the ACL user ``backup`` and the Sentinels' password from the stand-in Secret;
   the data nodes' ACL log must show nothing refused;
4. kill every process and delete every data directory, Redis and Sentinel alike;
5. run the rendered ``restore.sh fetch`` + ``restore.sh prepare`` (the runbook's commands) into
   redis-0's data directory, start the pods as Kubernetes would, wait for the topology;
6. compare every key: value, type, absolute expiry (``PEXPIRETIME``, kept exactly by RDB) and a
   remaining TTL in (0, the TTL it was written with];
7. write ``build/drill-backup.json`` and print it; exit 1 on any mismatch.

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

from components.renderers.scripts import BACKUP_SCRIPTS
from smoke.drills.checkers import DatasetRestored
from smoke.drills.drill import Drill
from smoke.drills.faults import FullClusterLoss
from smoke.drills.workload import Dataset, strategy_dataset, wait_replicated
from smoke.local.moto_s3 import MotoS3, moto_s3
from smoke.local.rehearsal import LoopbackCluster, RehearsalError, RenderedFiles
from smoke.strategies.client import SentinelClient

ROOT = Path(__file__).resolve().parents[2]
MIN_TTL_S = 900
# Keys written per unit (one entry with its claim, workflow, idempotency record and counter).
KEYS_PER_UNIT = 10


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

    def env(self, **extra: str) -> dict[str, str]:
        """The pod's environment, as the CronJob gives it: the addresses, the mounted Secret's
        directory (the scripts' own defaults pick the ``backup`` user's and the Sentinels' files
        in it) and TLS on or off with the CA, as the cluster runs."""
        common = self.cluster.redis_nodes[0].env
        python_bin = str(Path(sys.executable).parent)  # the venv's `aws`
        return {
            "PATH": f"{common['PATH']}:{python_bin}",
            "HOME": str(self.cluster.workdir),
            "SENTINEL_ADDRS": common["SENTINEL_ADDRS"],
            "REDIS_ADDRS": common["REDIS_ADDRS"],
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

    def run(self, script: str, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["busybox", "sh", str(self.dir / script), *args],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def checked(self, script: str, *args: str, **extra: str) -> str:
        """Run a script; raise :class:`DrillError` with its log when it fails; return its last line."""
        done = self.run(script, *args, **extra)
        if done.returncode != 0:
            raise DrillError(f"{script} {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


# --- the drill: a dataset x a full cluster loss after the last backup x every key restored -------


class BackupProcedure:
    """The two halves under test, as an operator runs them: ``take()`` is the CronJob's
    ``backup.sh all`` (ACL log checked for refusals), ``restore()`` the runbook's
    ``restore.sh fetch`` + ``restore.sh prepare`` into redis-0's data directory, then the pods
    started as Kubernetes would. Each records its figures."""

    def __init__(
        self, cluster: LoopbackCluster, runner: BackupRunner, say: Callable[[str], None] = lambda _: None
    ) -> None:
        self.cluster, self.runner, self.say = cluster, runner, say
        self.key = ""
        self.seconds: dict[str, float] = {}
        self.acl_denials: list[str] = []

    def take(self) -> None:
        self.say("backup: running the rendered backup.sh all (the CronJob's script) as the ACL user backup")
        for node in self.cluster.redis_nodes:
            with self.cluster.client(node) as admin:
                admin.execute_command("ACL", "LOG", "RESET")
        started = time.monotonic()
        self.key = self.runner.checked("backup.sh", "all")
        self.seconds["backup"] = time.monotonic() - started
        # The dump ran as the ACL user `backup`: anything it was refused shows in the ACL log.
        for node in self.cluster.redis_nodes:
            with self.cluster.client(node) as admin:
                log = admin.acl_log()
                self.acl_denials += [f"{node.name}: {e['username']} {e['reason']} {e['object']}" for e in log]
        shutil.rmtree(self.runner.scratch, ignore_errors=True)
        self.say(
            f"backup: {self.key} uploaded in {self.seconds['backup']:.1f} s; full cluster loss: killing every "
            "process and deleting every data directory"
        )

    def restore(self) -> None:
        self.say("restore: restore.sh fetch latest + prepare into redis-0's data directory, then starting the pods")
        started = time.monotonic()
        target = self.cluster.redis_nodes[0].workdir / "data"
        target.mkdir(parents=True)
        self.runner.checked("restore.sh", "fetch", "latest", str(target))
        self.seconds["fetch"] = time.monotonic() - started
        self.runner.checked("restore.sh", "prepare", str(target))
        self.seconds["prepare"] = time.monotonic() - started - self.seconds["fetch"]
        self.cluster.start(timeout=120)
        self.seconds["restore"] = time.monotonic() - started
        self.seconds["start_and_converge"] = self.seconds["restore"] - self.seconds["fetch"] - self.seconds["prepare"]
        self.say(f"restore: the topology is back after {self.seconds['restore']:.1f} s; comparing every key")


@dataclass
class DrillReport:
    keys_written: int
    keys_restored: int
    mismatches: int
    backup_seconds: float
    restore_seconds: float
    replicas_keys: list[int]
    keys_by_strategy: dict[str, int]
    rdb_bytes: int
    backup_key: str
    backup_source: str
    restore_steps_seconds: dict[str, float]
    write_seconds: float
    server: str  # what the master runs: "valkey 8.0.1", "redis 7.0.15"
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
        say(f"start: {len(cluster.redis_nodes)} data nodes and {len(cluster.sentinels)} Sentinels up")
        with SentinelClient(cluster.client_config(min_idle=0)) as names:
            rows = list(strategy_dataset(names, units, MIN_TTL_S))
        say(f"dataset: writing {len(rows)} keys of the five strategies, each with its TTL")

        def master() -> redis.Redis:
            return cluster.client(cluster.masters()[0], decode_responses=True)

        data = Dataset(rows, master, replicas=len(cluster.redis_nodes) - 1)
        procedure = BackupProcedure(cluster, BackupRunner(cluster, s3, scripts), say)
        loss = FullClusterLoss(cluster, last_act=procedure.take, recovery=procedure.restore)
        run = Drill([data], loss, [DatasetRestored(data, master)], steady_seconds=0, settle_seconds=0).run()
        if run.heal_error is not None:
            raise DrillError(f"the restore failed: {run.heal_error}")
        restored = run.verdict("dataset_restored").figures

        master_node = cluster.masters()[0]
        with cluster.client(master_node) as node:
            wait_replicated(node, len(cluster.redis_nodes) - 1)
        replica_keys = []
        for node in cluster.redis_nodes:
            if node is not master_node:
                with cluster.client(node) as replica:
                    replica_keys.append(int(replica.dbsize()))
        head = s3.client().head_object(Bucket=s3.bucket, Key=procedure.key)
        seconds = procedure.seconds
        return DrillReport(
            keys_written=len(rows),
            keys_restored=restored["restored"],
            mismatches=restored["mismatches"],
            backup_seconds=round(seconds["backup"], 2),
            restore_seconds=round(seconds["restore"], 2),
            replicas_keys=replica_keys,
            keys_by_strategy=data.by_strategy(),
            rdb_bytes=int(head["ContentLength"]),
            backup_key=procedure.key,
            backup_source=f"{head['Metadata'].get('role')} {head['Metadata'].get('source')}",
            restore_steps_seconds={k: round(seconds[k], 2) for k in ("fetch", "prepare", "start_and_converge")},
            write_seconds=round(data.write_seconds, 2),
            server=data.server_version,
            mismatch_samples=restored["samples"],
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
    print(f"backup drill passed: {report.keys_restored}/{report.keys_written} keys restored", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
