"""Layer capacity: several client *processes*, as application pods are, running the realistic mix.

One Python process tops out where the GIL serialises its client-side work (``concurrency``: more
threads do not help), which says nothing about what the layer serves a fleet of pods. So for
each process count (1, 2, 4) that many processes are started (``multiprocessing`` with
``spawn``: a fresh interpreter each, like a pod), each with its own two Sentinel clients (cache
and state tier) and its own data, all run :class:`smoke.bench.concurrency.MixedWorkload` on one
thread for the same ``seconds``, started together. Reported per count: aggregate ops/s,
p50/p95/p99 over every call of every process, the CPU the clients used (each process's own CPU
time), the CPU each data node used (``INFO cpu`` ``used_cpu_user`` + ``used_cpu_sys`` deltas:
the whole server process, I/O threads included) and the machine's busy share (``/proc/stat``),
and from those the bottleneck.

The passwords reach the children pickled through a pipe (the ``ClientConfig``), never argv.
Every wait is bounded; a child that fails or hangs stops the run with its error.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
import traceback
from typing import Any

import redis

from smoke.bench.concurrency import MixedWorkload
from smoke.bench.measure import BenchError, percentiles_us
from smoke.strategies.client import ClientConfig, SentinelClient

START_TIMEOUT_S = 120.0  # a spawned interpreter importing redis-py and preparing its data
# A data node at or above this share of one core is the bottleneck (a Redis command runs on one thread).
SATURATED_CORE = 0.9


def _client_process(
    index: int,
    cache: ClientConfig,
    state: ClientConfig | None,
    prefix: str,
    seconds: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """One application pod: prepare the mix's data, say ready, wait for go, run, send the figures."""
    try:
        with SentinelClient(cache) as client, SentinelClient(state or cache) as decisions:
            client.warm_up()
            decisions.warm_up()
            workload = MixedWorkload(client, f"{prefix}p{index}:", seed=100 + index, state=decisions)

            def start() -> None:
                ready.put((index, None))
                if not go.wait(START_TIMEOUT_S):
                    raise BenchError("no start signal")

            cpu = time.process_time()
            latencies, errors, elapsed = workload.timed_run(1, seconds, start)
            cpu = time.process_time() - cpu
        results.put((index, {"latencies": latencies, "errors": errors, "seconds": elapsed, "cpu_seconds": cpu}))
    except BaseException as exc:  # reported to the parent, which raises it
        message = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        ready.put((index, message))
        results.put((index, {"error": message}))


def server_cpu_seconds(nodes: dict[str, redis.Redis]) -> dict[str, float]:
    """CPU seconds each data node's process has used (user + system), by node name."""
    out = {}
    for name, node in nodes.items():
        info = node.info("cpu")
        out[name] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return out


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat`` (None where there is none)."""
    try:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]  # noqa: SIM115
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def bottleneck(cpus: int, processes: int, client_cores: float, nodes: dict[str, float], busy_cores: float) -> str:
    """Where the run was limited, from the CPU figures (cores used, averaged over the run)."""
    node, used = max(nodes.items(), key=lambda item: item[1]) if nodes else ("", 0.0)
    if used >= SATURATED_CORE:
        return f"server CPU: {node} used {used:.2f} of its one command thread's core"
    if busy_cores >= SATURATED_CORE * cpus:
        return (
            f"the machine's {cpus} cores: busy {busy_cores:.2f} cores, of which the clients "
            f"{client_cores:.2f} and the data nodes {sum(nodes.values()):.2f}"
        )
    if client_cores / processes >= SATURATED_CORE:
        return f"client CPU: each process uses {client_cores / processes:.2f} of a core (one interpreter, the GIL)"
    return (
        f"latency: neither side saturated (clients {client_cores:.2f} cores, busiest data node {used:.2f}); "
        "each process waits a round trip per call"
    )


def run_processes(
    cache: ClientConfig,
    state: ClientConfig | None,
    nodes: dict[str, redis.Redis],
    prefix: str,
    processes: int,
    seconds: float,
) -> dict[str, Any]:
    """``processes`` client processes running the mix for ``seconds``; ``nodes``: admin
    connections to every data node, for their CPU."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    children = [
        ctx.Process(
            target=_client_process,
            args=(i, cache, state, prefix, seconds, ready, go, results),
            name=f"bench-client-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        for _ in children:
            try:
                index, problem = ready.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"capacity: {processes} client processes not ready in {START_TIMEOUT_S:g} s") from None
            if problem:
                raise BenchError(f"capacity: client process {index} failed while preparing: {problem}")
        cpu_before, ticks_before, started = server_cpu_seconds(nodes), machine_ticks(), time.monotonic()
        go.set()
        time.sleep(seconds)
        cpu_after, ticks_after, wall = server_cpu_seconds(nodes), machine_ticks(), time.monotonic() - started
        figures = []
        for _ in children:
            try:
                index, result = results.get(timeout=seconds + 60)
            except queue.Empty:
                raise BenchError(f"capacity: a client process sent no figures within {seconds + 60:g} s") from None
            if "error" in result:
                raise BenchError(f"capacity: client process {index} failed: {result['error']}")
            figures.append(result)
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():  # only our own children, by their handle
                child.kill()
                child.join(timeout=10)
    latencies = [value for result in figures for value in result["latencies"]]
    elapsed = max(result["seconds"] for result in figures)
    node_cores = {name: round((cpu_after[name] - cpu_before[name]) / wall, 3) for name in nodes}
    client_cores = sum(result["cpu_seconds"] for result in figures) / elapsed
    cpus = os.cpu_count() or 1
    busy_cores = None
    if ticks_before and ticks_after and ticks_after[1] > ticks_before[1]:
        busy_cores = cpus * (ticks_after[0] - ticks_before[0]) / (ticks_after[1] - ticks_before[1])
    return {
        "processes": processes,
        "seconds": round(elapsed, 2),
        "operations": len(latencies),
        "errors": sum(result["errors"] for result in figures),
        "ops_per_second": round(len(latencies) / elapsed),
        **(percentiles_us(latencies) if latencies else {"p50_us": 0.0, "p95_us": 0.0, "p99_us": 0.0}),
        "client_cpu_cores": round(client_cores, 3),
        "data_node_cpu_cores": node_cores,
        "machine_busy_cores": None if busy_cores is None else round(busy_cores, 3),
        "bottleneck": bottleneck(cpus, processes, client_cores, node_cores, busy_cores or 0.0),
    }


def measure_capacity(
    cache: ClientConfig,
    state: ClientConfig | None,
    nodes: dict[str, redis.Redis],
    prefix: str,
    process_counts: list[int],
    seconds: float,
) -> list[dict[str, Any]]:
    """:func:`run_processes` for each count in ``process_counts``."""
    return [run_processes(cache, state, nodes, prefix, count, seconds) for count in process_counts]
