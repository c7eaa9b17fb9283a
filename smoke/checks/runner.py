"""The smoke suite: topology checks, every strategy check, and the failover drill, on one target.

Targets: ``local`` starts the rehearsal (the rendered dev stack on loopback) and owns it, so the
drill can SIGKILL the master; ``cluster`` takes Sentinel addresses of a deployed stack and forces
the failover with ``SENTINEL FAILOVER``. The password comes from ``REDIS_PASSWORD`` or the file in
``REDIS_PASSWORD_FILE`` (never argv). Every key is written under a run prefix and removed at the
end, so the suite can run against production without touching application data.

Before any check runs: the report path must be writable, the password files readable and not
empty, and (``cluster``) at least one Sentinel must answer within ``--connect-timeout``; otherwise
one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis

from smoke.checks import REGISTRY, SMOKE_KEY_PREFIX, STRATEGIES, CheckContext, CheckResult, run_check
from smoke.checks.report import SmokeReport, latency_summary, summary_table
from smoke.cli import HelpWithDefaults, unwritable
from smoke.drills.eviction import run_eviction_drill
from smoke.drills.failover import DrillResult, run_failover_drill
from smoke.drills.faults import Fault, KillMaster, SentinelFailover, iptables_problem
from smoke.drills.partition import run_partition_drill
from smoke.drills.workload import server_of
from smoke.local.rehearsal import LoopbackCluster, RehearsalError, RenderedFiles
from smoke.strategies.client import ClientConfig, SentinelClient, read_password, tls_options

EXIT_FAILED = 1
EXIT_UNUSABLE = 2
# Seconds each Sentinel has to accept a connection and answer PING before the suite starts.
CONNECT_TIMEOUT_S = 3.0
# The modules whose import registers the checks, in the order they run.
CHECK_MODULES = ("topology", "entry", "claim", "workflow", "idempotency", "ratelimit")


def load_checks() -> None:
    for module in CHECK_MODULES:
        importlib.import_module(f"smoke.checks.{module}")


@dataclass
class TierTarget:
    """One data tier of a target: how to reach its master, and what its failover drill does."""

    tier: str  # "cache" or "state"
    config: ClientConfig
    fault: Fault  # what the failover drill does to the tier's master
    # The addresses of the tier's nodes that say they are master, where the suite can ask every node.
    masters: Callable[[], list[str]] | None = None


@dataclass
class Target:
    name: str
    config: ClientConfig
    replicas: int
    fault: Fault  # what the failover drill does to the cache tier's master
    # The addresses of the nodes that say they are master, where the suite can ask every node.
    masters: Callable[[], list[str]] | None = None
    # The state tier (None: a target without one; its strategies then run on the cache tier).
    state: TierTarget | None = None
    state_replicas: int = 2
    # The rehearsal's hands for the eviction drill: a context manager that shrinks the cache
    # tier's maxmemory on every cache node (and restores it), and an admin connection to a tier's
    # current master (INFO stats). None on a deployed cluster: the application user may do neither.
    squeeze_cache: Callable[[], contextlib.AbstractContextManager[None]] | None = None
    admin: Callable[[str], redis.Redis] | None = None
    # The rehearsal's partition drill of the state tier (smoke/drills/partition.py): given the
    # cache and state clients and a key prefix, it cuts the state master off with iptables while
    # claims and entry invalidations run. None on a cluster.
    partition: Callable[[SentinelClient, SentinelClient, str], DrillResult] | None = None

    @property
    def tiers(self) -> list[TierTarget]:
        cache = TierTarget("cache", self.config, self.fault, self.masters)
        return [cache, self.state] if self.state else [cache]


def parse_sentinel(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give a Sentinel as HOST:PORT, e.g. redis-sentinel:26379")
    return host, int(port)


def _number(kind: type, low: float, text: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a {'whole ' if kind is int else ''}number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least {low:g}")
    return value


CLUSTER_HELP = """\
Connecting (credentials from the environment, never from the command line):
  REDIS_USERNAME          the ACL user on the data nodes; the stack disables 'default', so set
                          it (the smoke Job uses 'app')
  REDIS_PASSWORD_FILE     a file whose first line is that user's password (or REDIS_PASSWORD);
                          key <user>-password of the stack's Secret (output secretName)
  SENTINEL_PASSWORD_FILE  a file with the Sentinels' password (or SENTINEL_PASSWORD; default: the
                          user's password); key sentinel-requirepass of the same Secret
  REDIS_TLS_CA_FILE       with TLS on (prod): the CA that signed the servers' certificates (ca.crt
                          of the Secret redis-tls); every connection then uses TLS and verifies it

