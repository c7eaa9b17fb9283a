"""``python -m smoke.bench``: start the rehearsal from a render, benchmark it, write the JSON, stop.

``make bench`` runs it on the dev render with the full sizes (about 5 minutes on 2 cores); the
size options exist for the test suite's quick run and for trying a change.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from smoke.bench import capacity, ceiling, concurrency, failover, growth, memory, operations, picture, report, restore
from smoke.bench import server_cost as server_costs
from smoke.bench.measure import BenchError
from smoke.checks import SMOKE_KEY_PREFIX
from smoke.cli import HelpWithDefaults, unwritable
from smoke.drills.backup import DrillError
from smoke.drills.workload import server_of
from smoke.local.rehearsal import LoopbackCluster, RehearsalError, RenderedFiles
from smoke.strategies.client import SentinelClient, tls_options


@dataclass(frozen=True)
class Sizes:
    """How much of everything; the defaults are the issue's."""

    samples: int = 5000  # timed calls per operation
    rounds: int = 25  # interleaved rounds: a burst of load from other tenants hits every operation alike
    counted: int = 200  # calls per operation in the round-trip/command pass
    memory_entries: int = 100_000
    growth_keys: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    growth_samples: int = 3000
    threads: tuple[int, ...] = (1, 4, 16)
    throughput_seconds: float = 5.0
    exactness_attempts: int = 50  # per client, 8 clients, limit 100
    failover_runs: int = 5
    server_cost_calls: int = 200  # calls per operation between CONFIG RESETSTAT and INFO commandstats
    capacity_processes: tuple[int, ...] = (1, 2, 4)
    capacity_seconds: float = 10.0
    ceiling_requests: int = 20_000  # per command replayed by valkey-benchmark / redis-benchmark
    ceiling_keyspace: int = 10_000  # the -r key space; reads are filled over all of it first
    restore_keys: int = 1_000_000  # the backup drill at scale (what the prod maxmemory holds)


def _say(text: str) -> None:
    print(text, flush=True)


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _app_credentials(cluster: LoopbackCluster) -> dict[str, Any]:
    config = cluster.client_config()
    return {"username": config.username, "password": config.password, **tls_options(config)}


