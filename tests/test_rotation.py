"""The password rotation tool (smoke/rotation.py) and the Secret it edits (components/auth.py).

The Kubernetes target runs against a fake ``kubectl`` that keeps the Secret in a file, answers
like the pods would, and records every argv: the steps must come in the runbook's order and no
password may ever be on a command line. The rehearsal target rotates the Sentinels' ACL user by
restarting each Sentinel through its start script, as the Kubernetes rollout does."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from components import acl
from components.acl import GENERATED_PASSWORD_ALPHABET, GENERATED_PASSWORD_LENGTH
from components.settings import settings_from_config
from components.topology import Topology
from smoke.local.rehearsal import LoopbackCluster
from smoke.local.render import Rendered
from smoke.rotation import KubernetesTarget, RehearsalTarget, Workload, new_password, rotate

# The fake kubectl: state (the Secret's data, base64) in $FAKE_KUBECTL_DIR/secret.json, every
# argv appended to calls.jsonl. It answers as the pods would: sync-acl.sh --check prints every
# user's fingerprint of the current Secret; the digest command prints sha256 of a first line.
FAKE_KUBECTL = r"""#!@PYTHON@
import base64, hashlib, json, os, sys
from pathlib import Path

state_dir = Path(os.environ["FAKE_KUBECTL_DIR"])
argv = sys.argv[1:]
with (state_dir / "calls.jsonl").open("a") as calls:
    calls.write(json.dumps(argv) + "\n")
data = json.loads((state_dir / "secret.json").read_text())
args = argv[2:]  # after -n NS

def lines(key):
    return [l for l in base64.b64decode(data[key]).decode().splitlines() if l]

if args[:2] == ["get", "secret"]:
    key = args[-1].removeprefix("jsonpath={.data.").removesuffix("}")
    print(data[key], end="")
elif args[:2] == ["patch", "secret"]:
    patch = json.loads(Path(args[args.index("--patch-file") + 1]).read_text())
    data.update(patch["data"])
    (state_dir / "secret.json").write_text(json.dumps(data))
elif args[0] == "exec" and "sync-acl.sh" in args[-2] + args[-1]:
    if args[-1] == "--check":
        for key in data:
            if key.endswith("-password"):
                hashes = " ".join("#" + hashlib.sha256(p.encode()).hexdigest() for p in lines(key))
                print(key.removesuffix("-password"), hashlib.sha256(hashes.encode()).hexdigest()[:12])
elif args[0] == "exec" and "sha256sum" in " ".join(args):
    key = Path(args[-1]).name
    print(hashlib.sha256(lines(key)[0].encode()).hexdigest() + "  -")
elif args[0] == "rollout":
    pass
else:
    sys.exit(f"fake kubectl: unexpected {argv}")
"""


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.replace("@PYTHON@", sys.executable))
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IXUSR)
    data = {key: _b64(new_password() + "\n") for key in acl.secret_keys()}
    (tmp_path / "secret.json").write_text(json.dumps(data))
    monkeypatch.setenv("FAKE_KUBECTL_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _calls(state_dir: Path) -> list[list[str]]:
    return [json.loads(line) for line in (state_dir / "calls.jsonl").read_text().splitlines()]


def _step(argv: list[str]) -> str:
    """A call's place in the procedure: patch, check, sync, roll, status, digest or read."""
    args = argv[2:]
    if args[0] == "exec":
        if "sha256sum" in " ".join(args):
            return "digest"
        return "check" if args[-1] == "--check" else "sync"
    return {"get": "read", "patch": "patch", "rollout": args[1] if args[1] == "status" else "roll"}[args[0]]


def _collapse(steps: list[str]) -> list[str]:
    """Runs of the same step (one per pod) as one."""
    return [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s]


