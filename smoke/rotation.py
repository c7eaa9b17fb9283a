"""Zero-downtime password rotation of one ACL user (docs/runbooks/password-rotation.md).

Redis users accept several passwords, and each user's Secret file lists them one per line, the
first being the one clients send. A rotation is three Secret edits, each followed by making the
live cluster agree:

1. ``old\\nnew``: every data node accepts both (``sync-acl.sh`` on every Redis pod of both tiers);
2. ``new\\nold``: every data node applies it again (``masterauth`` becomes the new replication
   password), then the clients roll and send the new one (both still accepted);
3. once every pod's mounted Secret shows the new first line (and the exporter wrappers had time to
   re-read it), ``new``: every data node drops the old one (``sync-acl.sh`` again).

No client is ever refused: until step 3 the old password works, and from step 2 nobody sends it.
The steps run against a :class:`RotationTarget`: :class:`KubernetesTarget` (kubectl, the real
procedure) or the rehearsal (:class:`RehearsalTarget`, what the tests drive under traffic).

    python -m smoke.rotation --stack prod --user app --roll dict/deployment/dict-api
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from components import acl
from components import topology as t
from components.acl import GENERATED_PASSWORD_ALPHABET, GENERATED_PASSWORD_LENGTH
from components.topology import Topology
from smoke.cli import HelpWithDefaults

# The container of each pod that runs sync-acl.sh / reads the mounted Secret (components/redis.py,
# components/sentinel.py).
REDIS_CONTAINER = "redis"
SENTINEL_CONTAINER = "sentinel"
_EXPORTER_SCRIPT = Path(__file__).resolve().parent.parent / "components/renderers/scripts/start-exporter.sh"


def exporter_reload_seconds(script: Path = _EXPORTER_SCRIPT) -> int:
    """How often the exporter wrapper re-reads its password file: the script's own default."""
    match = re.search(r'^: "\$\{EXPORTER_RELOAD_SECONDS:=(\d+)\}"', script.read_text(), re.MULTILINE)
    if match is None:
        raise RotationError(f"no EXPORTER_RELOAD_SECONDS default in {script}")
    return int(match.group(1))


class RotationError(RuntimeError):
    """A step failed; the message says which, and the Secret still holds an accepted password."""