Example, from a pod allowed by the NetworkPolicy (label dict.lbpay.com.br/redis-client=true):
  kubectl -n redis get secret redis-auth -o jsonpath='{.data.app-password}' | base64 -d > app.pw
  kubectl -n redis get secret redis-auth -o jsonpath='{.data.sentinel-requirepass}' | base64 -d > sentinel.pw
  kubectl -n redis get secret redis-tls -o jsonpath='{.data.ca\\.crt}' | base64 -d > ca.crt
  REDIS_USERNAME=app REDIS_PASSWORD_FILE=app.pw SENTINEL_PASSWORD_FILE=sentinel.pw REDIS_TLS_CA_FILE=ca.crt \\
    python -m smoke --report report.json cluster --master-name mymaster \\
      --sentinel redis-sentinel.redis.svc.cluster.local:26379

Exit codes: 0 every check passed, 1 a check failed, 2 unusable (bad arguments or password file,
no Sentinel reachable, password refused).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smoke", description=__doc__.split("\n\n")[0], formatter_class=HelpWithDefaults
    )
    parser.add_argument("--report", type=Path, help="write the JSON report to this file ('-': stdout)")
    sub = parser.add_subparsers(dest="target", required=True)
    local = sub.add_parser(
        "local", help="start the rehearsal from a render and run against it", formatter_class=HelpWithDefaults
    )
    local.add_argument(
        "--render-dir", type=Path, default=Path("build/render/dev/k8s"), help="the k8s/ directory of a render"
    )
    local.add_argument("--no-failover", dest="failover", action="store_false", help="skip the failover drill")
    cluster = sub.add_parser(
        "cluster",
        help="run against a deployed stack through its Sentinels",
        description="Run the smoke suite against a deployed stack through its Sentinels.",
        epilog=CLUSTER_HELP,
        formatter_class=HelpWithDefaults,
    )
    cluster.add_argument(
        "--sentinel",
        dest="sentinels",
        type=parse_sentinel,
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="a Sentinel address (repeat for each)",
    )
    cluster.add_argument("--master-name", default="mymaster", help="the cache tier's name at the Sentinels")
    cluster.add_argument(
        "--state-master-name", default="dictstate", help="the state tier's name at the Sentinels (stateMasterName)"
    )
    cluster.add_argument(
        "--replicas", type=lambda t: _number(int, 0, t), default=2, help="replicas the cache master must have"
    )
    cluster.add_argument(
        "--state-replicas", type=lambda t: _number(int, 0, t), default=2, help="replicas the state master must have"
    )
    cluster.add_argument("--failover", action="store_true", help="also run the drill (SENTINEL FAILOVER)")
    cluster.add_argument(
        "--connect-timeout",
        type=lambda t: _number(float, 0.1, t),
        default=CONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help="how long each Sentinel has to answer before the run gives up (exit 2, nothing run)",
    )
    for p in (local, cluster):
        p.add_argument("--report", type=Path, default=argparse.SUPPRESS, help="as --report above")
    return parser


def _local_target(stack: ExitStack, render_dir: Path) -> Target:
    cluster = stack.enter_context(LoopbackCluster(RenderedFiles.from_render_dir(render_dir)))
    state = None
    if "state" in cluster.tiers:
        state = TierTarget(
            "state",
            cluster.client_config("state"),
            KillMaster(cluster, signal.SIGKILL, tier="state"),
            lambda: [node.address for node in cluster.masters("state")],
        )
    return Target(
        "local",
        cluster.client_config(),
        len(cluster.redis_nodes) - 1,
        KillMaster(cluster, signal.SIGKILL),
        lambda: [node.address for node in cluster.masters()],
        state,
        max(len(cluster.state_nodes) - 1, 0),
        lambda: _squeezed_cache(cluster),
        lambda tier: cluster.client(cluster.masters(tier)[0]),
        (
            (lambda cache, state, prefix: run_partition_drill(cluster, state, prefix, invalidations=(cache, state)))
            if state
            else None
        ),
    )


# The eviction drill's cache tier: small enough that flooding it ten times over takes seconds.
# The replication backlog counts against maxmemory and cannot be evicted, so it shrinks too.
DRILL_CACHE_MAXMEMORY = 4 * 2**20
DRILL_REPL_BACKLOG = 2**20


