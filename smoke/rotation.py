"""Zero-downtime password rotation of one ACL user (docs/runbooks/password-rotation.md).

Redis users accept several passwords, and each user's Secret file lists them one per line, the
first being the one clients send. A rotation is three Secret edits, each followed by making the
live cluster agree:

1. ``old\\nnew``: every data node accepts both (``sync-acl.sh`` on every Redis pod);
2. ``new\\nold``: clients roll and send the new one (both still accepted);
3. ``new``: every data node drops the old one (``sync-acl.sh`` again).

No client is ever refused: until step 3 the old password works, and from step 2 nobody sends it.
The steps run against a :class:`RotationTarget`: :class:`KubernetesTarget` (kubectl, the real
procedure) or the rehearsal (:class:`RehearsalTarget`, what the tests drive under traffic).

    python -m smoke.rotation --namespace redis --user app --roll deployment/dict-api
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from components import acl
from components import topology as t

# Same alphabet and length as the generated passwords (components/auth.py): no quoting anywhere.
_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 40


class RotationError(RuntimeError):
    """A step failed; the message says which, and the Secret still holds an accepted password."""


def new_password() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(PASSWORD_LENGTH))


def fingerprint(passwords: list[str]) -> str:
    """What ``sync-acl.sh`` prints for a user: a digest of the ACL hashes of its passwords."""
    hashes = " ".join(f"#{hashlib.sha256(p.encode()).hexdigest()}" for p in passwords)
    return hashlib.sha256(hashes.encode()).hexdigest()[:12]


class RotationTarget(Protocol):
    def read_secret(self, key: str) -> str: ...

    def write_secret(self, key: str, value: str) -> None: ...

    def sync_nodes(self, user: str, expected: str) -> None:
        """Apply the Secret to every data node's live ACL once each pod sees ``expected`` (the
        user's fingerprint); raise :class:`RotationError` when one cannot."""
        ...

    def roll_clients(self, user: str) -> None:
        """Make every client of ``user`` reconnect with the first password of its file."""
        ...


@dataclass
class RotationLog:
    user: str
    steps: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.steps.append(text)
        print(f"rotation[{self.user}]: {text}", file=sys.stderr, flush=True)


def rotate(target: RotationTarget, user: str, password: str | None = None) -> RotationLog:
    """Rotate ``user``'s password (a new one unless given) with the three steps above."""
    key = acl.user(user).secret_key
    log = RotationLog(user)
    current = [line for line in target.read_secret(key).splitlines() if line]
    if not current:
        raise RotationError(f"the Secret key {key} is empty")
    old = current[0]
    new = password or new_password()

    target.write_secret(key, f"{old}\n{new}\n")
    target.sync_nodes(user, fingerprint([old, new]))
    log.say("1/3 every data node accepts the old and the new password")
    target.write_secret(key, f"{new}\n{old}\n")
    target.roll_clients(user)
    log.say("2/3 clients rolled to the new password")
    target.write_secret(key, f"{new}\n")
    target.sync_nodes(user, fingerprint([new]))
    log.say("3/3 the old password is refused everywhere")
    return log