def new_password() -> str:
    """A password like the generated ones (components/auth.py): no quoting needed anywhere."""
    return "".join(secrets.choice(GENERATED_PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


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

    def await_propagation(self, user: str, first: str) -> None:
        """Return once every pod reading ``user``'s Secret file sees ``first`` as its first line
        and whatever re-reads that file by itself (the exporter wrapper) has done so."""
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
    target.sync_nodes(user, fingerprint([new, old]))
    target.roll_clients(user)
    log.say("2/3 clients rolled to the new password")
    target.await_propagation(user, new)
    log.say("every pod reads the new password first")
    target.write_secret(key, f"{new}\n")
    target.sync_nodes(user, fingerprint([new]))
    log.say("3/3 the old password is refused everywhere")
    return log


@dataclass(frozen=True)
class Workload:
    """A client workload to restart: ``NS/KIND/NAME``, or ``KIND/NAME`` in the Redis namespace."""

    namespace: str
    ref: str  # KIND/NAME, as kubectl rollout takes it

    @classmethod
    def parse(cls, text: str, default_namespace: str) -> Workload:
        parts = text.split("/")
        if len(parts) == 2 and all(parts):
            return cls(default_namespace, text)
        if len(parts) == 3 and all(parts):
            return cls(parts[0], f"{parts[1]}/{parts[2]}")
        raise ValueError(f"--roll {text!r}: expected NS/KIND/NAME or KIND/NAME, e.g. dict/deployment/dict-api")


class KubernetesTarget:
    """The procedure against a deployed stack, through kubectl (no password on any argv: Secret
    patches go through a private temp file, passwords are read by the pods from their mount, and
    a pod reports only a digest of what it reads)."""

    def __init__(
        self,
        topology: Topology,
        *,
        roll: list[Workload] | None = None,
        kubectl: str = "kubectl",
        propagation_timeout: float = 180,
        poll_seconds: float = 5,
    ) -> None:
        self.topology = topology
        self.namespace = topology.namespace
        self.secret = topology.secret
        # StatefulSet pods are named <statefulset>-<ordinal>.
        # Every data pod of both tiers (the cache and the state tier share the ACL users).
        self.redis_pods = [f"{tier.statefulset}-{i}" for tier in topology.tiers for i in range(tier.replicas)]
        self.sentinel_pods = [f"{topology.sentinel}-{i}" for i in range(topology.sentinel_replicas)]
        self.roll = roll or []
        self.kubectl = kubectl
        self.propagation_timeout = propagation_timeout
        self.poll_seconds = poll_seconds

    def _run(self, *args: str, check: bool = True, namespace: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [self.kubectl, "-n", namespace or self.namespace, *args]
        result = subprocess.run(argv, capture_output=True, text=True)
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
        return self._run("exec", pod, "-c", REDIS_CONTAINER, "--", "sh", script, *args, check=False)

    def _wait(self, pods: list[str], seen: Callable[[str], bool], what: str) -> None:
        """Poll each pod until ``seen(pod)``: the kubelet refreshes mounted Secrets after a delay
        (up to about a minute)."""
        deadline = time.monotonic() + self.propagation_timeout
        pending = list(pods)
        while pending:
            if seen(pending[0]):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RotationError(f"{pending[0]} still does not see {what} after {self.propagation_timeout}s")
            time.sleep(self.poll_seconds)

    def sync_nodes(self, user: str, expected: str) -> None:
        # Wait until every pod reads the new content before applying it anywhere.
        self._wait(
            self.redis_pods,
            lambda pod: f"{user} {expected}" in self._exec_sync(pod, "--check").stdout.splitlines(),
            "the new Secret",
        )
        for pod in self.redis_pods:
            result = self._exec_sync(pod)
            if result.returncode != 0:
                raise RotationError(f"sync-acl.sh failed on {pod}: {result.stderr.strip()}")

    def roll_clients(self, user: str) -> None:
        targets = list(self.roll)
        if user == acl.SENTINEL.name:
            # start-sentinel.sh writes `sentinel auth-pass` from the Secret at every start.
            targets.append(Workload(self.namespace, f"statefulset/{self.topology.sentinel}"))
        for workload in targets:
            self._run("rollout", "restart", workload.ref, namespace=workload.namespace)
            self._run("rollout", "status", workload.ref, "--timeout=15m", namespace=workload.namespace)

    def _first_line_digest(self, pod: str, container: str, key: str) -> str:
        # The pod prints a SHA-256 of the first line, never the line itself; the file path is
        # the only argument.
        script = 'head -n 1 "$1" | tr -d "\\n" | sha256sum'
        result = self._run(
            "exec", pod, "-c", container, "--", "sh", "-c", script, "sh", f"{t.AUTH_DIR}/{key}", check=False
        )
        return result.stdout.split()[0] if result.returncode == 0 and result.stdout.strip() else ""

    def await_propagation(self, user: str, first: str) -> None:
        key = acl.user(user).secret_key
        digest = hashlib.sha256(first.encode()).hexdigest()
        for pods, container in ((self.redis_pods, REDIS_CONTAINER), (self.sentinel_pods, SENTINEL_CONTAINER)):
            self._wait(
                pods,
                lambda pod, c=container: self._first_line_digest(pod, c, key) == digest,
                f"the new first line of {key}",
            )
        if user == acl.EXPORTER.name:
            # The exporter sidecars look at their file every EXPORTER_RELOAD_SECONDS; two periods
            # leave room for the restart of the exporter itself.
            time.sleep(2 * exporter_reload_seconds())


class RehearsalTarget:
    """The same steps against a :class:`smoke.local.rehearsal.LoopbackCluster` (tests, ``make``)."""

    def __init__(self, cluster: object, roll: Callable[[str], None] | None = None) -> None:
        from smoke.local.rehearsal import LoopbackCluster

        assert isinstance(cluster, LoopbackCluster)
        self.cluster = cluster
        self.roll = roll

    def read_secret(self, key: str) -> str:
        return self.cluster.read_secret(key)

    def write_secret(self, key: str, value: str) -> None:
        self.cluster.write_secret(key, value)

    def sync_nodes(self, user: str, expected: str) -> None:
        for node in self.cluster.data_nodes:
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
            # As `rollout restart statefulset/redis-sentinel`: one Sentinel at a time goes down
            # and comes back through start-sentinel.sh, which re-reads the Secret.
            for sentinel in self.cluster.sentinels:
                self.cluster.kill_node(sentinel, signal.SIGTERM)
                self.cluster.start_node(sentinel)
                self.cluster.wait_for(f"{sentinel.name} back in the topology", self.cluster.converged, timeout=60)
        if self.roll is not None:
            self.roll(user)

    def await_propagation(self, user: str, first: str) -> None:
        # The rehearsal's Secret files change at once (no kubelet delay); the exporter test's
        # roll callback waits for its wrapper itself.
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smoke.rotation", description=__doc__.split("\n\n")[0], formatter_class=HelpWithDefaults
    )
    parser.add_argument("--stack", required=True, help="stack name: names and namespace from Pulumi.<stack>.yaml")
    parser.add_argument("--user", required=True, choices=[u.name for u in acl.USERS])
    parser.add_argument(
        "--roll",
        action="append",
        metavar="[NS/]KIND/NAME",
        help="client workload to restart at step 2 (repeat); without NS: the Redis namespace",
    )
    args = parser.parse_args(argv)

    # Imported here: the render harness pulls in the Pulumi mock runtime, which the tests of the
    # targets above do not need.
    from components.settings import SettingsError, settings_from_config
    from smoke.local.render import stack_config

    try:
        config, _, _ = stack_config(args.stack)
        settings = settings_from_config(config, args.stack)
    except SettingsError as exc:
        print(f"rotation failed: the stack config of {args.stack} is invalid: {exc}", file=sys.stderr)
        return 2
    try:
        roll = [Workload.parse(text, settings.namespace) for text in args.roll or []]
    except ValueError as exc:
        parser.error(str(exc))
    outside = [w for w in roll if settings.client_namespaces and w.namespace not in settings.client_namespaces]
    if outside:
        allowed = ", ".join(settings.client_namespaces)
        parser.error(f"--roll {outside[0].namespace}/{outside[0].ref}: clientNamespaces of {args.stack} are {allowed}")
    target = KubernetesTarget(Topology.of(settings), roll=roll)
    try:
        rotate(target, args.user)
    except RotationError as exc:
        print(f"rotation failed: {exc}", file=sys.stderr)
        return 1
    print(f"rotation of {args.user} done; the Secret holds only the new password", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
