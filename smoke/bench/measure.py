"""The benchmark's instruments: round trips and commands are counted, latencies sampled.

* **Round trips** are writes to a socket: redis-py writes one command, or one whole pipeline, with
  one ``send_packed_command`` call and then reads the replies, so counting those calls made by
  this thread counts round trips. redis-py has no hook for this, hence the wrapper.
* **Commands** are ``INFO commandstats`` deltas on the master: every command Redis executed,
  including the ones a Lua script ran (``GET``/``SET`` inside an ``EVALSHA`` count too), so it
  says how much work the server did. The Sentinels' and replicas' own traffic (``PING``,
  ``INFO``, ``PUBLISH`` hello messages, ``REPLCONF`` acks) is left out, and so is the ``INFO`` of
  the measurement itself.
* **Commands sent** are recorded per call of ``send_command`` (and per command of a pipeline):
  the arguments and the node they went to, which is what the server-cost step charges an
  operation for and what the server-side ceiling replays with ``valkey-benchmark``.
* **Latency** is wall time per call on one thread (one pooled connection), in microseconds,
  as nearest-rank percentiles.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import redis
from redis.connection import AbstractConnection

from smoke.checks.report import percentile

# Commands other clients send to the master on their own schedule; not part of any operation.
BACKGROUND_COMMANDS = ("info", "ping", "publish", "replconf", "subscribe", "client|setname", "hello", "role")


class BenchError(RuntimeError):
    """The benchmark would report a wrong figure (a miss where a hit was prepared, an eviction
    during a memory measurement, ...): stop rather than print it."""


@contextlib.contextmanager
def count_round_trips() -> Iterator[list[int]]:
    """Count socket writes (one per command or pipeline) made by this thread meanwhile."""
    calls, me = [0], threading.get_ident()
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: object, check_health: bool = True) -> None:
        if threading.get_ident() == me:
            calls[0] += 1
        original(self, command, check_health)

    AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


@dataclass(frozen=True)
class SentCommand:
    """One command a client sent: the node's address and the arguments, as given to redis-py."""

    host: str
    port: int
    args: tuple[object, ...]

    @property
    def name(self) -> str:
        """The command's name as ``INFO commandstats`` spells it (``evalsha``, ``get``)."""
        first = self.args[0]
        text = first.decode() if isinstance(first, bytes) else str(first)
        return text.split()[0].lower()


@contextlib.contextmanager
def record_commands() -> Iterator[list[SentCommand]]:
    """Record every command this thread sends meanwhile (single commands and pipelines alike)."""
    sent: list[SentCommand] = []
    me = threading.get_ident()
    single, batch = AbstractConnection.send_command, AbstractConnection.pack_commands

    def sending(self: AbstractConnection, *args: object, **kwargs: object) -> None:
        if threading.get_ident() == me:
            sent.append(SentCommand(str(getattr(self, "host", "")), int(getattr(self, "port", 0)), args))
        single(self, *args, **kwargs)

    def packing(self: AbstractConnection, commands: Sequence[tuple[object, ...]]) -> list[bytes]:
        if threading.get_ident() == me:
            host, port = str(getattr(self, "host", "")), int(getattr(self, "port", 0))
            sent.extend(SentCommand(host, port, tuple(command)) for command in commands)
        return batch(self, commands)

    AbstractConnection.send_command = sending  # type: ignore[method-assign]
    AbstractConnection.pack_commands = packing  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        AbstractConnection.send_command = single  # type: ignore[method-assign]
        AbstractConnection.pack_commands = batch  # type: ignore[method-assign]


def command_calls(node: redis.Redis) -> dict[str, int]:
    """Calls per command from ``INFO commandstats`` (``cmdstat_get`` -> ``get``)."""
    stats = node.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(values["calls"]) for name, values in stats.items()}


def commands_between(before: dict[str, int], after: dict[str, int]) -> int:
    """Commands executed between two ``command_calls`` snapshots, background traffic left out."""
    return sum(
        calls - before.get(name, 0)
        for name, calls in after.items()
        if name not in BACKGROUND_COMMANDS and not name.startswith("sentinel")
    )


def time_calls(calls: Sequence[Callable[[], object]]) -> list[float]:
    """Run each call in turn; the wall time of each in microseconds."""
    samples = []
    clock = time.perf_counter_ns
    for call in calls:
        started = clock()
        call()
        samples.append((clock() - started) / 1000)
    return samples


def percentiles_us(samples: Sequence[float]) -> dict[str, float]:
    """``p50_us``/``p95_us``/``p99_us`` of latency samples in microseconds."""
    values = list(samples)
    return {f"p{q}_us": round(percentile(values, q), 1) for q in (50, 95, 99)}
