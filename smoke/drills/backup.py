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

TTLs: the strategies' own TTLs, except that none is shorter than ``MIN_TTL_S``: a 30 s workflow
status or a 60 s rate-limit window would expire during the drill, and expiry is not loss.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml

from components.renderers.scripts import BACKUP_SCRIPTS
from smoke.local.moto_s3 import MotoS3, moto_s3
from smoke.local.rehearsal import LoopbackCluster, RehearsalError, RenderedFiles
from smoke.strategies.claims import ClaimCache, sample_claim
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import EntryCache, sample_entry
from smoke.strategies.idempotency import IdempotencyStore
from smoke.strategies.ratelimit import RateLimiter
from smoke.strategies.workflow import WorkflowCache

ROOT = Path(__file__).resolve().parents[2]
MIN_TTL_S = 900
BATCH = 2000
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


# --- the dataset ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    kind: str  # redis type
    value: Any
    ttl_ms: int


def dataset(client: SentinelClient, units: int) -> Iterator[tuple[str, str, Expected]]:
    """(strategy, key, expected) for ``units`` units; key names from the strategies' builders."""
    entries, claims = EntryCache(client), ClaimCache(client)
    workflows, idem = WorkflowCache(client), IdempotencyStore(client)
    limiter = RateLimiter(client)

    def ttl(ms: int) -> int:
        return max(ms, MIN_TTL_S * 1000)

    for i in range(units):
        eid, cid, wid = f"e{i:07d}", f"c{i:07d}", f"w{i:07d}"
        entry = sample_entry(eid, key_value=f"user{i}@example.com.br")
        entry_ttl = ttl(entries.ttl_ms)
        yield "entries", entries.id_key(eid), Expected("string", entry.to_json(), entry_ttl)
        yield "entries", entries.pointer_key(entry.key_type, entry.key_value), Expected("string", eid, entry_ttl)
        yield "entries", entries.marker_key(eid), Expected("string", str(entry.version), entry_ttl)
        claim = sample_claim(cid, eid)
        claim_ttl = ttl(claims.ttl_ms)
        yield "claims", claims.object_key(cid), Expected("string", claim.to_json(), claim_ttl)
        yield "claims", claims.status_key(cid), Expected("string", claim.status, claim_ttl)
        yield "claims", claims.index_key(eid), Expected("zset", [[cid, float(1_700_000_000_000 + i)]], claim_ttl)
        status = json.dumps({"status": "WAITING_RESOLUTION", "version": 1}, separators=(",", ":"))
        meta = {"workflow_id": wid, "workflow_type": "ClaimWorkflow", "started_at": "2024-05-01T12:00:00Z"}
        meta_json = json.dumps({**meta, "claim_id": cid, "current_activity": "notify", "version": 1})
        yield "workflow", workflows.status_key(wid), Expected("string", status, ttl(workflows.status_ttl_s * 1000))
        yield "workflow", workflows.metadata_key(wid), Expected("string", meta_json, workflows.metadata_ttl_s * 1000)
        record = json.dumps({"state": "completed", "owner": f"o{i}", "fp": f"{i:064x}", "response": "{}"})
        yield "idempotency", idem.key(f"r{i:07d}"), Expected("string", record, ttl(idem.record_ttl_s * 1000))
        ispb = f"{60701190 + i % 500:08d}"
        counter_key = limiter.key_base(ispb, "GetEntry") + str(28_000_000 + i)
        yield "ratelimit", counter_key, Expected("string", str(1 + i % 500), ttl(limiter.window_ms))


def write_dataset(master: redis.Redis, rows: list[tuple[str, str, Expected]]) -> dict[str, int]:
    """Write every key with its TTL; return the absolute expiry (ms) the master recorded for each."""
    for start in range(0, len(rows), BATCH):
        pipe = master.pipeline(transaction=False)
        for _, key, exp in rows[start : start + BATCH]:
            if exp.kind == "zset":
                pipe.delete(key)
                pipe.zadd(key, dict(exp.value))
                pipe.pexpire(key, exp.ttl_ms)
            else:
                pipe.set(key, exp.value, px=exp.ttl_ms)
        pipe.execute()
    return dict(zip([k for _, k, _ in rows], _expiry_times(master, [k for _, k, _ in rows]), strict=True))


def _expiry_times(node: redis.Redis, keys: list[str]) -> list[int]:
    times: list[int] = []
    for start in range(0, len(keys), BATCH):
        pipe = node.pipeline(transaction=False)
        for key in keys[start : start + BATCH]:
            pipe.execute_command("PEXPIRETIME", key)
        times.extend(int(t) for t in pipe.execute())
    return times