@contextlib.contextmanager
def _squeezed_cache(cluster: LoopbackCluster) -> Iterator[None]:
    """Every cache node at ``DRILL_CACHE_MAXMEMORY`` for the drill, then back as rendered."""
    saved = []
    try:
        for node in cluster.redis_nodes:
            with cluster.client(node) as c:
                saved.append((node, c.config_get("maxmemory") | c.config_get("repl-backlog-size")))
                c.config_set("repl-backlog-size", DRILL_REPL_BACKLOG)
                c.config_set("maxmemory", DRILL_CACHE_MAXMEMORY)
        yield
    finally:
        for node, config in saved:
            with cluster.client(node) as c:
                c.config_set("maxmemory", config["maxmemory"])
                c.config_set("repl-backlog-size", config["repl-backlog-size"])


def credentials_from_env() -> dict[str, str | None]:
    """The client's identity from the environment (never argv): the ACL user ``REDIS_USERNAME``
    with ``REDIS_PASSWORD``/``REDIS_PASSWORD_FILE``, the Sentinels' password from
    ``SENTINEL_PASSWORD``/``SENTINEL_PASSWORD_FILE`` (default: the same password), and
    ``REDIS_TLS_CA_FILE`` to connect over TLS verifying the servers against that CA."""
    for env, file_env in (("REDIS_PASSWORD", "REDIS_PASSWORD_FILE"), ("SENTINEL_PASSWORD", "SENTINEL_PASSWORD_FILE")):
        _refuse_empty_password_file(env, file_env)
    password = read_password()
    sentinel_password = read_password("SENTINEL_PASSWORD", "SENTINEL_PASSWORD_FILE") or password
    return {
        "username": os.environ.get("REDIS_USERNAME") or None,
        "password": password,
        "sentinel_password": sentinel_password,
        "tls_ca_file": os.environ.get("REDIS_TLS_CA_FILE") or None,
    }


def _refuse_empty_password_file(env: str, file_env: str) -> None:
    """A password file that is empty (or starts with an empty line) would be read as "no
    password", and the server's answer would not say why: refuse it by name."""
    path = os.environ.get(file_env)
    if os.environ.get(env) or not path:
        return
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return  # read_password names the file and the reason
    if not lines or not lines[0].strip():
        raise ValueError(
            f"{file_env}={path}: the password file is empty (its first line must be the password); "
            f"write the password into it or unset {file_env}"
        )


def unreachable_sentinels(config: ClientConfig, timeout: float) -> list[str]:
    """Each Sentinel that does not answer PING within ``timeout`` seconds, with the reason; all
    are asked at once. Any reply counts as an answer (a refused password too: the run reports it
    with its own message)."""

    def probe(address: tuple[str, int]) -> str | None:
        host, port = address
        node = redis.Redis(
            host=host,
            port=port,
            password=config.sentinel_password,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
            driver_info=None,
            **{k: v for k, v in tls_options(config).items() if k != "ssl"},
            ssl=bool(config.tls_ca_file),
        )
        try:
            node.ping()
        except (redis.ResponseError, redis.AuthenticationError):  # NOAUTH, WRONGPASS: it answered
            return None
        except redis.TimeoutError:
            return f"{host}:{port} (no answer within {timeout:g} s)"
        except (redis.ConnectionError, OSError) as exc:
            reason = "connection refused" if "refused" in str(exc).lower() else str(exc)
            return f"{host}:{port} ({reason})"
        finally:
            node.close()
        return None

    with ThreadPoolExecutor(max_workers=len(config.sentinels)) as pool:
        return [r for r in pool.map(probe, config.sentinels) if r is not None]


def _cluster_target(args: argparse.Namespace, credentials: dict[str, str | None]) -> Target:
    config = ClientConfig(sentinels=args.sentinels, master_name=args.master_name, **credentials)  # type: ignore[arg-type]
    addresses = ",".join(f"{h}:{p}" for h, p in args.sentinels)
    state_config = ClientConfig(sentinels=args.sentinels, master_name=args.state_master_name, **credentials)  # type: ignore[arg-type]
    state = TierTarget("state", state_config, SentinelFailover(state_config))
    name = f"cluster:{addresses}/{args.master_name},{args.state_master_name}"
    return Target(
        name, config, args.replicas, SentinelFailover(config), state=state, state_replicas=args.state_replicas
    )


