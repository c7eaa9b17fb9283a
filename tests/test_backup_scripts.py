"""The rendered backup.sh / restore.sh against the rehearsal and moto's S3, as the CronJob runs them
in prod: the dev stack rendered with TLS on, on loopback with the rehearsal's own CA, the dump
acting as the ACL user ``backup``, on both data tiers (each under its own prefix; a tier, key,
object or data directory of the other tier is refused). Every failure path must end in one clear
"FAILED: ..." line and a non-zero exit. (The plaintext path runs in tests/test_backup_drill.py,
with 100k keys on both tiers.)

One topology serves the whole module: the tests that kill nodes bring it back before they end."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from components import acl
from components.server_lines import ServerLine
from smoke.drills.backup import BackupRunner, backup_scripts_from_render_dir
from smoke.local.certificates import make_certificates
from smoke.local.moto_s3 import MotoS3, moto_s3
from smoke.local.rehearsal import LoopbackCluster, Node, RenderedFiles
from smoke.local.render import write_render
from tests.support import render_with, require_redis_binaries

pytestmark = [pytest.mark.redis, pytest.mark.both_server_lines]

TEST_KEY = "dict:entry:id:backup-test"  # a key of the application user's, so it may read it back
# The same on the state tier, under one of its prefixes (bridge:idempotency:).
STATE_TEST_KEY = "bridge:idempotency:backup-test"
TIER_TEST_KEYS = {"cache": TEST_KEY, "state": STATE_TEST_KEY}


@pytest.fixture(scope="module")
def tls_render_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("render-backup-tls") / "dev"
    write_render(render_with("dev", {"dict-redis:tls": '{"enabled": true}'}), out)
    return out / "k8s"


@pytest.fixture(scope="module")
def scripts(tls_render_dir: Path) -> dict[str, str]:
    return backup_scripts_from_render_dir(tls_render_dir)


@pytest.fixture(scope="module")
def cluster(tls_render_dir: Path, server_line: ServerLine) -> Iterator[LoopbackCluster]:
    require_redis_binaries(server_line)
    files = RenderedFiles.from_render_dir(tls_render_dir)
    assert files.tls  # TLS comes from the render's defaults, not from the rehearsal
    with LoopbackCluster(files, server=server_line) as shared:
        yield shared


@pytest.fixture(scope="module")
def s3(server_line: ServerLine) -> Iterator[MotoS3]:
    """A bucket per server line: "latest" must be this line's dump (one shared by both lines
    served the other line's, RDB version 11 for Redis 7.0, once the tests ran out of order)."""
    with moto_s3(bucket="dict-redis-backups-test") as server:
        yield server


def no_sync_delay(cluster: LoopbackCluster) -> None:
    """Drop the repl-diskless-sync-delay (1 s) that every `redis-cli --rdb` waits out: these tests
    dump several times, and the drill measures the real delay."""
    for node in cluster.data_nodes:
        if node.running:
            with cluster.client(node) as c:
                c.config_set("repl-diskless-sync-delay", 0)


def write_test_key(cluster: LoopbackCluster) -> None:
    """One key of the application's on each tier's master, replicated."""
    for tier, key in TIER_TEST_KEYS.items():
        with cluster.client(cluster.masters(tier)[0]) as master:
            master.set(key, f"{tier} value", ex=3600)
            master.execute_command("WAIT", len(cluster.tier_nodes(tier)) - 1, 5000)


@pytest.fixture(scope="module")
def runner(cluster: LoopbackCluster, s3: MotoS3, scripts: dict[str, str]) -> BackupRunner:
    no_sync_delay(cluster)
    write_test_key(cluster)
    return BackupRunner(cluster, s3, scripts)


def failed(done: subprocess.CompletedProcess[str], reason: str) -> None:
    """The run exited non-zero and its last log line says FAILED with ``reason``."""
    assert done.returncode != 0, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "FAILED: " in last and reason in last, done.stderr
    assert "Traceback" not in done.stderr


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def first_password(cluster: LoopbackCluster, key: str) -> str:
    return cluster.read_secret(key).splitlines()[0]