class KubernetesTarget:
    """The procedure against a deployed stack, through kubectl (no password on any argv: Secret
    patches go through a private temp file, passwords are read by the pods from their mount)."""

    def __init__(
        self,
        namespace: str,
        *,
        secret: str = "redis-auth",
        redis_pods: list[str] | None = None,
        roll: list[str] | None = None,
        kubectl: str = "kubectl",
        propagation_timeout: float = 180,
    ) -> None:
        self.namespace = namespace
        self.secret = secret
        self.redis_pods = redis_pods or [f"redis-{i}" for i in range(3)]
        self.roll = roll or []
        self.kubectl = kubectl
        self.propagation_timeout = propagation_timeout

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.kubectl, "-n", self.namespace, *args], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RotationError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
        return result

    def read_secret(self, key: str) -> str:
        # Secret keys here hold no dots, so the JSONPath needs no escaping.
        raw = self._run("get", "secret", self.secret, "-o", f"jsonpath={{.data.{key}}}").stdout
        return base64.b64decode(raw).decode()

    def write_secret(self, key: str, value: str) -> None:
        patch = {"data": {key: base64.b64encode(value.encode()).decode()}}
        fd, path = tempfile.mkstemp(prefix="redis-rotation-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(patch, handle)
            self._run("patch", "secret", self.secret, "--type", "merge", "--patch-file", path)
        finally:
            os.unlink(path)

    def _exec_sync(self, pod: str, *args: str) -> subprocess.CompletedProcess[str]:
        script = f"{t.REDIS_CONFIG_DIR}/sync-acl.sh"
        return self._run("exec", pod, "-c", "redis", "--", "sh", script, *args, check=False)

    def sync_nodes(self, user: str, expected: str) -> None:
        # The kubelet refreshes mounted Secrets after a delay (up to about a minute): wait until
        # every pod reads the new content before applying it anywhere.
        deadline = time.monotonic() + self.propagation_timeout
        pending = list(self.redis_pods)
        while pending:
            seen = self._exec_sync(pending[0], "--check")
            if f"{user} {expected}" in seen.stdout.splitlines():
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RotationError(f"{pending[0]} still does not see the new Secret after {self.propagation_timeout}s")
            time.sleep(5)
        for pod in self.redis_pods:
            result = self._exec_sync(pod)
            if result.returncode != 0:
                raise RotationError(f"sync-acl.sh failed on {pod}: {result.stderr.strip()}")

    def roll_clients(self, user: str) -> None:
        targets = list(self.roll)
        if user == acl.SENTINEL.name:
            targets.append("statefulset/redis-sentinel")  # start-sentinel.sh re-reads auth-pass
        for workload in targets:
            self._run("rollout", "restart", workload)
            self._run("rollout", "status", workload, "--timeout=15m")


class RehearsalTarget:
    """The same steps against a :class:`smoke.rehearsal.LoopbackCluster` (tests, ``make``)."""

    def __init__(self, cluster: object, roll: Callable[[str], None] | None = None) -> None:
        from smoke.rehearsal import LoopbackCluster

        assert isinstance(cluster, LoopbackCluster)
        self.cluster = cluster
        self.roll = roll

    def read_secret(self, key: str) -> str:
        return self.cluster.read_secret(key)

    def write_secret(self, key: str, value: str) -> None:
        self.cluster.write_secret(key, value)

    def sync_nodes(self, user: str, expected: str) -> None:
        for node in self.cluster.redis_nodes:
            if not node.running:
                continue
            check = self.cluster.run_script(node, "sync-acl.sh", "--check", timeout=30)
            if f"{user} {expected}" not in check.stdout.splitlines():
                raise RotationError(f"{node.name} does not see the new password file: {check.stdout}")
            result = self.cluster.run_script(node, "sync-acl.sh", timeout=30)
            if result.returncode != 0:
                raise RotationError(f"sync-acl.sh failed on {node.name}: {result.stderr.strip()}")

    def roll_clients(self, user: str) -> None:
        if user == acl.SENTINEL.name:
            password = self.cluster.read_secret(acl.SENTINEL.secret_key).splitlines()[0]
            for sentinel in self.cluster.sentinels:
                with self.cluster.client(sentinel) as c:
                    c.execute_command("SENTINEL", "SET", self.cluster.master_name, "auth-pass", password)
        if self.roll is not None:
            self.roll(user)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smoke.rotation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--user", required=True, choices=[u.name for u in acl.USERS])
    parser.add_argument("--secret", default="redis-auth")
    parser.add_argument("--redis-pods", type=int, default=3, help="Redis pods redis-0..N-1 (default 3)")
    parser.add_argument(
        "--roll", action="append", default=[], metavar="KIND/NAME", help="client workload to restart (repeat)"
    )
    args = parser.parse_args(argv)
    target = KubernetesTarget(
        args.namespace, secret=args.secret, redis_pods=[f"redis-{i}" for i in range(args.redis_pods)], roll=args.roll
    )
    try:
        rotate(target, args.user)
    except RotationError as exc:
        print(f"rotation failed: {exc}", file=sys.stderr)
        return 1
    print(f"rotation of {args.user} done; the Secret holds only the new password", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
