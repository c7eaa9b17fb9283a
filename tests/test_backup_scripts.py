"""The rendered backup.sh / restore.sh against the rehearsal and moto's S3, including every failure
path: each must end in one clear "FAILED: ..." line and a non-zero exit."""

from __future__ import annotations

import base64
import hashlib
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from smoke.backup_drill import BackupRunner, backup_scripts_from_render_dir
from smoke.moto_s3 import MotoS3, moto_s3
from smoke.rehearsal import LoopbackCluster
from tests.support import require_redis_binaries

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def scripts(dev_render_dir: Path) -> dict[str, str]:
    return backup_scripts_from_render_dir(dev_render_dir / "k8s")


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoS3]:
    with moto_s3(bucket="dict-redis-backups-test") as server:
        yield server


def no_sync_delay(cluster: LoopbackCluster) -> None:
    """Drop the 5 s repl-diskless-sync-delay that every `redis-cli --rdb` waits out: these tests
    dump several times, and the drill measures the real delay."""
    for node in cluster.redis_nodes:
        if node.running:
            with cluster.client(node) as c:
                c.config_set("repl-diskless-sync-delay", 0)


@pytest.fixture(scope="module")
def runner(cluster: LoopbackCluster, s3: MotoS3, scripts: dict[str, str]) -> BackupRunner:
    no_sync_delay(cluster)
    with cluster.client(cluster.masters()[0]) as master:
        master.set("backup:test:key", "value", ex=3600)
        master.execute_command("WAIT", 2, 5000)
    return BackupRunner(cluster, s3, scripts)


def failed(done: subprocess.CompletedProcess[str], reason: str) -> None:
    """The run exited non-zero and its last log line says FAILED with ``reason``."""
    assert done.returncode != 0, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "FAILED: " in last and reason in last, done.stderr
    assert "Traceback" not in done.stderr


def test_backup_dumps_a_healthy_replica_verifies_and_uploads_with_checksum_and_metadata(
    runner: BackupRunner, cluster: LoopbackCluster, s3: MotoS3
) -> None:
    done = runner.run("backup.sh", "all")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    master = cluster.masters()[0]
    replicas = {n.host for n in cluster.redis_nodes if n is not master}
    head = s3.client().head_object(Bucket=s3.bucket, Key=key, ChecksumMode="ENABLED")
    meta = head["Metadata"]
    assert meta["role"] == "replica" and meta["source"] in replicas
    assert key.startswith(f"redis/dev/{meta['time'][:4]}/{meta['time'][4:6]}/{meta['time'][6:8]}/{meta['time']}-")
    assert key.endswith(f"-{meta['source']}.rdb")
    assert int(meta["offset"]) > 0 and int(meta["keys"]) >= 1
    assert head["ServerSideEncryption"] == "aws:kms"
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == meta["sha256"]
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert cluster.password not in done.stderr + done.stdout


