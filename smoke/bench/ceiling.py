"""The server-side ceiling: the strategies' own commands replayed by the server line's C load
generator (``valkey-benchmark`` / ``redis-benchmark``), no Python in the path, next to raw ``GET``
and ``SET EX`` in the same run.

How the commands are obtained: each operation of the realistic mix (:data:`MIX`) is called once
through the real strategy object on an entity whose identifiers carry a token, and the commands
it sends are recorded (:func:`smoke.bench.measure.record_commands`: the ``EVALSHA`` with its
script's SHA, keys and arguments, and the node it went to). The token is then replaced by
``__rand_int__``, which the benchmark turns into a random 12-digit number per command (``-r``),
so every request hits a different key. For a read the data must be there to be found: its
write's commands are replayed first with the token replaced by each number in the key space
(pipelined), so a replayed read hits as the application's would. An entry write is two
commands on two tiers (the marker's reservation on the state tier, then the entry): each is
replayed against its own master.

The figure per command is the benchmark's requests per second with ``clients`` connections
(``-c``): with the server's single command thread busy, that is its ceiling for this command.
The mix's ceiling on one master is ``1 / sum(share_i / rps_i)`` over the commands the mix sends
there (each operation's share of the mix), and the layer's is the lower of the two masters';
the raw ceiling applies the same shares to ``GET`` (reads) and ``SET EX`` of an entry-sized value
(writes) on the cache master. On 2 shared cores the load generator competes with the server for
CPU, so the absolute figures are low; the ratio mix/raw is the figure to read.

Credentials: neither benchmark binary reads ``REDISCLI_AUTH`` (only ``redis-cli``/``valkey-cli``
do); their only ways in are ``-a``/``--user`` or a ``-u`` URI, all on the command line, where
``ps`` shows them. So the run creates a throwaway ACL user on the master it targets, with a
random password, allowed only the commands replayed and only the benchmark's key prefix, and
deletes it when the run ends (also on failure): what ``ps`` could show for those seconds opens
nothing afterwards. The application's and the admin's passwords never reach a command line.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from smoke.bench.concurrency import MIX
from smoke.bench.measure import BenchError, SentCommand, record_commands
from smoke.bench.report import baseline_of
from smoke.strategies.claims import ClaimCache, sample_claim
from smoke.strategies.client import SentinelClient
from smoke.strategies.entries import EntryCache, sample_entry
from smoke.strategies.ratelimit import RateLimiter
from smoke.strategies.workflow import WorkflowCache, WorkflowMetadata

PLACEHOLDER = "__rand_int__"
ISPB_TOKEN = "98765432"  # the rate-limit check's ISPB, replaced by the placeholder
# The write whose data each read of the mix reads (replayed over the key space first).
READ_OF = {
    "entry.get_by_id": "entry.write",
    "entry.get_by_key": "entry.write",
    "claim.status": "claim.create",
    "workflow.get": "workflow.set",
}
RUN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Replayed:
    """One command the mix sends, ready for the benchmark: the operation it belongs to, the
    master it goes to (``host:port``) and its arguments with ``__rand_int__`` in them."""

    operation: str
    address: str
    args: tuple[str, ...]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _substituted(command: SentCommand, token: str, by: str) -> tuple[str, ...]:
    return tuple(_text(arg).replace(token, by) for arg in command.args)


class MixCapture:
    """The mix's operations on ``prefix``, each called once to record what it sends."""

    def __init__(self, client: SentinelClient, state: SentinelClient | None, prefix: str) -> None:
        self.entries = EntryCache(client, prefix, markers=state)
        self.claims = ClaimCache(client, prefix)
        self.workflow = WorkflowCache(state or client, prefix)
        self.limiter = RateLimiter(state or client, prefix, limits={"GetEntry": 10**12})

    @staticmethod
    def token() -> str:
        return f"tok{uuid.uuid4().hex[:12]}"

    @staticmethod
    def _recorded(call: Callable[[], object]) -> list[SentCommand]:
        call()  # scripts loaded, connections open: the recorded call sends only its own commands
        with record_commands() as sent:
            call()
        return [c for c in sent if c.name not in ("ping", "script")]

    def _metadata(self, workflow_id: str) -> WorkflowMetadata:
        return WorkflowMetadata(workflow_id, "ClaimWorkflow", "2025-11-25T12:00:00.000Z", "claim", "Notify")

    def writes(self, name: str, token: str) -> list[SentCommand]:
        """The commands of one write of operation ``name`` on an entity named by ``token``."""
        if name == "entry.write":
            entry = sample_entry(token, version=1, key_value=f"{token}@example.com.br")
            return self._recorded(lambda: self.entries.write(entry))
        if name == "claim.create":
            return self._recorded(lambda: self.claims.put(sample_claim(token, token)))
        if name == "workflow.set":
            return self._recorded(lambda: self.workflow.set(token, 1, "RUNNING", self._metadata(token)))
        raise BenchError(f"{name}: not a write of the mix")

    def read(self, name: str, token: str) -> tuple[str, list[SentCommand]]:
        """(the token, the commands of one read of ``name``) on the entity named by ``token``,
        whose data the caller wrote first (:data:`READ_OF`); a rate-limit check has its own token
        (an ISPB is 8 digits)."""
        if name == "ratelimit.check":
            return ISPB_TOKEN, self._recorded(lambda: self.limiter.check(ISPB_TOKEN, "GetEntry"))
        reads: dict[str, Callable[[], object]] = {
            "entry.get_by_id": lambda: self.entries.get_by_id(token),
            "entry.get_by_key": lambda: self.entries.get_by_key("EMAIL", f"{token}@example.com.br"),
            "claim.status": lambda: self.claims.status(token),
            "workflow.get": lambda: self.workflow.get(token),
        }
        return token, self._recorded(reads[name])