def test_kubernetes_target_runs_the_steps_in_order_with_no_password_on_any_argv(fake_kubectl: Path) -> None:
    settings = settings_from_config({"clientNamespaces": '["dict"]'}, "prod")
    topo = Topology.of(settings)
    before = json.loads((fake_kubectl / "secret.json").read_text())
    old = next(line for line in _decode(before["app-password"]).splitlines() if line)
    roll = [Workload.parse("dict/deployment/dict-api", topo.namespace)]
    target = KubernetesTarget(topo, roll=roll, poll_seconds=0.01, propagation_timeout=5)

    rotate(target, "app", password="N" * GENERATED_PASSWORD_LENGTH)

    calls = _calls(fake_kubectl)
    assert _collapse([_step(c) for c in calls]) == [
        "read",
        "patch", "check", "sync",  # step 1: old,new accepted everywhere
        "patch", "check", "sync",  # step 2: new,old applied (masterauth for replication) ...
        "roll", "status",  # ... then the clients restart
        "digest",  # every pod reads the new first line
        "patch", "check", "sync",  # step 3: only new
    ]  # fmt: skip
    # Every data pod of both tiers: the cache and the state tier share the ACL users.
    redis_pods = [f"{tier.statefulset}-{i}" for tier in topo.tiers for i in range(tier.replicas)]
    assert "redis-state-0" in redis_pods and "redis-0" in redis_pods
    sentinel_pods = [f"{topo.sentinel}-{i}" for i in range(topo.sentinel_replicas)]
    syncs = [c[3] for c in calls if _step(c) == "sync"]
    assert syncs == redis_pods * 3
    assert [c[3] for c in calls if _step(c) == "digest"] == redis_pods + sentinel_pods
    # The client lives in its own namespace, not the Redis one.
    rollout = next(c for c in calls if _step(c) == "roll")
    assert rollout[:2] == ["-n", "dict"] and rollout[-1] == "deployment/dict-api"
    assert all(c[:2] == ["-n", topo.namespace] for c in calls if _step(c) not in ("roll", "status"))
    assert all(topo.secret in c for c in calls if _step(c) in ("read", "patch"))

    after = json.loads((fake_kubectl / "secret.json").read_text())
    assert _decode(after["app-password"]) == "N" * GENERATED_PASSWORD_LENGTH + "\n"
    passwords = {old, "N" * GENERATED_PASSWORD_LENGTH} | {_decode(v).strip() for v in before.values()}
    flat = "\n".join(" ".join(c) for c in calls)
    assert not [p for p in passwords if p in flat]


def test_a_sentinel_user_rotation_restarts_the_sentinel_statefulset(fake_kubectl: Path) -> None:
    topo = Topology.of(settings_from_config({}, "dev"))
    rotate(KubernetesTarget(topo, poll_seconds=0.01, propagation_timeout=5), acl.SENTINEL.name)
    rollouts = [c for c in _calls(fake_kubectl) if _step(c) in ("roll", "status")]
    assert [c[2:5] for c in rollouts] == [
        ["rollout", "restart", f"statefulset/{topo.sentinel}"],
        ["rollout", "status", f"statefulset/{topo.sentinel}"],
    ]


def _decode(value: str) -> str:
    return base64.b64decode(value).decode()


def test_roll_targets_name_their_namespace_or_default_to_redis() -> None:
    assert Workload.parse("dict/deployment/dict-api", "redis") == Workload("dict", "deployment/dict-api")
    assert Workload.parse("statefulset/x", "redis") == Workload("redis", "statefulset/x")
    for bad in ("dict-api", "a/b/c/d", "dict//x", "/deployment/x"):
        with pytest.raises(ValueError, match=r"NS/KIND/NAME or KIND/NAME"):
            Workload.parse(bad, "redis")


def test_new_passwords_are_shaped_like_the_generated_ones() -> None:
    passwords = {new_password() for _ in range(20)}
    assert len(passwords) == 20
    assert all(len(p) == GENERATED_PASSWORD_LENGTH and set(p) <= set(GENERATED_PASSWORD_ALPHABET) for p in passwords)


def test_the_secret_ignores_each_existing_key_not_the_whole_map(dev: Rendered) -> None:
    """``pulumi up`` must keep rotated values (each key ignored) yet add a key the Secret lacks
    (so not all of ``stringData``): a stack from before a user existed gets its password."""
    (secret,) = [r for r in dev.resources if r.type == "kubernetes:core/v1:Secret" and "auth" in r.name]
    assert set(dev.find("Secret", "redis-auth")["stringData"]) == set(acl.secret_keys())
    assert sorted(secret.ignore_changes) == sorted(f'stringData["{key}"]' for key in acl.secret_keys())
    assert "stringData" not in secret.ignore_changes


@pytest.mark.redis
def test_a_rehearsal_sentinel_rotation_restarts_every_sentinel(fresh_cluster: LoopbackCluster) -> None:
    """Rotating the Sentinels' ACL user restarts each Sentinel through start-sentinel.sh (as the
    StatefulSet rollout does); after step 3 the Sentinels still log in to every data node."""
    cluster = fresh_cluster
    pids = {s.name: s.process.pid for s in cluster.sentinels if s.process}
    rotate(RehearsalTarget(cluster), acl.SENTINEL.name)
    assert all(s.process and s.process.pid != pids[s.name] for s in cluster.sentinels)
    assert len(cluster.read_secret(acl.SENTINEL.secret_key).splitlines()) == 1
    # Drop the Sentinels' links: they must come back with the password they read at start.
    (master,) = cluster.masters()
    with cluster.client(master) as c:
        c.execute_command("CLIENT", "KILL", "USER", acl.SENTINEL.name)
    deadline = time.monotonic() + 20
    while True:
        with cluster.client(master) as c:
            users = [line for line in c.execute_command("CLIENT", "LIST").splitlines() if "user=sentinel " in line]
        if len(users) >= 2 * len(cluster.sentinels):  # a command and a pub/sub link each
            break
        assert time.monotonic() < deadline, f"Sentinels did not log in again: {users}"
        time.sleep(0.2)
    assert cluster.converged()