# With --report - the JSON report goes to stdout, so progress goes to stderr.
_progress = sys.stdout


def _say(text: str) -> None:
    print(text, file=_progress, flush=True)


def run(target: Target, failover: bool) -> SmokeReport:
    load_checks()
    with contextlib.ExitStack() as clients:
        client = clients.enter_context(SentinelClient(target.config))
        state_client = clients.enter_context(SentinelClient(target.state.config)) if target.state else None
        prefix = f"{SMOKE_KEY_PREFIX}{uuid.uuid4().hex[:12]}:"
        ctx = CheckContext(
            client=client,
            prefix=prefix,
            replicas=target.replicas,
            state_client=state_client,
            state_replicas=target.state_replicas,
        )
        down_after: int | None = None
        try:
            state = client.sentinels()[0].sentinel_master(target.config.master_name)
            down_after = int(state["down-after-milliseconds"])
        except (redis.RedisError, KeyError, IndexError):
            pass
        report = SmokeReport(target=target.name, down_after_ms=down_after)
        _check_password(client)
        report.server = _server(client)
        _say(f"smoke: target {target.name} ({report.server or 'server unknown'}), key prefix {ctx.prefix}")
        with contextlib.suppress(redis.RedisError):
            client.warm_up()  # a failure here shows up in the topology checks
            if state_client is not None:
                state_client.warm_up()
        try:
            for strategy in STRATEGIES:
                for item in [c for c in REGISTRY if c.strategy == strategy]:  # "failover" has none
                    if strategy != "topology" and not _master_usable(report):
                        result = CheckResult(strategy, item.name, False, "not run: the topology has no usable master")
                    else:
                        started = time.perf_counter()
                        result = run_check(item, ctx)
                        took = (time.perf_counter() - started) * 1000
                        _say(
                            f"  {'PASS' if result.passed else 'FAIL'} {strategy}.{item.name} ({took:.0f} ms): "
                            f"{result.detail}"
                        )
                    report.checks.append(result)
            # Only on the rehearsal: the drill shrinks the cache tier's maxmemory, which the
            # application user of a deployed cluster may not (and must not) do.
            if target.squeeze_cache is not None and ctx.state_client is not None:
                report.checks.append(_eviction(ctx, target, report))
            if failover:
                for tier in target.tiers:
                    report.checks.append(_drill(ctx, tier, report))
                if target.partition is not None:
                    report.checks.extend(_partition(ctx, target, report))
        finally:
            _cleanup(ctx)
        report.latency_ms = latency_summary(ctx.latencies_ms)
        return report


def _check_password(client: SentinelClient) -> None:
    """Raise AuthenticationError at once for a wrong password; any other trouble is left to the
    topology checks, which report it as a failed check."""
    try:
        client.run(lambda r: r.ping(), idempotent=True)
    except redis.AuthenticationError:
        raise
    except redis.RedisError:
        pass


def _server(client: SentinelClient) -> str | None:
    """What the master runs ('valkey 8.0.1'); None when it does not answer."""
    try:
        return client.run(server_of, idempotent=True)
    except redis.RedisError:
        return None


def _master_usable(report: SmokeReport) -> bool:
    return all(c.passed for c in report.checks if c.strategy == "topology" and c.name == "one_master")


def _drill(ctx: CheckContext, target: TierTarget, report: SmokeReport) -> CheckResult:
    """The failover drill on one tier (SIGKILL or SENTINEL FAILOVER of its master)."""
    name = "drill" if target.tier == "cache" else f"drill_{target.tier}"
    if not _master_usable(report):
        return CheckResult("failover", name, False, "not run: the topology has no usable master")
    _say(f"  .... failover drill ({target.tier} tier): writing through a forced master failure ({target.fault.name})")
    client, replicas = (ctx.client, ctx.replicas) if target.tier == "cache" else (ctx.state, ctx.state_tier_replicas)
    try:
        result = run_failover_drill(client, ctx.prefix, replicas, target.fault, masters=target.masters)
    except Exception as exc:
        return CheckResult("failover", name, False, f"{type(exc).__name__}: {exc}")
    report.failovers[target.tier] = result
    if target.tier == "cache":
        report.failover = result
    if result.heal_error is not None:
        recover = "recover" if target.tier == "cache" else f"recover_{target.tier}"
        report.checks.append(CheckResult("failover", recover, False, result.heal_error))
    detail = (
        f"{result.detail}; {result.acknowledged_writes} confirmed claims, "
        f"{result.lost_acknowledged_writes} lost; {result.plain_writes} plain writes, {result.lost_plain_writes} lost; "
        f"{result.old_master} -> {result.new_master}"
    )
    _say(f"  {'PASS' if result.passed else 'FAIL'} failover.{name}: {detail}")
    return CheckResult("failover", name, result.passed, detail)


