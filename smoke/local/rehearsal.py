"""The local rehearsal: the stack's rendered config and scripts, run as real processes on loopback.

Each pod of the StatefulSets becomes one server or Sentinel process started by the *same* start
script the pod runs (under ``busybox sh`` with BusyBox's applets first on PATH, as in the Alpine
image), with one 127.x.y.z address per pod and the standard ports. Both data tiers start: the
LRU cache (``redis-<n>``, ``redis_nodes``) and the state tier that never evicts
(``redis-state-<n>``, ``state_nodes``), each from its own rendered ``redis.conf``, under the
same Sentinels, which monitor one master per tier. Only the environment differs
from Kubernetes: addresses, directories, the password file, and which server line's binaries the
scripts start (``SERVER_LINE``: ``valkey-server``/... or ``redis-server``/...; see
``components/server_lines.py``). The rehearsal starts as many data nodes and Sentinels as the
render has pods.

Use it as a context manager; everything it started is stopped on exit, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
import yaml

from components import acl, server_lines
from components.renderers.scripts import SCRIPT_NAMES
from components.server_lines import ServerLine
from components.topology import STATE_CONFIG
from smoke.local.certificates import TlsFiles, make_certificates
from smoke.strategies.client import ClientConfig, tls_options

REDIS_PORT = 6379
SENTINEL_PORT = 26379
# Which server line a rehearsal runs when none is given: REHEARSAL_SERVER_LINE, else the default
# image's line.
SERVER_LINE_ENV = "REHEARSAL_SERVER_LINE"
# The most pods one 127.a.b.0/24 block holds: cache data nodes at .1-.9, Sentinels at .11-.19,
# state-tier data nodes at .21-.29.
MAX_PODS = 9
CACHE_BASE, SENTINEL_BASE, STATE_BASE = 1, 11, 21
# The state tier's redis.conf and users.acl beside the cache's in the rehearsal's etc/.
STATE_CONF = "redis-state.conf"
STATE_ACL = "users-state.acl"


class RehearsalError(RuntimeError):
    """The topology could not be started or did not converge; the message says what and where."""


@dataclass(frozen=True)
class RenderedFiles:
    """What the rehearsal takes from a render: the config texts and the scripts."""

    redis_conf: str
    sentinel_conf: str
    scripts: dict[str, str]
    # users.acl from the Redis ConfigMap (users and rules, no passwords).
    acl_template: str = field(default_factory=acl.render_acl_template)
    # The state tier's redis.conf and users.acl (its own ConfigMap); None: a render without one.
    state_redis_conf: str | None = None
    state_acl_template: str = field(default_factory=lambda: acl.render_acl_template(tier="state"))

    @property
    def tls(self) -> bool:
        """Whether the render turns TLS on (the scripts' REDIS_TLS default)."""
        return ': "${REDIS_TLS:=yes}"' in self.scripts.get("common.sh", "")

    def _rendered_addresses(self, variable: str) -> list[str]:
        match = re.search(rf'^: "\$\{{{variable}:=([^}}"]*)\}}"', self.scripts.get("common.sh", ""), re.MULTILINE)
        if not match:
            raise RehearsalError(f"the rendered common.sh has no default for {variable}")
        return match.group(1).split()

    @property
    def redis_count(self) -> int:
        """How many data node pods the render has (its REDIS_ADDRS)."""
        return len(self._rendered_addresses("REDIS_ADDRS"))

    @property
    def sentinel_count(self) -> int:
        """How many Sentinel pods the render has (its SENTINEL_ADDRS)."""
        return len(self._rendered_addresses("SENTINEL_ADDRS"))

    @property
    def master_name(self) -> str:
        """The cache tier's master name (the first ``sentinel monitor`` line)."""
        return self.master_names[0]

    @property
    def master_names(self) -> list[str]:
        """Every master the Sentinels monitor, one per tier: the cache first, then the state tier."""
        names = re.findall(r"^sentinel monitor (\S+) ", self.sentinel_conf, re.MULTILINE)
        if not names:
            raise RehearsalError("the rendered sentinel.conf has no 'sentinel monitor' line")
        return names

    @property
    def state_count(self) -> int:
        """How many state-tier pods the render has (its SENTINEL_MONITORS entry), 0 without one."""
        if self.state_redis_conf is None:
            return 0
        monitors = self._rendered_addresses("SENTINEL_MONITORS")
        if len(monitors) < 2:
            raise RehearsalError("the render has a state tier but SENTINEL_MONITORS names one tier only")
        return len(monitors[1].split("=", 1)[1].split(","))

    @classmethod
    def from_render_dir(cls, k8s_dir: Path) -> RenderedFiles:
        """Read the ConfigMaps that ``make render`` wrote for one stack (the state tier's apart:
        its files have the same names as the cache's)."""
        data: dict[str, str] = {}
        state: dict[str, str] = {}
        for path in sorted(k8s_dir.glob("configmap-*.yaml")):
            found = yaml.safe_load(path.read_text()).get("data") or {}
            (state if path.name == f"configmap-{STATE_CONFIG}.yaml" else data).update(found)
        missing = [name for name in ("redis.conf", "sentinel.conf", "users.acl", *SCRIPT_NAMES) if name not in data]
        if missing:
            raise RehearsalError(f"{k8s_dir} lacks {', '.join(missing)}; run 'make render STACK=dev' first")
        return cls(
            redis_conf=data["redis.conf"],
            sentinel_conf=data["sentinel.conf"],
            scripts={name: data[name] for name in SCRIPT_NAMES},
            acl_template=data["users.acl"],
            state_redis_conf=state.get("redis.conf"),
            state_acl_template=state.get("users.acl", ""),
        )


@dataclass
class Node:
    """One pod of the rehearsal: its name, loopback address and process."""

    name: str
    kind: str  # "redis" or "sentinel"
    host: str
    port: int
    workdir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # A data node's tier: "cache" or "state" (a Sentinel: "").
    tier: str = ""
    # SIGSTOPped by pause_node() and not yet resumed: it answers nothing.
    paused: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "process.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def server_line(name: str | None = None) -> ServerLine:
    """The server line called ``name`` (default: $REHEARSAL_SERVER_LINE, else the default
    image's line); a clear error for a name that is not one."""
    chosen = name or os.environ.get(SERVER_LINE_ENV) or server_lines.DEFAULT_LINE.name
    try:
        return server_lines.LINES[chosen]
    except KeyError:
        where = f" (from ${SERVER_LINE_ENV})" if not name else ""
        choices = ", ".join(server_lines.LINES)
        raise RehearsalError(f"server line {chosen!r}{where} is not one the rehearsal runs; choose {choices}") from None


def required_binaries(line: ServerLine) -> tuple[str, ...]:
    return (*line.binaries, "busybox")


def missing_binaries(line: ServerLine | None = None) -> list[str]:
    return [name for name in required_binaries(line or server_line()) if shutil.which(name) is None]


def server_version(line: ServerLine) -> str:
    """The installed version of a line's server, e.g. '8.0.1' (from ``valkey-server --version``)."""
    out = subprocess.run([line.tool("server"), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\bv=(\d+\.\d+\.\d+)", out)
    if not match:
        raise RehearsalError(f"cannot read a version from {line.tool('server')} --version: {out.strip()!r}")
    return match.group(1)


def _address_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def choose_block(redis_count: int, sentinel_count: int, state_count: int = 0) -> str:
    """A free 127.a.b.0/24 block: cache pods at .1, .2, ..., Sentinels at .11, .12, ..., state-tier
    pods at .21, .22, ...

    Picked at random among ~25,000 blocks and checked by binding every address, so two
    rehearsals on one machine do not collide.
    """
    rng = random.SystemRandom()
    for _ in range(50):
        prefix = f"127.{rng.randint(100, 199)}.{rng.randint(1, 254)}"
        wanted = [(f"{prefix}.{1 + i}", REDIS_PORT) for i in range(redis_count)]
        wanted += [(f"{prefix}.{11 + i}", SENTINEL_PORT) for i in range(sentinel_count)]
        wanted += [(f"{prefix}.{STATE_BASE + i}", REDIS_PORT) for i in range(state_count)]
        if all(_address_free(host, port) for host, port in wanted):
            return prefix
    raise RehearsalError("no free 127.x.y.0/24 block found for the rehearsal after 50 tries")


class LoopbackCluster:
    """Redis pods and Sentinels from the rendered files, on loopback."""

    def __init__(
        self,
        files: RenderedFiles,
        *,
        redis_count: int | None = None,
        sentinel_count: int | None = None,
        workdir: Path | None = None,
        password: str | None = None,
        tls: bool | None = None,
        server: ServerLine | str | None = None,
    ) -> None:
        """``password`` is the Sentinels' password; every ACL user gets a generated one
        (``passwords``). ``tls`` overrides the render's TLS switch; with TLS on the rehearsal
        makes its own CA and a certificate for its loopback addresses. ``redis_count`` and
        ``sentinel_count`` default to the render's pods (the state tier always has the render's
        count); ``server`` is the server line (default :func:`server_line`)."""
        self.server = server if isinstance(server, ServerLine) else server_line(server)
        missing = missing_binaries(self.server)
        if missing:
            raise RehearsalError(
                f"missing binaries for the {self.server.name} line: {', '.join(missing)}; "
                "make deps installs them (Debian packages redis-server redis-sentinel redis-tools "
                "valkey-server valkey-sentinel valkey-tools busybox)"
            )
        redis_count = files.redis_count if redis_count is None else redis_count
        sentinel_count = files.sentinel_count if sentinel_count is None else sentinel_count
        state_count = files.state_count
        for what, count in (("data nodes", redis_count), ("Sentinels", sentinel_count)):
            if not 1 <= count <= MAX_PODS:
                raise RehearsalError(f"{count} {what}: the rehearsal starts between 1 and {MAX_PODS}")
        if state_count > MAX_PODS:
            raise RehearsalError(f"{state_count} state-tier data nodes: the rehearsal starts at most {MAX_PODS}")
        self.server_version = server_version(self.server)
        self.files = files
        self.master_name = files.master_name
        # The state tier's master name (None: a render without a state tier).
        self.state_master_name: str | None = files.master_names[1] if state_count else None
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="dict-redis-rehearsal-")) if workdir is None else workdir
        self.password = password or secrets.token_urlsafe(24)
        self.passwords = {u.name: secrets.token_urlsafe(24) for u in acl.USERS}
        self.tls = files.tls if tls is None else tls
        self.prefix = choose_block(redis_count, sentinel_count, state_count)
        self._prepare_files()
        self.tls_files: TlsFiles | None = None
        cache_hosts = [f"{self.prefix}.{CACHE_BASE + i}" for i in range(redis_count)]
        state_hosts = [f"{self.prefix}.{STATE_BASE + i}" for i in range(state_count)]
        sentinel_hosts = [f"{self.prefix}.{SENTINEL_BASE + i}" for i in range(sentinel_count)]
        if self.tls:
            self.tls_files = make_certificates(self.workdir / "tls", [*cache_hosts, *sentinel_hosts, *state_hosts])
        sentinel_addrs = " ".join(f"{host}:{SENTINEL_PORT}" for host in sentinel_hosts)
        redis_addrs = " ".join(f"{host}:{REDIS_PORT}" for host in cache_hosts)
        state_addrs = [f"{host}:{REDIS_PORT}" for host in state_hosts]
        monitors = [f"{self.master_name}={redis_addrs.replace(' ', ',')}"]
        if self.state_master_name:
            monitors.append(f"{self.state_master_name}={','.join(state_addrs)}")
        common = {
            "PATH": f"{self.workdir / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.workdir),
            "AUTH_DIR": str(self.auth_dir),
            "REDIS_TLS": "yes" if self.tls else "no",
            "TLS_DIR": str(self.workdir / "tls"),
            "SENTINEL_ADDRS": sentinel_addrs,
            "REDIS_ADDRS": redis_addrs,
            "REDIS_SEED_HOST": f"{self.prefix}.1",
            "MASTER_NAME": self.master_name,
            "SENTINEL_MONITORS": " ".join(monitors),
            "SERVER_LINE": self.server.name,
        }
        self.redis_nodes = [self._redis_node(i, common) for i in range(redis_count)]
        state_env = {
            **common,
            "REDIS_ADDRS": " ".join(state_addrs),
            "REDIS_SEED_HOST": state_hosts[0] if state_hosts else "",
            "MASTER_NAME": self.state_master_name or "",
        }
        self.state_nodes = [self._redis_node(i, state_env, tier="state") for i in range(state_count)]
        self.sentinels = [self._sentinel_node(i, common) for i in range(sentinel_count)]

    # --- set-up -------------------------------------------------------------------------------
    def _prepare_files(self) -> None:
        etc = self.workdir / "etc"
        scripts = self.workdir / "scripts"
        for directory in (etc, scripts, self.workdir / "auth", self.workdir / "bin"):
            directory.mkdir(parents=True, exist_ok=True)
        (etc / "redis.conf").write_text(self.files.redis_conf)
        if self.files.state_redis_conf is not None:
            (etc / STATE_CONF).write_text(self.files.state_redis_conf)
            (etc / STATE_ACL).write_text(self.files.state_acl_template)
        (etc / "users.acl").write_text(self.files.acl_template)
        (etc / "sentinel.conf").write_text(self.files.sentinel_conf)
        for name, text in self.files.scripts.items():
            (scripts / name).write_text(text)
            (scripts / name).chmod(0o555)
        # The mounted Secret: one file per key, as the kubelet writes them.
        self.auth_dir = self.workdir / "auth"
        for user, value in self.passwords.items():
            self.write_secret(acl.user(user).secret_key, value)
        self.write_secret(acl.SENTINEL_PASSWORD_KEY, self.password)
        # The application user's password file (what a client such as the smoke suite reads).
        self.password_file = self.auth_dir / acl.APPLICATION.secret_key
        self.sentinel_password_file = self.auth_dir / acl.SENTINEL_PASSWORD_KEY
        # BusyBox applets first on PATH, as in the Alpine image: a GNU-only flag fails here too.
        subprocess.run(["busybox", "--install", "-s", str(self.workdir / "bin")], check=True)

    def _own_source_template(self, rendered: str, pod: str, host: str) -> Path:
        """A copy of a rendered config (``etc/<rendered>``) for one pod, with ``bind-source-addr``
        its own address: on loopback the kernel gives every outgoing connection the source
        127.0.0.1, so replicas and Sentinels would look like the clients. A pod has an address of
        its own in Kubernetes; here this line gives it one, so a partition drill
        (:class:`smoke.drills.faults.Partition`) can cut peers off by address and leave the
        clients (the test process, from 127.0.0.1) through. Both server lines apply it to a
        replica's link and to every connection a Sentinel opens."""
        path = self.workdir / "etc" / f"{pod}.{rendered}"
        text = (self.workdir / "etc" / rendered).read_text()
        path.write_text(
            f"{text}\n# Added by the rehearsal: connect from this pod's own address\nbind-source-addr {host}\n"
        )
        return path

    def _redis_node(self, ordinal: int, common: dict[str, str], tier: str = "cache") -> Node:
        host = f"{self.prefix}.{(CACHE_BASE if tier == 'cache' else STATE_BASE) + ordinal}"
        name = f"redis-{ordinal}" if tier == "cache" else f"redis-state-{ordinal}"
        workdir = self.workdir / name
        template = self._own_source_template("redis.conf" if tier == "cache" else STATE_CONF, name, host)
        env = {
            **common,
            "POD_NAME": name,
            "REDIS_ANNOUNCE_HOST": host,
            "REDIS_BIND": host,
            "REDIS_HOST": host,
            "REDIS_CONFIG_TEMPLATE": str(template),
            "REDIS_ACL_TEMPLATE": str(self.workdir / "etc" / ("users.acl" if tier == "cache" else STATE_ACL)),
            "REDIS_RUN_DIR": str(workdir / "run"),
            "REDIS_DATA_DIR": str(workdir / "data"),
        }
        return Node(name, "redis", host, REDIS_PORT, workdir, env, tier=tier)

    def _sentinel_node(self, ordinal: int, common: dict[str, str]) -> Node:
        host = f"{self.prefix}.{SENTINEL_BASE + ordinal}"
        workdir = self.workdir / f"redis-sentinel-{ordinal}"
        template = self._own_source_template("sentinel.conf", f"redis-sentinel-{ordinal}", host)
        env = {
            **common,
            "POD_NAME": f"redis-sentinel-{ordinal}",
            "SENTINEL_ANNOUNCE_HOST": host,
            "SENTINEL_BIND": host,
            "SENTINEL_HOST": host,
            "SENTINEL_CONFIG_TEMPLATE": str(template),
            "SENTINEL_DATA_DIR": str(workdir / "data"),
        }
        return Node(f"redis-sentinel-{ordinal}", "sentinel", host, SENTINEL_PORT, workdir, env)

    # --- tiers --------------------------------------------------------------------------------
    @property
    def data_nodes(self) -> list[Node]:
        """Every data node of both tiers."""
        return [*self.redis_nodes, *self.state_nodes]

    @property
    def tiers(self) -> list[str]:
        """The data tiers this rehearsal runs: "cache", and "state" when the render has one."""
        return ["cache", "state"] if self.state_nodes else ["cache"]

    def tier_nodes(self, tier: str = "cache") -> list[Node]:
        if tier == "cache":
            return self.redis_nodes
        if tier == "state" and self.state_nodes:
            return self.state_nodes
        raise RehearsalError(f"tier {tier!r}: this rehearsal runs {', '.join(self.tiers)}")

    def tier_master_name(self, tier: str = "cache") -> str:
        self.tier_nodes(tier)
        return self.master_name if tier == "cache" else str(self.state_master_name)

    def write_secret(self, key: str, value: str) -> None:
        """Replace one key of the stand-in Secret (a password file; several lines: several
        passwords), as ``kubectl apply`` of the Secret and the kubelet's update would."""
        path = self.auth_dir / key
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(value if value.endswith("\n") else value + "\n")
        tmp.replace(path)

    def read_secret(self, key: str) -> str:
        return (self.auth_dir / key).read_text()

    def secrets(self) -> list[str]:
        """Every password the rehearsal handed out (for leak checks)."""
        values = [self.password, *self.passwords.values()]
        for path in self.auth_dir.iterdir():
            values += [line for line in path.read_text().splitlines() if line]
        return sorted(set(values))

    # --- processes ----------------------------------------------------------------------------
    def script_path(self, name: str) -> Path:
        return self.workdir / "scripts" / name

    def run_script(
        self, node: Node, name: str, *args: str, timeout: float = 60, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one rendered script (probe, preStop) with a node's environment, as the kubelet would."""
        return subprocess.run(
            ["busybox", "sh", str(self.script_path(name)), *args],
            env={**node.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_node(self, node: Node, extra_env: dict[str, str] | None = None) -> None:
        if node.running:
            raise RehearsalError(f"{node.name} is already running")
        node.workdir.mkdir(parents=True, exist_ok=True)
        (node.workdir / "data").mkdir(exist_ok=True)
        script = "start-redis.sh" if node.kind == "redis" else "start-sentinel.sh"
        node.paused = False
        with node.log_path.open("ab") as log:
            node.process = subprocess.Popen(
                ["busybox", "sh", str(self.script_path(script))],
                env={**node.env, **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def kill_node(self, node: Node, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the node's process (the script exec'd the server, so it is the server)."""
        if node.process is None:
            return
        if node.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, sig)
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait(timeout=10)
        # The rest of its process group (start-redis.sh's watcher) goes with it, also when the
        # server had exited by itself.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)

    def pause_node(self, node: Node) -> None:
        """SIGSTOP the node's process: a hung peer. The kernel still accepts its connections, so
        clients connect and then wait for an answer that never comes."""
        if node.running:
            assert node.process is not None
            os.killpg(node.process.pid, signal.SIGSTOP)
            node.paused = True

    def resume_node(self, node: Node) -> None:
        """SIGCONT a paused node (harmless on one that is not paused)."""
        if node.process is not None and node.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGCONT)
        node.paused = False

    def start(self, timeout: float = 60, *, parallel: bool = False) -> LoopbackCluster:
        """Start every pod and wait until the topology has converged.

        By default the data nodes start first and the Sentinels once the replicas are linked: a
        Sentinel that meets the master before its replicas only learns of them at its next 10 s
        INFO refresh, and no Sentinel exists to ask, so one ask is enough. ``parallel=True``
        starts everything at once, as the StatefulSets do on a first boot.
        """
        deadline = time.monotonic() + timeout
        try:
            if parallel:
                for node in [*self.data_nodes, *self.sentinels]:
                    self.start_node(node)
            else:
                for node in self.data_nodes:
                    self.start_node(node, extra_env={"SENTINEL_QUERY_ATTEMPTS": "1"})
                self._wait(deadline, "every Redis node answering PING", self._all_redis_answer)
                for tier in self.tiers:
                    linked = lambda t=tier: self._replicas_linked(t)  # noqa: E731
                    self._wait(deadline, f"replicas linked to the {tier} master and promotable", linked)
                for node in self.sentinels:
                    self.start_node(node)
            self._wait(deadline, "Sentinels agreeing on the topology", self.converged)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data_nodes]:
            self.resume_node(node)  # a paused process would not act on SIGTERM
            self.kill_node(node, signal.SIGTERM)

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # --- observation --------------------------------------------------------------------------
    def client_config(self, tier: str = "cache", **overrides: Any) -> ClientConfig:
        """A Sentinel client configuration for one tier of this topology: the application ACL
        user, the Sentinels' password, and the rehearsal's CA when TLS is on."""
        base: dict[str, Any] = {
            "sentinels": [(s.host, s.port) for s in self.sentinels],
            "master_name": self.tier_master_name(tier),
            "username": acl.APPLICATION.name,
            "password": self.read_secret(acl.APPLICATION.secret_key).splitlines()[0],
            "sentinel_password": self.password,
            "tls_ca_file": str(self.tls_files.ca) if self.tls_files else None,
        }
        return ClientConfig(**{**base, **overrides})

    def smoke_command(self) -> str:
        """A ready-to-paste ``python -m smoke cluster`` command for this topology: the
        application user, its password file, the Sentinels' password file and the CA (files,
        never the passwords themselves)."""
        sentinels = " ".join(f"--sentinel {s.address}" for s in self.sentinels)
        env = [
            f"REDIS_USERNAME={acl.APPLICATION.name}",
            f"REDIS_PASSWORD_FILE={self.password_file}",
            f"SENTINEL_PASSWORD_FILE={self.sentinel_password_file}",
        ]
        if self.tls_files:
            env.append(f"REDIS_TLS_CA_FILE={self.tls_files.ca}")
        replicas = len(self.redis_nodes) - 1
        state = (
            f" --state-master-name {self.state_master_name} --state-replicas {len(self.state_nodes) - 1}"
            if self.state_master_name
            else ""
        )
        return (
            f"{' '.join(env)} .venv/bin/python -m smoke cluster {sentinels} "
            f"--master-name {self.master_name} --replicas {replicas}{state}"
        )

    def wipe_data(self, node: Node) -> None:
        """Delete a stopped node's data directory: a pod that comes back on a new volume."""
        if node.running:
            raise RehearsalError(f"stop {node.name} before wiping its data")
        shutil.rmtree(node.workdir / "data", ignore_errors=True)

    def client(self, node: Node, user: str | None = None, **kwargs: object) -> redis.Redis:
        """A plain client to one node: a data node as ACL ``user`` (default the ``admin`` user,
        which may do anything, as the tests' own hands), a Sentinel with its password."""
        if node.kind == "redis":
            name = user or acl.ADMIN.name
            credentials = {"username": name, "password": self.read_secret(acl.user(name).secret_key).splitlines()[0]}
        else:
            credentials = {"password": self.password}
        ca = str(self.tls_files.ca) if self.tls_files else None
        options: dict[str, object] = {
            **credentials,
            **tls_options(ClientConfig(sentinels=[(node.host, node.port)], tls_ca_file=ca)),
            "socket_timeout": 2,
            "socket_connect_timeout": 2,
            "decode_responses": True,
            **kwargs,
        }
        return redis.Redis(host=node.host, port=node.port, **options)  # type: ignore[arg-type]

    def role(self, node: Node) -> str | None:
        """``master``/``slave`` from ROLE, or None when the node does not answer (at once for a
        node this rehearsal paused, rather than after a client timeout)."""
        if node.paused:
            return None
        try:
            with self.client(node) as c:
                return str(c.execute_command("ROLE")[0])
        except redis.RedisError:
            return None

    def masters(self, tier: str = "cache") -> list[Node]:
        return [n for n in self.tier_nodes(tier) if n.running and self.role(n) == "master"]

    def replication(self, node: Node) -> dict[str, object]:
        with self.client(node) as c:
            return c.info("replication")

    def sentinel_view(self, sentinel: Node, tier: str = "cache") -> dict[str, object] | None:
        """What one Sentinel believes of one tier: master address, replica and peer counts, flags."""
        name = self.tier_master_name(tier)
        try:
            with self.client(sentinel) as c:
                addr = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
                state = c.execute_command("SENTINEL", "MASTER", name)
        except redis.RedisError:
            return None
        # redis-py parses SENTINEL MASTER into a dict with its own key names.
        return {
            "master": f"{addr[0]}:{addr[1]}" if addr else None,
            "num_slaves": int(state.get("num-slaves", 0)),
            "num_other_sentinels": int(state.get("num-other-sentinels", 0)),
            "flags": ",".join(sorted(state["flags"]))
            if isinstance(state.get("flags"), set)
            else str(state.get("flags", "")),
        }

    def _all_redis_answer(self) -> bool:
        return all(self.role(n) is not None for n in self.data_nodes)

    def _replicas_linked(self, tier: str = "cache") -> bool:
        """One master, and every other node of the tier its replica with the link up and promotable
        (start-redis.sh restores a replica's priority once it has synced)."""
        masters = self.masters(tier)
        if len(masters) != 1:
            return False
        replicas = [n for n in self.tier_nodes(tier) if n is not masters[0]]
        try:
            infos = [self.replication(n) for n in replicas]
        except redis.RedisError:
            return False
        return all(i.get("master_link_status") == "up" and i.get("slave_priority") != 0 for i in infos)

    def converged(self, tier: str | None = None) -> bool:
        """Per tier (``None``: every tier): one master, every replica linked and promotable, every
        Sentinel naming it with all replicas and peers."""
        return all(self._tier_converged(t) for t in ([tier] if tier else self.tiers))

    def _tier_converged(self, tier: str) -> bool:
        if not self._replicas_linked(tier):
            return False
        master = self.masters(tier)[0]
        expected = {
            "master": master.address,
            "num_slaves": len(self.tier_nodes(tier)) - 1,
            "num_other_sentinels": len(self.sentinels) - 1,
        }
        for sentinel in self.sentinels:
            view = self.sentinel_view(sentinel, tier)
            if view is None or any(view[k] != v for k, v in expected.items()):
                return False
            if "down" in str(view["flags"]):
                return False
        return True

    def wait_for(self, what: str, condition: object, timeout: float) -> None:
        self._wait(time.monotonic() + timeout, what, condition)

    def _wait(self, deadline: float, what: str, condition: object) -> None:
        assert callable(condition)
        while time.monotonic() < deadline:
            for node in [*self.data_nodes, *self.sentinels]:
                if (
                    node.process is not None
                    and node.process.poll() is not None
                    and node.process.returncode
                    not in (
                        0,
                        -signal.SIGKILL,
                        -signal.SIGTERM,
                    )
                ):
                    raise RehearsalError(
                        f"{node.name} exited with {node.process.returncode} while waiting for {what}; "
                        f"log:\n{self.tail(node)}"
                    )
            if condition():
                return
            time.sleep(0.1)
        logs = "\n".join(f"--- {n.name}\n{self.tail(n)}" for n in [*self.data_nodes, *self.sentinels])
        raise RehearsalError(f"timed out waiting for {what}\n{logs}")

    def tail(self, node: Node, lines: int = 15) -> str:
        return self._redacted(self._log_lines(node)[-lines:])

    def log_matching(self, node: Node, *needles: str) -> str:
        """The lines of the node's log holding any of ``needles`` (e.g. Sentinel's ``+switch-master``
        events, the start script's ``starting ... as``), secrets redacted: what a failing drill
        prints to say what the topology did."""
        return self._redacted([line for line in self._log_lines(node) if any(n in line for n in needles)])

    @staticmethod
    def _log_lines(node: Node) -> list[str]:
        try:
            return node.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ["(no log)"]

    def _redacted(self, lines: list[str]) -> str:
        text = "\n".join(lines)
        for secret in self.secrets():
            text = text.replace(secret, "<redacted>")
        return text


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Start the rehearsal from a render and keep it up until Ctrl-C (or stop at once: --check)."""
    import argparse
    import sys

    from smoke.cli import HelpWithDefaults

    parser = argparse.ArgumentParser(
        prog="python -m smoke.local.rehearsal", description=main.__doc__, formatter_class=HelpWithDefaults
    )
    parser.add_argument("--render-dir", type=Path, default=Path("build/render/dev/k8s"), help="rendered manifests")
    parser.add_argument("--check", action="store_true", help="stop as soon as the topology has converged")
    parser.add_argument(
        "--server",
        choices=sorted(server_lines.LINES),
        default=None,
        help=f"server line (default: ${SERVER_LINE_ENV}, else {server_lines.DEFAULT_LINE.name})",
    )
    args = parser.parse_args(argv)
    try:
        files = RenderedFiles.from_render_dir(args.render_dir)
        cluster = LoopbackCluster(files, server=args.server).start()
    except RehearsalError as exc:
        print(f"rehearsal failed: {exc}", file=sys.stderr)
        return 1
    try:
        masters = {cluster.masters(tier)[0].name for tier in cluster.tiers}
        print(
            f"Rehearsal of {args.render_dir} on {cluster.server.name} {cluster.server_version} "
            f"in {cluster.workdir} (passwords in {cluster.auth_dir}):"
        )
        for node in [*cluster.data_nodes, *cluster.sentinels]:
            role = "master" if node.name in masters else ("replica" if node.kind == "redis" else "sentinel")
            role = f"{node.tier} {role}" if node.tier else role
            print(f"  {node.name:<18} {node.address:<22} {role:<13} log: {node.log_path}")
        print("The smoke suite against it, from another shell:")
        print(f"  {cluster.smoke_command()}")
        if not args.check:
            print("Up; press Ctrl-C to stop.")
            signal.signal(signal.SIGTERM, _interrupt)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
