"""Server cost per operation: the data node's CPU time per call, next to a raw ``GET`` and ``SET EX``.

Client-side latency says what a caller waits; what bounds a master's capacity is the CPU time the
server spends per call. For each operation (the baselines included) the statistics of every
tier's master are reset (``CONFIG RESETSTAT``, on the admin connection: the application user may
not send it), ``calls`` prepared calls are run through the strategy, and ``INFO commandstats``
is read back: the ``usec`` of the commands the operation *sent* (recorded on the client side,
:func:`smoke.bench.measure.record_commands`) summed over both tiers' masters and divided by the
calls. An ``EVALSHA``'s ``usec`` covers the whole script, the commands it runs inside included,
so those inner commands are not added a second time. An entry write or invalidation sends one
script to each tier: both count.

What is left out: the commands other clients send meanwhile (the Sentinels' ``PING``/``INFO``,
the replicas' ``REPLCONF ACK``), unless the operation itself sends the same command (the
WAIT-confirmed claim's ``INFO replication``: a Sentinel's ``INFO`` in the same second is
charged to it; a few µs over 200 calls), and the work a command costs outside its own
execution (reading the socket, writing the reply, replication to the replicas), which
``commandstats`` does not time. So the figure is the command execution time, the part that
differs between operations; the per-request I/O is about the same for every call and is what
the raw ``GET`` pays too.

``CONFIG RESETSTAT`` zeroes every counter of ``INFO stats`` too: the ``evicted_keys`` that
``tiers.<tier>.memory`` reports at the end of a run count from the last reset, and the steps that
read counters (commands per operation, memory) take their own before/after deltas.
"""

from __future__ import annotations

from typing import Any

import redis

from smoke.bench.measure import BenchError, record_commands
from smoke.bench.operations import Operation, run_checked
from smoke.bench.report import baseline_of


def command_usec(node: redis.Redis) -> dict[str, tuple[int, int]]:
    """``INFO commandstats`` as command -> (calls, usec); ``client|setname`` -> ``client``'s part
    stays under its full name."""
    stats = node.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in stats.items()}


def _charged(stats: dict[str, tuple[int, int]], sent_names: set[str]) -> int:
    """usec of the commands whose name (before a ``|`` subcommand) the operation sent."""
    return sum(usec for name, (_, usec) in stats.items() if name.split("|")[0] in sent_names)


def cost_of(op: Operation, masters: list[redis.Redis], calls: int) -> dict[str, Any]:
    """One operation's server CPU per call over ``calls`` calls: ``usec_per_call`` (every tier's
    master summed), per master, and the commands it sent per call."""
    run_checked(op, op.prepare(3), timed=False)  # scripts loaded, connections open
    prepared = op.prepare(calls)
    for master in masters:
        master.config_resetstat()
    with record_commands() as sent:
        run_checked(op, prepared, timed=False)
    stats = [command_usec(master) for master in masters]
    names = {command.name for command in sent}
    per_master = [_charged(s, names) / calls for s in stats]
    if not sent:
        raise BenchError(f"{op.name}: no command was recorded on the client side")
    return {
        "usec_per_call": round(sum(per_master), 2),
        "usec_per_call_by_master": [round(u, 2) for u in per_master],
        "sent": sorted(names),
        "sent_per_call": round(len(sent) / calls, 2),
    }


def measure_server_cost(ops: list[Operation], masters: list[redis.Redis], calls: int) -> dict[str, Any]:
    """``{"calls", "baseline": {"get", "setex"}, "operations": {name: {..., "ratio", "vs"}}}``:
    ``ops`` holds the two baselines (``get``, ``setex``) and the strategy operations; ``masters``
    are admin connections to every tier's master (the cache tier's first)."""
    costs = {op.name: cost_of(op, masters, calls) for op in ops}
    baseline = {name: costs.pop(name) for name in ("get", "setex")}
    operations = {}
    for name, cost in costs.items():
        base = baseline_of(name)
        raw = baseline[base]["usec_per_call"]
        ratio = round(cost["usec_per_call"] / raw, 2) if raw > 0 else None
        operations[name] = {**cost, "vs": base, "ratio": ratio}
    return {"calls": calls, "baseline": baseline, "operations": operations}