def verify(node: redis.Redis, rows: list[tuple[str, str, Expected]], expiry: dict[str, int]) -> tuple[int, list[str]]:
    """(keys restored exactly, descriptions of the first mismatches) for one node."""
    restored, mismatches, count = 0, [], 0
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        pipe = node.pipeline(transaction=False)
        for _, key, exp in chunk:
            pipe.type(key)
            if exp.kind == "zset":
                pipe.zrange(key, 0, -1, withscores=True)
            else:
                pipe.get(key)
            pipe.execute_command("PEXPIRETIME", key)
            pipe.pttl(key)
        replies = pipe.execute()
        for n, (_, key, exp) in enumerate(chunk):
            kind, value, expires_at, pttl = replies[4 * n : 4 * n + 4]
            if exp.kind == "zset":
                value = [[member, score] for member, score in value]
            problem = None
            if kind != exp.kind:
                problem = f"type {kind!r}, expected {exp.kind!r}"
            elif value != exp.value:
                problem = f"value {str(value)[:80]!r} differs"
            elif int(expires_at) != expiry[key]:
                problem = f"expires at {expires_at}, written to expire at {expiry[key]}"
            elif not 0 < int(pttl) <= exp.ttl_ms:
                problem = f"TTL {pttl} ms outside (0, {exp.ttl_ms}]"
            if problem is None:
                restored += 1
            else:
                count += 1
                if len(mismatches) < 20:
                    mismatches.append(f"{key}: {problem}")
    if count > len(mismatches):
        mismatches.append(f"... {count - len(mismatches)} more")
    return restored, mismatches


# --- the drill -----------------------------------------------------------------------------------


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
    redis_version: str
    mismatch_samples: list[str]
    data_dirs_destroyed: list[str]
    # ACL log entries on the data nodes during the backup (user, reason, command): none expected.
    backup_acl_denials: list[str]

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.keys_restored == self.keys_written and not self.backup_acl_denials


def run_drill(files: RenderedFiles, scripts: dict[str, str], keys: int) -> DrillReport:
    units = -(-keys // KEYS_PER_UNIT)
    with moto_s3() as s3, LoopbackCluster(files) as cluster:
        master_node = cluster.masters()[0]
        runner = BackupRunner(cluster, s3, scripts)
        with SentinelClient(cluster.client_config(min_idle=0)) as names:
            rows = list(dataset(names, units))
        by_strategy: dict[str, int] = {}
        for strategy, _, _ in rows:
            by_strategy[strategy] = by_strategy.get(strategy, 0) + 1
        started = time.monotonic()
        with cluster.client(master_node, decode_responses=True) as master:
            expiry = write_dataset(master, rows)
            master.execute_command("WAIT", len(cluster.redis_nodes) - 1, 10_000)
            version = str(master.info("server")["redis_version"])
        write_seconds = time.monotonic() - started

        for node in cluster.redis_nodes:
            with cluster.client(node) as admin:
                admin.execute_command("ACL", "LOG", "RESET")
        started = time.monotonic()
        key = runner.checked("backup.sh", "all")
        backup_seconds = time.monotonic() - started
        # The dump ran as the ACL user `backup`: anything it was refused shows in the ACL log.
        denials = []
        for node in cluster.redis_nodes:
            with cluster.client(node) as admin:
                denials += [f"{node.name}: {e['username']} {e['reason']} {e['object']}" for e in admin.acl_log()]
        head = s3.client().head_object(Bucket=s3.bucket, Key=key)

        # Full cluster loss: every process killed, every data directory gone.
        destroyed = []
        for node in [*cluster.sentinels, *cluster.redis_nodes]:
            cluster.kill_node(node, signal.SIGKILL)
        for node in [*cluster.redis_nodes, *cluster.sentinels]:
            cluster.wipe_data(node)
            destroyed.append(node.name)
        shutil.rmtree(runner.scratch, ignore_errors=True)

        steps: dict[str, float] = {}
        started = time.monotonic()
        target = cluster.redis_nodes[0].workdir / "data"
        target.mkdir(parents=True)
        runner.checked("restore.sh", "fetch", "latest", str(target))
        steps["fetch"] = time.monotonic() - started
        runner.checked("restore.sh", "prepare", str(target))
        steps["prepare"] = time.monotonic() - steps["fetch"] - started
        cluster.start(timeout=120)
        restore_seconds = time.monotonic() - started
        steps["start_and_converge"] = restore_seconds - steps["fetch"] - steps["prepare"]

        master_node = cluster.masters()[0]
        with cluster.client(master_node, decode_responses=True) as master:
            restored, mismatches = verify(master, rows, expiry)
            master.execute_command("WAIT", len(cluster.redis_nodes) - 1, 10_000)
        replica_keys = []
        for node in cluster.redis_nodes:
            if node is not master_node:
                with cluster.client(node) as replica:
                    replica_keys.append(int(replica.dbsize()))
        return DrillReport(
            keys_written=len(rows),
            keys_restored=restored,
            mismatches=len(rows) - restored,
            backup_seconds=round(backup_seconds, 2),
            restore_seconds=round(restore_seconds, 2),
            replicas_keys=replica_keys,
            keys_by_strategy=by_strategy,
            rdb_bytes=int(head["ContentLength"]),
            backup_key=key,
            backup_source=f"{head['Metadata'].get('role')} {head['Metadata'].get('source')}",
            restore_steps_seconds={k: round(v, 2) for k, v in steps.items()},
            write_seconds=round(write_seconds, 2),
            redis_version=version,
            mismatch_samples=mismatches,
            data_dirs_destroyed=destroyed,
            backup_acl_denials=denials,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smoke.drills.backup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--render-dir", type=Path, default=ROOT / "build/render/dev/k8s", help="rendered manifests")
    parser.add_argument("--report", type=Path, default=ROOT / "build/drill-backup.json", help="JSON report path")
    parser.add_argument("--keys", type=int, default=100_000, help="keys to write (default 100000)")
    args = parser.parse_args(argv)
    try:
        files = RenderedFiles.from_render_dir(args.render_dir)
        scripts = backup_scripts_from_render_dir(args.render_dir)
        report = run_drill(files, scripts, args.keys)
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