def run_bench(cluster: LoopbackCluster, sizes: Sizes, say: Any = _say) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every measurement on a started cluster: (the bench.json document, figures for the table)."""
    started, started_at, load_before = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds"), _loadavg()
    replicas = len(cluster.redis_nodes) - 1
    # Under the smoke suite's prefix: the application ACL user may touch only its own key patterns.
    prefix = f"{SMOKE_KEY_PREFIX}bench:"
    tier = "state" if "state" in cluster.tiers else "cache"
    with (
        SentinelClient(cluster.client_config(min_idle=2)) as client,
        SentinelClient(cluster.client_config(tier, min_idle=2)) as state,
    ):
        client.warm_up()
        state.warm_up()

        def master_node() -> redis.Redis:
            return cluster.client(cluster.masters()[0], decode_responses=False)

        master = master_node()
        node = cluster.masters()[0]
        server_version = server_of(master)
        say(f"bench: operations ({sizes.samples} timed calls each, {sizes.rounds} interleaved rounds)")
        work = operations.Workload(client, prefix, replicas, state=state)
        value = work.fresh_entries(1)[0].to_value()  # what the entry cache stores at an id key
        # The baseline: raw redis-py with its defaults, on a connection of its own to the master,
        # as the same application user the strategies run as.
        with redis.Redis(host=node.host, port=node.port, **_app_credentials(cluster)) as raw, ExitStack() as nodes:
            ops = operations.baselines(raw, prefix, value) + work.operations()
            # Commands are counted on every tier's master: an entry write spans both.
            others = [n for n in cluster.tiers if n != "cache"]
            masters = [master] + [
                nodes.enter_context(cluster.client(cluster.masters(n)[0], decode_responses=False)) for n in others
            ]
            measured = operations.measure(
                ops, masters, samples=sizes.samples, rounds=sizes.rounds, counted=sizes.counted
            )
            say(f"bench: server cost ({sizes.server_cost_calls} calls per operation, CONFIG RESETSTAT between)")
            cost = server_costs.measure_server_cost(ops, masters, sizes.server_cost_calls)
        baseline = {name: measured.pop(name) for name in ("get", "setex")}

        say(
            f"bench: capacity ({sizes.capacity_processes} client processes x {sizes.capacity_seconds} s; "
            f"{cluster.server.tool('benchmark')} {sizes.ceiling_requests} requests per command)"
        )
        with ExitStack() as admins:
            data_nodes = {n.name: admins.enter_context(cluster.client(n)) for n in cluster.data_nodes}

            def admin(address: str) -> redis.Redis:
                node = next(n for n in cluster.data_nodes if n.address == address)
                return admins.enter_context(cluster.client(node, decode_responses=False))

            capacity_runs = capacity.measure_capacity(
                cluster.client_config(),
                cluster.client_config("state") if "state" in cluster.tiers else None,
                data_nodes,
                f"{prefix}capacity:",
                list(sizes.capacity_processes),
                sizes.capacity_seconds,
            )
            server_ceiling = ceiling.measure_ceiling(
                client,
                state,
                admin,
                f"{prefix}ceiling:",
                cluster.server.name,
                requests=sizes.ceiling_requests,
                keyspace=sizes.ceiling_keyspace,
                tls_ca=str(cluster.tls_files.ca) if cluster.tls_files else None,
                value=value,
            )
        layer = {"seconds": sizes.capacity_seconds, "processes": capacity_runs, "server_ceiling": server_ceiling}

        say(f"bench: concurrency (8 clients on one rate limit; {sizes.threads} threads x {sizes.throughput_seconds} s)")
        conc = concurrency.measure_concurrency(
            cluster.client_config(tier),
            client,
            prefix,
            state=state,
            thread_counts=list(sizes.threads),
            seconds=sizes.throughput_seconds,
            exactness_attempts=sizes.exactness_attempts,
        )

        say(f"bench: failover ({sizes.failover_runs} SIGKILLs of the master)")
        fail, drills = failover.measure_failover(cluster, client, sizes.failover_runs, say)
        tiers: dict[str, Any] = {"cache": {"failover": fail}}
        if "state" in cluster.tiers:
            say(f"bench: failover of the state tier ({sizes.failover_runs} SIGKILLs of its master)")
            runs = failover.measure_failover(cluster, state, sizes.failover_runs, say, "state")
            tiers["state"] = {"failover": runs[0]}

        master = master_node()
        say(f"bench: memory ({sizes.memory_entries} entries per layout)")
        with cluster.client(cluster.masters(tier)[0], decode_responses=False) as state_master:
            mem = memory.measure_memory(
                client, master, replicas, sizes.memory_entries, state=state, state_master=state_master
            )

        say(f"bench: growth ({', '.join(map(str, sizes.growth_keys))} keys)")
        nodes = [cluster.client(node, decode_responses=False) for node in cluster.redis_nodes]
        grow = growth.measure_growth(
            client, nodes, master, replicas, list(sizes.growth_keys), sizes.growth_samples, state=state
        )
        for name in cluster.tiers:
            with cluster.client(cluster.masters(name)[0]) as tier_master:
                tiers[name]["memory"] = memory.tier_memory(tier_master)

    document = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "redis_py": redis.__version__,
            "redis_server": server_version,  # "valkey 8.0.1" / "redis 7.0.15"
            "started_at": started_at,
            "duration_seconds": round(time.monotonic() - started, 1),
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
            "topology": f"{len(cluster.tiers)} tiers of 1 master + {replicas} replicas, "
            f"{len(cluster.sentinels)} Sentinels on loopback",
            "sizes": asdict(sizes),
        },
        "baseline": baseline,
        "operations": measured,
        "memory": mem,
        "growth": grow,
        "concurrency": conc,
        "failover": fail,
        # Per data tier: its failover figures (SIGKILL of its master) and its memory at the end.
        "tiers": tiers,
        "server_cost": cost,
        "capacity": layer,
        # Filled by main() after this cluster has stopped (the drill runs a rehearsal of its own).
        "restore_at_scale": None,
    }
    return document, failover.summary(fail, drills)


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers separated by commas, e.g. 10000,100000")
    return values


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one positive integer")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0, e.g. 5 or 0.5")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smoke.bench", description=__doc__.split("\n\n")[0], formatter_class=HelpWithDefaults
    )
    parser.add_argument("--render-dir", type=Path, default=Path("build/render/dev/k8s"), help="rendered manifests")
    parser.add_argument("--out", type=Path, default=Path("build/bench.json"), help="where to write the JSON")
    defaults = Sizes()
    parser.add_argument("--samples", type=_positive_int, default=defaults.samples, help="timed calls per operation")
    parser.add_argument("--memory-entries", type=_positive_int, default=defaults.memory_entries)
    parser.add_argument("--growth-keys", type=_positive_ints, default=defaults.growth_keys, help="e.g. 10000,100000")
    parser.add_argument("--throughput-seconds", type=_positive_seconds, default=defaults.throughput_seconds)
    parser.add_argument("--failover-runs", type=_positive_int, default=defaults.failover_runs)
    parser.add_argument(
        "--capacity-processes", type=_positive_ints, default=defaults.capacity_processes, help="e.g. 1,2,4"
    )
    parser.add_argument("--capacity-seconds", type=_positive_seconds, default=defaults.capacity_seconds)
    parser.add_argument("--ceiling-requests", type=_positive_int, default=defaults.ceiling_requests)
    parser.add_argument(
        "--restore-keys", type=_positive_int, default=defaults.restore_keys, help="keys of the backup drill at scale"
    )
    parser.add_argument(
        "--restore-render-dir",
        type=Path,
        default=Path("build/render/prod/k8s"),
        help="the render the restore at scale runs (prod: its maxmemory holds the dataset)",
    )
    parser.add_argument("--skip-restore", action="store_true", help="leave restore_at_scale out (null)")
    parser.add_argument("--png", type=Path, default=Path("build/bench.png"), help="where to draw the picture")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option, path in (("--out", args.out), ("--png", args.png)):
        problem = unwritable(path)
        if problem:
            parser.error(f"{option} {path}: cannot be written ({problem}); give a path in a writable directory")
    sizes = Sizes(
        samples=args.samples,
        memory_entries=args.memory_entries,
        growth_keys=args.growth_keys,
        throughput_seconds=args.throughput_seconds,
        failover_runs=args.failover_runs,
        capacity_processes=args.capacity_processes,
        capacity_seconds=args.capacity_seconds,
        ceiling_requests=args.ceiling_requests,
        restore_keys=args.restore_keys,
    )
    try:
        files = RenderedFiles.from_render_dir(args.render_dir)
        with LoopbackCluster(files) as cluster:
            _say(f"bench: rehearsal of {args.render_dir} on {cluster.prefix}.0/24")
            document, extra = run_bench(cluster, sizes)
        if not args.skip_restore:
            _say(f"bench: restore at scale (the backup drill, {sizes.restore_keys} keys, {args.restore_render_dir})")
            document["restore_at_scale"] = restore.measure_restore(
                args.restore_render_dir, sizes.restore_keys, lambda text: _say(f"bench: restore: {text}")
            )
            document["machine"]["loadavg_after"] = _loadavg()
    except (RehearsalError, BenchError, DrillError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    report.write(document, args.out)
    picture.draw(document, args.png)
    _say("")
    _say(report.table(document, extra))
    _say(f"\nbench: wrote {args.out} and {args.png} in {document['machine']['duration_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