def _partition(ctx: CheckContext, target: Target, report: SmokeReport) -> list[CheckResult]:
    """The partition drill on the state tier (rehearsal only). It needs iptables and root: without
    them it fails under CI=true and, elsewhere, the run says plainly that it did not run (and the
    report's ``partition`` says why)."""
    assert target.partition is not None and ctx.state_client is not None
    problem = iptables_problem()
    if problem is not None:
        reason = f"not run: {problem}"
        report.partition = {"run": False, "reason": reason}
        if os.environ.get("CI") == "true":
            _say(f"  FAIL failover.partition: {reason}")
            return [CheckResult("failover", "partition", False, reason)]
        _say(f"  NOT RUN failover.partition: {problem} (the report says so; under CI=true this fails)")
        return []
    if not _master_usable(report):
        return [CheckResult("failover", "partition", False, "not run: the topology has no usable master")]
    _say("  .... partition drill (state tier): its master cut off from replicas and Sentinels, clients still in")
    try:
        result = target.partition(ctx.client, ctx.state_client, ctx.prefix)
    except Exception as exc:
        return [CheckResult("failover", "partition", False, f"{type(exc).__name__}: {exc}")]
    report.partition = {"run": True, **result.as_report()}
    checks = []
    if result.heal_error is not None:
        checks.append(CheckResult("failover", "recover_partition", False, result.heal_error))
    r = result
    detail = (
        f"{r.detail}; acknowledged then lost: {r.lost_plain_writes} of {r.plain_writes} plain writes, the last "
        f"{r.late_ack_seconds:.2f} s after the cut; confirmed claims lost {r.lost_acknowledged_writes} of "
        f"{r.acknowledged_writes}; confirmed invalidations lost {r.lost_confirmed_invalidations} of "
        f"{r.confirmed_invalidations}; two masters {r.two_masters_seconds} s, both accepting writes "
        f"{r.two_writable_seconds} s; reconverged {r.reconverged_seconds} s after the partition ended"
    )
    _say(f"  {'PASS' if result.passed else 'FAIL'} failover.partition: {detail}")
    checks.append(CheckResult("failover", "partition", result.passed, detail))
    return checks


def _eviction(ctx: CheckContext, target: Target, report: SmokeReport) -> CheckResult:
    """The eviction drill (smoke/drills/eviction.py): the cache tier flooded to ten times its
    capacity while decisions run on the state tier; not one decision may be lost."""
    if not _master_usable(report):
        return CheckResult("eviction", "drill", False, "not run: the topology has no usable master")
    admin, squeeze = target.admin, target.squeeze_cache
    assert admin is not None and squeeze is not None and ctx.state_client is not None
    _say("  .... eviction drill: flooding the cache tier while decisions run on the state tier")
    try:
        with squeeze():
            drill = run_eviction_drill(
                ctx.client,
                ctx.state_client,
                lambda: admin("cache"),
                lambda: admin("state"),
                ctx.prefix,
                replicas=ctx.state_replicas,
            )
    except Exception as exc:
        return CheckResult("eviction", "drill", False, f"{type(exc).__name__}: {exc}")
    report.eviction = drill.figures.to_dict()
    detail = drill.run.verdict("decisions_kept").detail
    _say(f"  {'PASS' if drill.passed else 'FAIL'} eviction.drill: {detail}")
    return CheckResult("eviction", "drill", drill.passed, detail)


def _cleanup(ctx: CheckContext) -> None:
    """Remove every key of this run (SCAN + UNLINK on the master)."""

    def unlink_all(r: redis.Redis) -> int:
        removed = 0
        batch: list[str] = []
        for key in r.scan_iter(match=f"{ctx.prefix}*", count=1000):
            batch.append(key)
            if len(batch) == 500:
                removed += r.unlink(*batch)
                batch = []
        if batch:
            removed += r.unlink(*batch)
        return removed

    tiers = [("cache", ctx.client)] + ([("state", ctx.state_client)] if ctx.state_client else [])
    for tier, client in tiers:
        try:
            removed = client.run(unlink_all, idempotent=True)
            _say(f"smoke: removed {removed} keys under {ctx.prefix} on the {tier} tier")
        except redis.RedisError as exc:
            _say(f"smoke: could not remove the keys under {ctx.prefix} on the {tier} tier: {exc}")


