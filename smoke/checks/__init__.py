"""Named smoke checks: each proves one property of one strategy against a live cluster.

A check is a function ``(ctx) -> str`` registered with :func:`check`; it returns a one-line
detail of what it measured and raises :class:`CheckFailed` (or any exception) when the property
does not hold. The runner (``python -m smoke``) and the pytest suite run the same checks.
"""

from __future__ import annotations

import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from smoke.strategies.client import SentinelClient

# "eviction" and "failover" have no registered checks: the runner adds the drills' results.
STRATEGIES = ("topology", "entry", "claim", "workflow", "idempotency", "ratelimit", "eviction", "failover")


class CheckFailed(AssertionError):
    """The property does not hold; the message says what was expected and what was seen."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# Root of every smoke run's key prefix ("smoke:<run id>:"); the application ACL user may use it.
SMOKE_KEY_PREFIX = "smoke:"


@dataclass
class CheckContext:
    """What a check gets: the shared clients (one per data tier), the run's key prefix, and a
    latency recorder."""

    # The cache tier's client (entries, claims).
    client: SentinelClient
    # Every key a check writes starts with this (e.g. "smoke:1a2b3c:"), so a run can be isolated
    # and cleaned up without touching application data.
    prefix: str
    replicas: int = 2
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # The state tier's client (idempotency, rate limits, workflows); None: a target without a
    # state tier, where those checks run against the cache tier's client.
    state_client: SentinelClient | None = None

    # Replicas the state tier's master must have.
    state_replicas: int = 2

    @property
    def state(self) -> SentinelClient:
        """The client of the tier that holds decisions."""
        return self.state_client or self.client

    @property
    def state_tier_replicas(self) -> int:
        """Replicas the master of the tier that holds decisions has."""
        return self.state_replicas if self.state_client else self.replicas

    def tiers(self) -> list[tuple[str, SentinelClient, int]]:
        """(tier, client, replicas expected) of every data tier of the target."""
        cache = [("cache", self.client, self.replicas)]
        return cache + ([("state", self.state_client, self.state_replicas)] if self.state_client else [])

    def timed(self, name: str, fn: Callable[[], object]) -> object:
        """Run ``fn`` and record its latency under ``name`` (``<strategy>.<op>``)."""
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.latencies_ms[name].append((time.perf_counter() - started) * 1000)


@dataclass(frozen=True)
class Check:
    strategy: str
    name: str
    run: Callable[[CheckContext], str]


@dataclass(frozen=True)
class CheckResult:
    strategy: str
    name: str
    passed: bool
    detail: str


REGISTRY: list[Check] = []


def check(strategy: str, name: str) -> Callable[[Callable[[CheckContext], str]], Callable[[CheckContext], str]]:
    """Register a check under ``strategy`` (one of STRATEGIES) and a snake_case ``name``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")

    def register(fn: Callable[[CheckContext], str]) -> Callable[[CheckContext], str]:
        if any(c.strategy == strategy and c.name == name for c in REGISTRY):
            raise ValueError(f"check {strategy}.{name} registered twice")
        REGISTRY.append(Check(strategy, name, fn))
        return fn

    return register


def run_check(item: Check, ctx: CheckContext) -> CheckResult:
    try:
        return CheckResult(item.strategy, item.name, True, item.run(ctx))
    except CheckFailed as exc:
        return CheckResult(item.strategy, item.name, False, str(exc))
    except Exception as exc:  # a crash is a failed check with its cause, not a runner crash
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return CheckResult(
            item.strategy, item.name, False, f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
        )