def benchmark_binary(line: str) -> str:
    """The server line's load generator on PATH (``valkey-benchmark`` from valkey-tools,
    ``redis-benchmark`` from redis-tools)."""
    name = f"{line}-benchmark"
    if shutil.which(name) is None:
        package = "valkey-tools" if line == "valkey" else "redis-tools"
        raise BenchError(f"{name} is not installed: make deps installs it (Debian package {package})")
    return name


@contextmanager
def throwaway_user(admin: redis.Redis, prefix: str, commands: set[str]) -> Iterator[tuple[str, str]]:
    """A short-lived ACL user for the load generator (see the module's docstring for why): keys
    under ``prefix`` only, ``commands`` and what a script may run inside (every command but the
    dangerous ones: a script's inner commands are checked against the caller's rights too);
    deleted on exit."""
    name, password = f"bench-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    rules = ["reset", "on", f">{password}", f"~{prefix}*", "resetchannels", "+@all", "-@dangerous"]
    rules += [f"+{c}" for c in sorted(commands)]
    admin.execute_command("ACL", "SETUSER", name, *rules)
    try:
        yield name, password
    finally:
        admin.execute_command("ACL", "DELUSER", name)


def run_benchmark(
    binary: str,
    host: str,
    port: int,
    user: tuple[str, str],
    args: tuple[str, ...],
    *,
    requests: int,
    keyspace: int,
    clients: int,
    tls_ca: str | None,
) -> dict[str, float]:
    """One command replayed ``requests`` times with random keys: rps and latency from its CSV."""
    argv = [binary, "-h", host, "-p", str(port), "--user", user[0], "-a", user[1]]
    argv += ["-c", str(clients), "-n", str(requests), "-r", str(keyspace), "--csv"]
    if tls_ca:
        argv += ["--tls", "--cacert", tls_ca]
    done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    lines = [line for line in done.stdout.splitlines() if line.startswith('"')]
    if done.returncode != 0 or len(lines) < 2:
        # The error, never the argv (it holds the throwaway password).
        problem = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"{binary} replaying {args[0]} exited {done.returncode}: {problem[0].replace(user[1], '***')}")
    # The test's name is the command itself, quoted as is (a JSON argument's quotes and commas
    # included), so the figures are read from the right: the header's numeric columns.
    header = [field.strip('"') for field in lines[0].split(",")]
    values = [field.strip('"') for field in lines[-1].split(",")][-(len(header) - 1) :]
    row = dict(zip(header[1:], values, strict=True))
    refused = [line for line in (done.stdout + done.stderr).splitlines() if "error" in line.lower()]
    if refused:
        raise BenchError(f"{binary} replaying {args[0]}: the server answered errors: {refused[0][:200]}")
    return {
        "rps": float(row["rps"]),
        "p50_ms": float(row.get("p50_latency_ms", 0) or 0),
        "p99_ms": float(row.get("p99_latency_ms", 0) or 0),
    }