@contextlib.contextmanager
def stack_redis_on(cluster: LoopbackCluster, data_dir: Path, tier: str = "cache") -> Iterator[Callable[..., str]]:
    """redis-server with the tier's redis.conf (AOF on) over ``data_dir``, on a unix socket only,
    up and answering PING; yields a ``redis-cli`` call that returns the reply text."""
    socket = data_dir / "check.sock"
    config = str(cluster.workdir / "etc" / ("redis-state.conf" if tier == "state" else "redis.conf"))
    line = cluster.server
    command = [line.tool("server"), config, "--port", "0", "--unixsocket", str(socket), "--dir", str(data_dir)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)

    def cli(*args: str) -> str:
        done = subprocess.run([line.tool("cli"), "-s", str(socket), *args], capture_output=True, text=True)
        return done.stdout.strip()

    try:
        deadline = time.monotonic() + 5
        while cli("PING") != "PONG":
            assert time.monotonic() < deadline, "redis-server with the stack's config did not start"
            time.sleep(0.1)
        yield cli
    finally:
        server.terminate()
        server.wait(10)


def _recording_redis_cli(directory: Path, line: ServerLine) -> tuple[str, Path]:
    """The line's cli (redis-cli, valkey-cli) first on PATH, logging each call's arguments and the
    SHA-256 of the REDISCLI_AUTH it was given (not the password itself), then running the real one."""
    real = shutil.which(line.tool("cli"))
    calls = directory / "calls.log"
    wrapper = directory / line.tool("cli")
    wrapper.write_text(
        "#!/bin/sh\n"
        'auth=$(printf %s "${REDISCLI_AUTH:-}" | sha256sum | cut -c1-64)\n'
        f'printf \'auth=%s args=%s\\n\' "$auth" "$*" >>"{calls}"\n'
        f'exec "{real}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(directory), calls


def test_backup_as_the_backup_user_over_tls_dumps_a_healthy_replica_verifies_and_uploads(
    runner: BackupRunner, cluster: LoopbackCluster, s3: MotoS3, tmp_path: Path
) -> None:
    for node in cluster.redis_nodes:
        with cluster.client(node) as admin:
            admin.execute_command("ACL", "LOG", "RESET")
    wrappers, calls = _recording_redis_cli(tmp_path, runner.cluster.server)
    done = runner.run("backup.sh", "all", PATH=f"{wrappers}:{runner.env()['PATH']}")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    master = cluster.masters()[0]
    replicas = {n.host for n in cluster.redis_nodes if n is not master}
    head = s3.client().head_object(Bucket=s3.bucket, Key=key, ChecksumMode="ENABLED")
    meta = head["Metadata"]
    assert meta["role"] == "replica" and meta["source"] in replicas
    assert meta["tier"] == "cache" and meta["master"] == cluster.master_name
    day = f"{meta['time'][:4]}/{meta['time'][4:6]}/{meta['time'][6:8]}"
    assert key.startswith(f"redis/dev/cache/{day}/{meta['time']}-")
    assert key.endswith(f"-{meta['source']}.rdb")
    assert int(meta["offset"]) > 0 and int(meta["keys"]) >= 1
    assert head["ServerSideEncryption"] == "aws:kms"
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == meta["sha256"]
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    for secret in cluster.secrets():
        assert secret not in done.stderr + done.stdout

    # Every connection: TLS verified against the CA; the Sentinels with their password, the data
    # nodes as the ACL user `backup` with the first line of its file; no password in any argv.
    assert cluster.tls_files is not None
    backup_auth = sha256(first_password(cluster, acl.BACKUP.secret_key))
    sentinel_auth = sha256(cluster.password)
    lines = calls.read_text().splitlines()
    assert any("--rdb" in line for line in lines), lines
    for line in lines:
        assert f"--tls --cacert {cluster.tls_files.ca}" in line, line
        if "-p 26379" in line:
            assert line.startswith(f"auth={sentinel_auth} ") and "--user" not in line, line
        else:
            assert line.startswith(f"auth={backup_auth} ") and "--user backup " in line, line
        assert not [secret for secret in cluster.secrets() if secret in line]
    # ...and the ACL user has every command the dump sends: nothing was denied anywhere.
    for node in cluster.redis_nodes:
        with cluster.client(node) as admin:
            assert admin.execute_command("ACL", "LOG") == [], node.name


def test_restore_lists_fetches_the_latest_and_prepares_a_data_dir_redis_loads(
    runner: BackupRunner, cluster: LoopbackCluster, tmp_path: Path
) -> None:
    assert runner.run("backup.sh", "all").returncode == 0
    listing = runner.run("restore.sh", "list", "cache")
    assert listing.returncode == 0, listing.stderr
    keys = [line.split("\t")[0] for line in listing.stdout.splitlines()]
    assert len(keys) >= 2 and keys == sorted(keys)
    assert all(k.startswith("redis/dev/cache/") for k in keys)  # no state-tier backup among them
    fetched = runner.run("restore.sh", "fetch", "cache", "latest", str(tmp_path))
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.strip().splitlines()[-1] == keys[-1]
    prepared = runner.run("restore.sh", "prepare", "cache", str(tmp_path))
    assert prepared.returncode == 0, prepared.stderr
    assert list((tmp_path / "appendonlydir").glob("*.manifest"))
    # A server with the stack's redis.conf (appendonly yes) now starts with the data.
    with stack_redis_on(cluster, tmp_path) as cli:
        assert cli("GET", TEST_KEY) == "cache value"


def test_a_redis_with_aof_on_ignores_a_bare_dump_rdb_which_is_why_prepare_exists(
    runner: BackupRunner, cluster: LoopbackCluster, tmp_path: Path
) -> None:
    assert runner.run("restore.sh", "fetch", "cache", "latest", str(tmp_path)).returncode == 0
    with stack_redis_on(cluster, tmp_path) as cli:
        assert cli("DBSIZE") == "0"


def test_redis_unreachable_fails_clearly(runner: BackupRunner) -> None:
    done = runner.run("backup.sh", "dump", SENTINEL_ADDRS="127.0.0.1:1 127.0.0.1:2")
    failed(done, "Redis unreachable")


def test_a_wrong_backup_password_fails_clearly(runner: BackupRunner, tmp_path: Path) -> None:
    wrong = tmp_path / "backup-password"
    # The first line is the one sent; a second (right) one must not save it.
    wrong.write_text(f"not-the-password-at-all\n{first_password(runner.cluster, acl.BACKUP.secret_key)}\n")
    done = runner.run("backup.sh", "dump", REDIS_PASSWORD_FILE=str(wrong))
    failed(done, "wrong password for the ACL user 'backup': the replica ")
    assert f"refused the first line of {wrong}" in done.stderr
    assert "not-the-password-at-all" not in done.stderr


def test_a_wrong_sentinel_password_fails_clearly(runner: BackupRunner, tmp_path: Path) -> None:
    wrong = tmp_path / "sentinel-requirepass"
    wrong.write_text("not-the-sentinel-password\n")
    done = runner.run("backup.sh", "dump", SENTINEL_PASSWORD_FILE=str(wrong))
    failed(done, "wrong Sentinel password (Sentinel ")
    assert "not-the-sentinel-password" not in done.stderr


def test_a_ca_that_did_not_sign_the_servers_fails_clearly(runner: BackupRunner, tmp_path: Path) -> None:
    other = make_certificates(tmp_path / "other-ca", ["127.0.0.1"])
    done = runner.run("backup.sh", "dump", TLS_CA_FILE=str(other.ca))
    failed(done, f"TLS to the Sentinel {runner.cluster.sentinels[0].address} failed (REDIS_TLS=yes, CA {other.ca})")
    assert "certificate verify failed" in done.stderr.splitlines()[-1]


def test_an_acl_user_without_a_command_the_dump_needs_fails_clearly(
    runner: BackupRunner, cluster: LoopbackCluster
) -> None:
    """What an operator sees if components/acl.py ever drops a command `redis-cli --rdb` sends."""
    running = [n for n in cluster.redis_nodes if n.running]
    for node in running:
        with cluster.client(node) as admin:
            admin.execute_command("ACL", "SETUSER", acl.BACKUP.name, "-sync")
    try:
        done = runner.run("backup.sh", "dump")
    finally:
        for node in running:
            with cluster.client(node) as admin:
                admin.execute_command("ACL", "SETUSER", acl.BACKUP.name, "+sync")
    failed(done, "the ACL user 'backup' lacks a permission on the replica ")
    assert "sync" in done.stderr.splitlines()[-1].lower()


def test_s3_refusing_the_upload_fails_clearly(runner: BackupRunner) -> None:
    assert runner.run("backup.sh", "dump").returncode == 0
    done = runner.run("backup.sh", "upload", BACKUP_BUCKET="no-such-bucket")
    failed(done, "upload to s3://no-such-bucket/")
    assert "NoSuchBucket" in done.stderr
    failed(
        runner.run("restore.sh", "list", "cache", BACKUP_BUCKET="no-such-bucket"), "cannot list s3://no-such-bucket/"
    )


def _truncating_redis_cli(directory: Path, line: ServerLine) -> str:
    """The line's cli first on PATH, passing through, but cutting the file of an --rdb in half."""
    real = shutil.which(line.tool("cli"))
    wrapper = directory / line.tool("cli")
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
    path = f"{_truncating_redis_cli(tmp_path, runner.cluster.server)}:{runner.env()['PATH']}"
    failed(runner.run("backup.sh", "all", PATH=path), "is corrupt")
    assert s3.client().list_objects_v2(Bucket=s3.bucket).get("KeyCount", 0) == before
    failed(runner.run("backup.sh", "upload"), "no verified dump")


def test_a_damaged_or_corrupt_backup_is_refused_by_restore(runner: BackupRunner, s3: MotoS3, tmp_path: Path) -> None:
    assert runner.run("backup.sh", "all").returncode == 0
    key = runner.run("restore.sh", "list", "cache").stdout.splitlines()[-1].split("\t")[0]
    client = s3.client()
    good = client.get_object(Bucket=s3.bucket, Key=key)
    body, meta = good["Body"].read(), good["Metadata"]
    # Bytes changed after upload: the recorded sha256 no longer matches.
    client.put_object(
        Bucket=s3.bucket,
        Key="redis/dev/cache/2099/01/01/20990101T000000Z-damaged.rdb",
        Body=body[: len(body) // 2],
        Metadata=meta,
    )
    failed(runner.run("restore.sh", "fetch", "cache", "latest", str(tmp_path)), "is damaged")
    assert not (tmp_path / "dump.rdb").exists()
    # A truncated RDB whose checksum was recorded as is: redis-check-rdb refuses it.
    cut = body[: len(body) // 2]
    client.put_object(
        Bucket=s3.bucket,
        Key="redis/dev/cache/2099/01/02/20990102T000000Z-cut.rdb",
        Body=cut,
        Metadata={**meta, "sha256": hashlib.sha256(cut).hexdigest()},
    )
    failed(runner.run("restore.sh", "fetch", "cache", "latest", str(tmp_path)), "is not a valid RDB")
    # And prepare refuses one too.
    (tmp_path / "dump.rdb").write_bytes(cut)
    failed(runner.run("restore.sh", "prepare", "cache", str(tmp_path)), "is not a valid RDB")
    assert not (tmp_path / "appendonlydir").exists()
    for k in (
        "redis/dev/cache/2099/01/01/20990101T000000Z-damaged.rdb",
        "redis/dev/cache/2099/01/02/20990102T000000Z-cut.rdb",
    ):
        versions = client.list_object_versions(Bucket=s3.bucket, Prefix=k).get("Versions", [])
        for v in versions:
            client.delete_object(Bucket=s3.bucket, Key=k, VersionId=v["VersionId"])


def restart(cluster: LoopbackCluster, nodes: list[Node]) -> None:
    """Start killed nodes again and wait for the topology, for the tests that follow."""
    for node in nodes:
        if not node.running:
            cluster.start_node(node)
    cluster.wait_for("the topology to converge again", cluster.converged, timeout=60)
    no_sync_delay(cluster)


def test_without_a_healthy_replica_the_backup_falls_back_to_the_master(
    runner: BackupRunner, cluster: LoopbackCluster
) -> None:
    master = cluster.masters()[0]
    replicas = [n for n in cluster.redis_nodes if n is not master]
    try:
        for node in replicas:
            cluster.kill_node(node, signal.SIGKILL)

        def replicas_down() -> bool:
            with cluster.client(cluster.sentinels[0]) as sentinel:
                seen = sentinel.execute_command("SENTINEL", "REPLICAS", cluster.master_name)
            return all("s_down" in str(r.get("flags", "")) for r in seen)

        cluster.wait_for("the Sentinels to see both replicas down", replicas_down, timeout=20)
        done = runner.run("backup.sh", "dump")
    finally:
        restart(cluster, replicas)
    assert done.returncode == 0, done.stderr
    assert "falling back to the master" in done.stderr
    meta = (runner.scratch / "dump.meta").read_text()
    assert "role=master" in meta and f"address={master.host}:6379" in meta


def test_the_state_tier_is_backed_up_from_its_own_replica_under_its_own_prefix(
    runner: BackupRunner, cluster: LoopbackCluster, s3: MotoS3, tmp_path: Path
) -> None:
    """What the CronJob's dump-state/upload-state containers do: the state tier's replica found
    through the Sentinels by the state master name, stored under redis/dev/state/, listed and
    restored only as the state tier, into a directory the state tier's redis.conf loads."""
    for node in cluster.state_nodes:
        with cluster.client(node) as admin:
            admin.execute_command("ACL", "LOG", "RESET")
    done = runner.run("backup.sh", "all", tier="state")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("redis/dev/state/") and key.endswith(".rdb")
    meta = s3.client().head_object(Bucket=s3.bucket, Key=key)["Metadata"]
    state_master = cluster.masters("state")[0]
    state_replicas = {n.host for n in cluster.state_nodes if n is not state_master}
    assert meta["tier"] == "state" and meta["master"] == cluster.state_master_name
    assert meta["role"] == "replica" and meta["source"] in state_replicas
    assert f"dumping the state tier ({cluster.state_master_name}) from the replica" in done.stderr
    for secret in cluster.secrets():
        assert secret not in done.stderr + done.stdout
    for node in cluster.state_nodes:
        with cluster.client(node) as admin:
            assert admin.execute_command("ACL", "LOG") == [], node.name
    # Each tier lists only its own backups.
    state_keys = [line.split("\t")[0] for line in runner.run("restore.sh", "list", "state").stdout.splitlines()]
    cache_keys = [line.split("\t")[0] for line in runner.run("restore.sh", "list", "cache").stdout.splitlines()]
    assert state_keys[-1] == key and all(k.startswith("redis/dev/state/") for k in state_keys)
    assert key not in cache_keys
    assert runner.checked("restore.sh", "fetch", "state", "latest", str(tmp_path), tier="state") == key
    runner.checked("restore.sh", "prepare", "state", str(tmp_path), tier="state")
    with stack_redis_on(cluster, tmp_path, tier="state") as cli:
        assert cli("GET", STATE_TEST_KEY) == "state value"
        assert cli("EXISTS", TEST_KEY) == "0"  # the cache's keys are not in the state tier's backup


def test_a_wrong_tier_key_object_or_data_directory_is_refused(
    runner: BackupRunner, cluster: LoopbackCluster, s3: MotoS3, tmp_path: Path
) -> None:
    cache_key = runner.checked("backup.sh", "all")
    # No tier, an unknown one, or the pre-tier command line: the usage, nothing fetched.
    failed(runner.run("restore.sh", "list"), "no tier given: usage: restore.sh list TIER")
    failed(
        runner.run("restore.sh", "fetch", "cahce", "latest", str(tmp_path)), "tier 'cahce': must be one of: cache state"
    )
    failed(runner.run("restore.sh", "fetch", "latest", str(tmp_path)), "tier 'latest': must be one of: cache state")
    failed(runner.run("backup.sh", "dump", BACKUP_TIER="session"), "BACKUP_TIER 'session': must be one of: cache state")
    # A cache backup asked for as the state tier's.
    done = runner.run("restore.sh", "fetch", "state", cache_key, str(tmp_path), tier="state")
    failed(done, f"{cache_key} is not a backup of the state tier: its backups are under redis/dev/state/")
    assert not (tmp_path / "dump.rdb").exists()
    # An object under the state prefix whose metadata says cache (copied by hand).
    client = s3.client()
    good = client.get_object(Bucket=s3.bucket, Key=cache_key)
    moved = "redis/dev/state/2000/01/01/20000101T000000Z-moved.rdb"
    client.put_object(Bucket=s3.bucket, Key=moved, Body=good["Body"].read(), Metadata=good["Metadata"])
    try:
        done = runner.run("restore.sh", "fetch", "state", moved, str(tmp_path), tier="state")
        failed(done, f"s3://{s3.bucket}/{moved} is a backup of the cache tier (its metadata), not of the state tier")
        assert not list(tmp_path.iterdir())
    finally:
        for v in client.list_object_versions(Bucket=s3.bucket, Prefix=moved).get("Versions", []):
            client.delete_object(Bucket=s3.bucket, Key=moved, VersionId=v["VersionId"])
    # A data directory fetched for the cache, prepared as the state tier's; and the state tier
    # prepared with the cache's redis.conf.
    runner.checked("restore.sh", "fetch", "cache", cache_key, str(tmp_path))
    failed(
        runner.run("restore.sh", "prepare", "state", str(tmp_path), tier="state"),
        f"{tmp_path}/dump.rdb was fetched as a backup of the cache tier, not of the state tier",
    )
    (tmp_path / "dump.rdb.tier").unlink()
    cache_conf = str(cluster.workdir / "etc/redis.conf")
    failed(
        runner.run("restore.sh", "prepare", "state", str(tmp_path), tier="state", REDIS_CONFIG_TEMPLATE=cache_conf),
        f"{cache_conf} is the cache tier's redis.conf, not the state tier's",
    )
    assert not (tmp_path / "appendonlydir").exists()
    # backup.sh: the state tier with the cache's master name; a cache dump uploaded as the state's.
    failed(
        runner.run("backup.sh", "dump", tier="state", MASTER_NAME=cluster.master_name),
        f"MASTER_NAME={cluster.master_name} is not the state tier's master",
    )
    assert runner.run("backup.sh", "dump").returncode == 0
    failed(runner.run("backup.sh", "upload", tier="state"), "is of the cache tier, not BACKUP_TIER=state")


def test_a_cache_backup_from_before_the_tier_split_is_still_listed_and_restored_as_the_cache(
    runner: BackupRunner, s3: MotoS3, tmp_path: Path
) -> None:
    """Objects written before the split sit directly under redis/dev/YYYY/ (no tier metadata)
    until the lifecycle expires them: found for the cache, never for the state tier."""
    key = runner.checked("backup.sh", "all")
    client = s3.client()
    good = client.get_object(Bucket=s3.bucket, Key=key)
    legacy = "redis/dev/2000/01/01/20000101T000000Z-redis-1.rdb"
    meta = {k: v for k, v in good["Metadata"].items() if k not in ("tier", "master")}
    client.put_object(Bucket=s3.bucket, Key=legacy, Body=good["Body"].read(), Metadata=meta)
    try:
        cache_keys = [line.split("\t")[0] for line in runner.run("restore.sh", "list", "cache").stdout.splitlines()]
        state_keys = [line.split("\t")[0] for line in runner.run("restore.sh", "list", "state").stdout.splitlines()]
        assert cache_keys[0] == legacy and cache_keys[-1] == key  # name order is time order
        assert legacy not in state_keys
        assert runner.checked("restore.sh", "fetch", "cache", legacy, str(tmp_path)) == legacy
        failed(
            runner.run("restore.sh", "fetch", "state", legacy, str(tmp_path / "s"), tier="state"),
            f"{legacy} is not a backup of the state tier",
        )
    finally:
        for v in client.list_object_versions(Bucket=s3.bucket, Prefix=legacy).get("Versions", []):
            client.delete_object(Bucket=s3.bucket, Key=legacy, VersionId=v["VersionId"])


@pytest.mark.default_server_line  # each line's RDB through fetch and prepare is checked above
def test_after_losing_every_node_the_restore_brings_both_tiers_back_state_first_under_acl_users_and_tls(
    runner: BackupRunner, cluster: LoopbackCluster
) -> None:
    """Per tier, state first: restore.sh fetch + prepare into its pod 0's empty data directory,
    then the pods' own start scripts; then the Sentinels. Each restored master loads the data,
    its users from its users.acl and the Secret, and serves TLS; the application reads each
    tier's key back and the next backup of each tier works as before."""
    write_test_key(cluster)
    keys = {tier: runner.checked("backup.sh", "all", tier=tier) for tier in ("state", "cache")}
    everything = [*cluster.sentinels, *cluster.data_nodes]
    try:
        for node in everything:
            cluster.kill_node(node, signal.SIGKILL)
        for node in everything:
            cluster.wipe_data(node)
        for tier in ("state", "cache"):
            nodes = cluster.tier_nodes(tier)
            target = nodes[0].workdir / "data"
            target.mkdir(parents=True)
            assert runner.checked("restore.sh", "fetch", tier, keys[tier], str(target), tier=tier) == keys[tier]
            runner.checked("restore.sh", "prepare", tier, str(target), tier=tier)
            for node in nodes:
                cluster.start_node(node, extra_env={"SENTINEL_QUERY_ATTEMPTS": "1"})
        for node in cluster.sentinels:
            cluster.start_node(node)
        cluster.wait_for("the restored topology to converge", cluster.converged, timeout=120)
    finally:
        restart(cluster, everything)
    for tier, key in TIER_TEST_KEYS.items():
        pod0 = cluster.tier_nodes(tier)[0]
        assert cluster.masters(tier) == [pod0], tier
        with cluster.client(pod0, user=acl.APPLICATION.name) as app:
            assert app.get(key) == f"{tier} value" and 0 < app.ttl(key) <= 3600, tier
        done = runner.run("backup.sh", "dump", tier=tier)
        assert done.returncode == 0, done.stderr
        assert "role=replica" in (runner.scratch / "dump.meta").read_text()