def test_restore_lists_fetches_the_latest_and_prepares_a_data_dir_redis_loads(
    runner: BackupRunner, cluster: LoopbackCluster, tmp_path: Path
) -> None:
    assert runner.run("backup.sh", "all").returncode == 0
    listing = runner.run("restore.sh", "list")
    assert listing.returncode == 0, listing.stderr
    keys = [line.split("\t")[0] for line in listing.stdout.splitlines()]
    assert len(keys) >= 2 and keys == sorted(keys)
    fetched = runner.run("restore.sh", "fetch", "latest", str(tmp_path))
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.strip().splitlines()[-1] == keys[-1]
    prepared = runner.run("restore.sh", "prepare", str(tmp_path))
    assert prepared.returncode == 0, prepared.stderr
    assert list((tmp_path / "appendonlydir").glob("*.manifest"))
    # A server with the stack's redis.conf (appendonly yes) now starts with the data.
    socket = tmp_path / "check.sock"
    server = subprocess.Popen(
        [
            "redis-server",
            str(cluster.workdir / "etc/redis.conf"),
            "--port",
            "0",
            "--unixsocket",
            str(socket),
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            got = subprocess.run(
                ["redis-cli", "-s", str(socket), "GET", "backup:test:key"], capture_output=True, text=True
            )
            if got.stdout.strip() == "value":
                break
            subprocess.run(["sleep", "0.1"])
        assert got.stdout.strip() == "value"
    finally:
        server.terminate()
        server.wait(10)


def test_a_redis_with_aof_on_ignores_a_bare_dump_rdb_which_is_why_prepare_exists(
    runner: BackupRunner, cluster: LoopbackCluster, tmp_path: Path
) -> None:
    assert runner.run("restore.sh", "fetch", "latest", str(tmp_path)).returncode == 0
    socket = tmp_path / "naive.sock"
    server = subprocess.Popen(
        [
            "redis-server",
            str(cluster.workdir / "etc/redis.conf"),
            "--port",
            "0",
            "--unixsocket",
            str(socket),
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            pong = subprocess.run(["redis-cli", "-s", str(socket), "PING"], capture_output=True, text=True)
            if pong.stdout.strip() == "PONG":
                break
            subprocess.run(["sleep", "0.1"])
        size = subprocess.run(["redis-cli", "-s", str(socket), "DBSIZE"], capture_output=True, text=True)
        assert size.stdout.strip() == "0"
    finally:
        server.terminate()
        server.wait(10)


def test_redis_unreachable_fails_clearly(runner: BackupRunner) -> None:
    done = runner.run("backup.sh", "dump", SENTINEL_ADDRS="127.0.0.1:1 127.0.0.1:2")
    failed(done, "Redis unreachable")


def test_a_wrong_password_fails_clearly(runner: BackupRunner) -> None:
    done = runner.run("backup.sh", "dump", REDISCLI_AUTH="not-the-password-at-all")
    failed(done, "wrong Redis password")
    assert "not-the-password-at-all" not in done.stderr


def test_s3_refusing_the_upload_fails_clearly(runner: BackupRunner) -> None:
    assert runner.run("backup.sh", "dump").returncode == 0
    done = runner.run("backup.sh", "upload", BACKUP_BUCKET="no-such-bucket")
    failed(done, "upload to s3://no-such-bucket/")
    assert "NoSuchBucket" in done.stderr
    failed(runner.run("restore.sh", "list", BACKUP_BUCKET="no-such-bucket"), "cannot list s3://no-such-bucket/")


def _truncating_redis_cli(directory: Path) -> str:
    """A redis-cli first on PATH that passes through, but cuts the file of an --rdb in half."""
    real = shutil.which("redis-cli")
    wrapper = directory / "redis-cli"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'"{real}" "$@" || exit $?\n'
        'for a in "$@"; do [ "$prev" = --rdb ] && f=$a; prev=$a; done\n'
        '[ -n "${f:-}" ] && head -c $(( $(wc -c <"$f") / 2 )) "$f" >"$f.cut" && mv "$f.cut" "$f"\n'
        "exit 0\n"
    )
    wrapper.chmod(0o755)
    return str(directory)


def test_a_truncated_dump_is_refused_by_backup_and_nothing_is_uploaded(
    runner: BackupRunner, s3: MotoS3, tmp_path: Path
) -> None:
    before = s3.client().list_objects_v2(Bucket=s3.bucket).get("KeyCount", 0)
    path = f"{_truncating_redis_cli(tmp_path)}:{runner.env()['PATH']}"
    failed(runner.run("backup.sh", "all", PATH=path), "is corrupt")
    assert s3.client().list_objects_v2(Bucket=s3.bucket).get("KeyCount", 0) == before
    failed(runner.run("backup.sh", "upload"), "no verified dump")


def test_a_damaged_or_corrupt_backup_is_refused_by_restore(runner: BackupRunner, s3: MotoS3, tmp_path: Path) -> None:
    assert runner.run("backup.sh", "all").returncode == 0
    key = runner.run("restore.sh", "list").stdout.splitlines()[-1].split("\t")[0]
    client = s3.client()
    good = client.get_object(Bucket=s3.bucket, Key=key)
    body, meta = good["Body"].read(), good["Metadata"]
    # Bytes changed after upload: the recorded sha256 no longer matches.
    client.put_object(
        Bucket=s3.bucket,
        Key="redis/dev/2099/01/01/20990101T000000Z-damaged.rdb",
        Body=body[: len(body) // 2],
        Metadata=meta,
    )
    failed(runner.run("restore.sh", "fetch", "latest", str(tmp_path)), "is damaged")
    assert not (tmp_path / "dump.rdb").exists()
    # A truncated RDB whose checksum was recorded as is: redis-check-rdb refuses it.
    cut = body[: len(body) // 2]
    client.put_object(
        Bucket=s3.bucket,
        Key="redis/dev/2099/01/02/20990102T000000Z-cut.rdb",
        Body=cut,
        Metadata={**meta, "sha256": hashlib.sha256(cut).hexdigest()},
    )
    failed(runner.run("restore.sh", "fetch", "latest", str(tmp_path)), "is not a valid RDB")
    # And prepare refuses one too.
    (tmp_path / "dump.rdb").write_bytes(cut)
    failed(runner.run("restore.sh", "prepare", str(tmp_path)), "is not a valid RDB")
    assert not (tmp_path / "appendonlydir").exists()
    for k in ("redis/dev/2099/01/01/20990101T000000Z-damaged.rdb", "redis/dev/2099/01/02/20990102T000000Z-cut.rdb"):
        versions = client.list_object_versions(Bucket=s3.bucket, Prefix=k).get("Versions", [])
        for v in versions:
            client.delete_object(Bucket=s3.bucket, Key=k, VersionId=v["VersionId"])


def test_without_a_healthy_replica_the_backup_falls_back_to_the_master(
    fresh_cluster: LoopbackCluster, s3: MotoS3, scripts: dict[str, str]
) -> None:
    require_redis_binaries()
    master = fresh_cluster.masters()[0]
    for node in fresh_cluster.redis_nodes:
        if node is not master:
            fresh_cluster.kill_node(node, signal.SIGKILL)

    def replicas_down() -> bool:
        with fresh_cluster.client(fresh_cluster.sentinels[0]) as sentinel:
            replicas = sentinel.execute_command("SENTINEL", "REPLICAS", fresh_cluster.master_name)
        return all("s_down" in str(r.get("flags", "")) for r in replicas)

    fresh_cluster.wait_for("the Sentinels to see both replicas down", replicas_down, timeout=20)
    no_sync_delay(fresh_cluster)
    runner = BackupRunner(fresh_cluster, s3, scripts)
    done = runner.run("backup.sh", "dump")
    assert done.returncode == 0, done.stderr
    assert "falling back to the master" in done.stderr
    meta = (runner.scratch / "dump.meta").read_text()
    assert "role=master" in meta and f"address={master.host}:6379" in meta