def _emit(report: SmokeReport, path: Path | None, to_stdout: bool) -> None:
    if to_stdout:
        # One line, printed last: `kubectl logs` mixes both streams, `tail -n 1` finds the report.
        print(json.dumps(report.as_json(), separators=(",", ":")), flush=True)
    elif path is not None:
        report.write(path)
        _say(f"report: {path}")


def main(argv: list[str] | None = None) -> int:
    global _progress
    args = build_parser().parse_args(argv)
    to_stdout = args.report is not None and str(args.report) == "-"
    _progress = sys.stderr if to_stdout else sys.stdout
    logging.basicConfig(level=logging.WARNING, format="  log %(name)s: %(message)s", stream=_progress)
    if args.report is not None and not to_stdout:
        problem = unwritable(args.report)
        if problem:
            print(f"smoke: --report {args.report}: {problem}", file=sys.stderr)
            return EXIT_UNUSABLE
    try:
        credentials = credentials_from_env()
    except ValueError as exc:
        print(f"smoke: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    with ExitStack() as stack:
        try:
            if args.target == "local":
                target = _local_target(stack, args.render_dir)
            else:
                target = _cluster_target(args, credentials)
                down = unreachable_sentinels(target.config, args.connect_timeout)
                if len(down) == len(target.config.sentinels):
                    message = f"cannot reach any Sentinel: {', '.join(down)}"
                    print(f"smoke: {message}", file=sys.stderr)
                    unusable = SmokeReport(target=target.name, down_after_ms=None)
                    unusable.checks.append(CheckResult("topology", "sentinel_reachable", False, message))
                    _emit(unusable, args.report, to_stdout)
                    return EXIT_UNUSABLE
            report = run(target, args.failover)
        except (RehearsalError, redis.AuthenticationError) as exc:
            if isinstance(exc, RehearsalError):
                message, name = f"the rehearsal did not start: {exc}", "rehearsal_started"
            else:
                unnamed = (
                    ""
                    if credentials.get("username")
                    else "REDIS_USERNAME is not set, so it logged in as 'default', which the stack disables; "
                )
                message, name = (
                    f"the master refused the password ({exc}); {unnamed}set REDIS_USERNAME and REDIS_PASSWORD or "
                    "REDIS_PASSWORD_FILE to an ACL user of the stack (the smoke Job uses 'app'), and "
                    "SENTINEL_PASSWORD(_FILE) to the Sentinels' password ('python -m smoke cluster --help' "
                    "shows where each comes from)",
                    "password_accepted",
                )
            print(f"smoke: {message}", file=sys.stderr)
            unusable = SmokeReport(target=args.target, down_after_ms=None)
            unusable.checks.append(CheckResult("topology", name, False, message))
            _emit(unusable, args.report, to_stdout)
            return EXIT_UNUSABLE
    _say("")
    _say(summary_table(report.checks))
    for tier, f in report.failovers.items():
        outage = "none measured" if f.rto_seconds is None else f"{f.rto_seconds:.2f} s"
        _say(
            f"failover ({tier} tier): outage {outage} at down-after {f.down_after_ms} ms; "
            f"confirmed claims lost {f.lost_acknowledged_writes}/{f.acknowledged_writes}; "
            f"plain writes lost {f.lost_plain_writes}/{f.plain_writes}"
        )
    if report.partition is not None:
        p = report.partition
        if p.get("run"):
            _say(
                f"partition (state tier, {p['fault']}): acknowledged then lost {p['lost_plain_writes']}/"
                f"{p['plain_writes']} plain writes, the last {p['late_ack_seconds']} s after the cut; "
                f"confirmed claims lost {p['lost_acknowledged_writes']}/{p['acknowledged_writes']}; "
                f"outage {p['rto_seconds']} s; two masters {p['two_masters_seconds']} s, both accepting writes "
                f"{p['two_writable_seconds']} s"
            )
        else:
            _say(f"partition: {p['reason']}")
    _emit(report, args.report, to_stdout)
    _say("smoke: PASSED" if report.passed else "smoke: FAILED")
    return 0 if report.passed else EXIT_FAILED