def _fill(node: redis.Redis, commands: list[SentCommand], token: str, keyspace: int, batch: int = 500) -> None:
    """Replay a write's commands with the token replaced by each number of the key space, as
    ``__rand_int__`` spells them (12 digits), so every replayed read finds its data."""
    for start in range(0, keyspace, batch):
        pipe = node.pipeline(transaction=False)
        for number in range(start, min(start + batch, keyspace)):
            for command in commands:
                pipe.execute_command(*_substituted(command, token, f"{number:012d}"))
        pipe.execute()


def measure_ceiling(
    client: SentinelClient,
    state: SentinelClient | None,
    admin: Callable[[str], redis.Redis],
    prefix: str,
    line: str,
    *,
    requests: int,
    keyspace: int,
    clients: int = 8,
    tls_ca: str | None = None,
    value: str = "",
) -> dict[str, Any]:
    """The mix's commands and raw GET/SET EX through the load generator. ``admin(address)``: an
    admin connection to the master at ``host:port`` (``ACL SETUSER``, the fill)."""
    binary = benchmark_binary(line)
    capture = MixCapture(client, state, prefix)
    weights = dict(MIX)
    total = sum(weights.values())
    replayed: list[Replayed] = []
    for name in weights:
        token = capture.token()
        if name in READ_OF:  # the data first: the recorded read is a hit, as the replayed ones
            fill = capture.writes(READ_OF[name], token)
            for address in sorted({f"{c.host}:{c.port}" for c in fill}):
                mine = [c for c in fill if f"{c.host}:{c.port}" == address]
                _fill(admin(address), mine, token, keyspace)
        if name in READ_OF or name == "ratelimit.check":
            token, sent = capture.read(name, token)
        else:
            sent = capture.writes(name, token)
        if not sent:
            raise BenchError(f"{name}: recorded no command to replay")
        replayed += [Replayed(name, f"{c.host}:{c.port}", _substituted(c, token, PLACEHOLDER)) for c in sent]
    host, port = client.sentinel_master_address()
    cache_address = f"{host}:{port}"
    raw_key = f"{prefix}raw:{PLACEHOLDER}"
    raw = {"get": ("GET", raw_key), "setex": ("SET", raw_key, value or "x" * 360, "EX", "3600")}
    node = admin(cache_address)
    pipe = node.pipeline(transaction=False)
    for number in range(keyspace):
        pipe.set(raw_key.replace(PLACEHOLDER, f"{number:012d}"), value or "x" * 360, ex=3600)
    pipe.execute()

    def replay(address: str, args: tuple[str, ...]) -> dict[str, float]:
        host, port = address.rsplit(":", 1)
        commands = {args[0].lower(), "ping"}
        with throwaway_user(admin(address), prefix, commands) as user:
            return run_benchmark(
                binary,
                host,
                int(port),
                user,
                args,
                requests=requests,
                keyspace=keyspace,
                clients=clients,
                tls_ca=tls_ca,
            )

    raw_figures = {name: replay(cache_address, args) for name, args in raw.items()}
    commands = []
    load: dict[str, float] = {}  # seconds of server time per mixed operation, per master
    for command in replayed:
        figures = replay(command.address, command.args)
        commands.append(
            {"operation": command.operation, "master": command.address, "command": command.args[0], **figures}
        )
        load[command.address] = load.get(command.address, 0.0) + weights[command.operation] / total / figures["rps"]
    per_master = {address: round(1 / seconds) for address, seconds in load.items()}
    raw_load = sum(weights[name] / total / raw_figures[baseline_of(name)]["rps"] for name in weights)
    mix_ops = min(per_master.values())
    raw_ops = round(1 / raw_load)
    return {
        "binary": binary,
        "clients": clients,
        "requests": requests,
        "keyspace": keyspace,
        "raw": raw_figures,
        "commands": commands,
        "mix_ops_per_second_by_master": per_master,
        "mix_ops_per_second": mix_ops,
        "raw_mix_ops_per_second": raw_ops,
        "mix_to_raw": round(mix_ops / raw_ops, 3),
    }
