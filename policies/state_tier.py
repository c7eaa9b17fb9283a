"""The state tier never evicts (issue 13): the decisions live on a Redis of their own that refuses
writes when full instead of forgetting them.

The cache tier runs ``allkeys-lru``: it is full in normal operation, and LRU evicts whatever is
read least, completed idempotency records, rate-limit counters and workflow versions included, and
an evicted decision is a payment executed twice. So the decisions live on the state tier (data pods
labelled ``dict.lbpay.com.br/tier: state``), and this rule refuses every way a stack could still
let them be evicted:

- a stack with Redis data pods but no state tier (the decisions would live on the cache);
- a state tier whose config (mounted ``*.conf``, ``--flags``, or a script's setting) names a
  ``maxmemory-policy`` other than ``noeviction``, or that runs without the AOF;
- a state tier registered with the Sentinels under the cache tier's master name, or a client
  (the smoke Job's ``--state-master-name``, or ``STATE_MASTER_NAME``) given the cache tier's
  master name for the state keys: either way the Sentinels hand out the evicting cache's master;
- state keys pointed at cache pods: the state tier's ``REDIS_ADDRS``/``REDIS_SEED_HOST`` (whom a
  state pod follows without a Sentinel majority), or the Sentinels' ``SENTINEL_MONITORS`` entry
  for the state tier's master name (whom they monitor under it), naming a cache-tier pod.

A script variable (a tier's ``MASTER_NAME``, its pods) is the main container's ``env`` value, else
the defaults of the scripts it starts from (``: "${MASTER_NAME:=...}"`` in common.sh).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pulumi_policy import EnforcementLevel, ReportViolation, StackValidationArgs, StackValidationPolicy

from policies import workloads as w
from policies.config_text import setting_values, without_comments
from policies.kubernetes import kubernetes_objects
from policies.pack_config import (
    MASTER_NAME_VAR,
    SENTINEL_COMPONENT,
    SERVER_COMPONENT,
    STATE_MASTER_NAME_VAR,
    STATE_TIER,
    TIER_LABEL,
    as_map,
    describe,
)
from policies.redis import _conf_text, _directive, _mounted_config, _started_from, _workloads

MANDATORY = EnforcementLevel.MANDATORY
NO_EVICTION = "noeviction"
# How a client is given each tier's master name (the smoke Job's arguments, components/smoke_job.py).
CACHE_FLAG = "--master-name"
STATE_FLAG = "--state-master-name"
# Where a data pod's scripts look for its tier's pods, and a Sentinel for every tier's (common.sh).
_STATE_POD_VARS = ("REDIS_ADDRS", "REDIS_SEED_HOST")
MONITORS_VAR = "SENTINEL_MONITORS"
DECISIONS = "completed idempotency records, rate-limit counters, workflow status and versions"


def _word(value: str) -> str:
    """The first word of a directive's arguments, unquoted (``"allkeys-lru"`` -> ``allkeys-lru``)."""
    parts = value.strip().split()
    return parts[0].strip("\"'") if parts else ""


# --- what a data workload is configured with ---------------------------------------------------


def _settings(args: StackValidationArgs, workload: Any, name: str) -> list[tuple[str, str]]:
    """``(where, value)`` of every place the data workload's pods set ``name``: each mounted
    ``*.conf`` file (``<ConfigMap>/<key>``), the container's command line, and the other mounted
    entries (start and rotation scripts: a ``printf`` into the config or a ``CONFIG SET``), in
    that order."""
    main = w.main_container(workload.props, SERVER_COMPONENT)
    entries = _mounted_config(args, workload)
    found: list[tuple[str, str]] = []
    for key, text in entries.items():
        if key.endswith(".conf"):
            found += [(key, _word(v)) for v in _directive(_conf_text({key: text}, None), name)]
    if main is not None:
        found += [("its command line", _word(v)) for v in _directive(_conf_text({}, main), name)]
    for key, text in entries.items():
        if not key.endswith(".conf"):
            found += [(key, _word(v)) for v in setting_values(without_comments(text), name)]
    return found


@dataclass(frozen=True)
class Variable:
    """The values a start-script variable takes in a workload's pods, and where they come from."""

    values: tuple[str, ...]
    source: str


def variable(args: StackValidationArgs, workload: Any, role: str, name: str) -> Variable | None:
    """A shell variable of the scripts a workload's main container starts from: its ``env`` value,
    else every default the scripts give it (``: "${NAME:=...}"``); None when neither sets it."""
    main = w.main_container(workload.props, role)
    if main is not None:
        value = w.env_value(main, name)
        if value is not None:
            return Variable((value,), f"env {name} on its container")
    text = _started_from(_mounted_config(args, workload), main)
    found = re.findall(rf"\$\{{{re.escape(name)}:?=([^}}]*)\}}", text)
    defaults = tuple(dict.fromkeys(d.strip("\"' ") for d in found if d.strip("\"' ")))
    return Variable(defaults, f"the {name} default in the scripts it runs") if defaults else None


def master_name(args: StackValidationArgs, workload: Any) -> Variable | None:
    """The Sentinel master names a data workload's pods register under and ask for."""
    return variable(args, workload, SERVER_COMPONENT, MASTER_NAME_VAR)


# --- the rule ------------------------------------------------------------------------------------


def _no_state_tier(caches: list[Any], report: ReportViolation) -> None:
    for cache in caches:
        label = w.pod_labels(cache.props).get(TIER_LABEL)
        shown = f"its pods' {TIER_LABEL} label is {label!r}" if label else f"its pods carry no {TIER_LABEL} label"
        report(
            f"{describe(cache.resource_type, cache.props, cache.name)} is a cache-tier Redis ({shown}) and "
            "the stack has no state tier (no Redis "
            f"workload whose pods are labelled {TIER_LABEL}: {STATE_TIER}), so the decisions ({DECISIONS}) live "
            "on a Redis that evicts them once it is full, and a request that already ran is executed again. Add "
            f"the state tier: a Redis StatefulSet of its own whose pods are labelled {TIER_LABEL}: {STATE_TIER}, "
            "with 'maxmemory-policy noeviction' and 'appendonly yes', monitored by the Sentinels under a master "
            "name of its own.",
            cache.urn,
        )


def _evicting(args: StackValidationArgs, state: Any, what: str, report: ReportViolation) -> None:
    policies = _settings(args, state, "maxmemory-policy")
    evicting = [f"{where} sets maxmemory-policy {value!r}" for where, value in policies if value != NO_EVICTION]
    if evicting:
        report(
            f"{what} is the state tier, but {'; '.join(evicting)}, so once it is full Redis deletes decisions "
            f"({DECISIONS}) to make room, and a request that already ran is executed again. Set "
            "'maxmemory-policy noeviction' in its redis.conf (stack setting state.maxmemoryPolicy) and no other "
            "policy in its scripts or command line: a full state tier must refuse writes, which the strategies "
            "turn into a retryable error.",
            state.urn,
        )
    problems = []
    appendonly = _settings(args, state, "appendonly")
    if not appendonly:
        problems.append("nothing in its config sets appendonly, so the AOF is off (Redis's default)")
    else:
        problems += [f"{where} sets appendonly {value!r}" for where, value in appendonly if value.lower() != "yes"]
    problems += [
        f"{where} sets appendfsync {value!r}"
        for where, value in _settings(args, state, "appendfsync")
        if value.lower() not in ("everysec", "always")
    ]
    if problems:
        report(
            f"{what} is the state tier, but {'; '.join(problems)}, so a restart of its pods loses the decisions "
            "written since the last RDB save (or the last flush the kernel chose). Set 'appendonly yes' and "
            "'appendfsync everysec' in its redis.conf (stack settings state.persistence.appendonly: true and "
            "state.persistence.appendfsync: everysec).",
            state.urn,
        )


def _cache_names(args: StackValidationArgs, caches: Iterable[Any]) -> dict[str, str]:
    """``{master name: the cache workload (and where its name comes from)}``."""
    names: dict[str, str] = {}
    for cache in caches:
        found = master_name(args, cache)
        if found is not None:
            for name in found.values:
                names.setdefault(name, f"{describe(cache.resource_type, cache.props, cache.name)} ({found.source})")
    return names


def _shared_master_name(
    args: StackValidationArgs, state: Any, what: str, cache_names: dict[str, str], report: ReportViolation
) -> None:
    found = master_name(args, state)
    if found is None:
        return
    for name in sorted(set(found.values) & cache_names.keys()):
        report(
            f"{what} is the state tier, but it registers with the Sentinels as {name!r} ({found.source}), the "
            f"master name of the cache tier's {cache_names[name]}: a client asking the Sentinels for the state "
            "tier's master can be handed the evicting cache's, so decisions land where they are evicted. Give "
            "the state tier a master name of its own (stack setting state.masterName, e.g. 'dictstate'), "
            "different from the cache's masterName.",
            state.urn,
        )


def _flag_values(container: w.Container, flag: str) -> list[str]:
    argv = w.command_line(container)
    return [b for a, b in itertools.pairwise(argv) if a == flag] + [
        a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")
    ]


def _clients(args: StackValidationArgs, cache_names: dict[str, str], report: ReportViolation) -> None:
    """Workloads given the state tier's master name (the smoke Job: ``--state-master-name`` or
    ``STATE_MASTER_NAME``) must not be given the cache's."""
    for workload in kubernetes_objects(args, *w.WORKLOAD_KINDS):
        if w.redis_role(workload.props) is not None:
            continue
        what = describe(workload.resource_type, workload.props, workload.name)
        for container in w.containers(workload.props):
            given = [(STATE_FLAG, v) for v in _flag_values(container, STATE_FLAG)]
            env = w.env_value(container, STATE_MASTER_NAME_VAR)
            if env is not None:
                given.append((STATE_MASTER_NAME_VAR, env))
            own = {v: f"its own {CACHE_FLAG}" for v in _flag_values(container, CACHE_FLAG)}
            cache = w.env_value(container, MASTER_NAME_VAR)
            if cache is not None:
                own.setdefault(cache, f"its own {MASTER_NAME_VAR}")
            for how, state in given:
                where = cache_names.get(state) or own.get(state)
                if where is None:
                    continue
                shown = f"{how} {state}" if how.startswith("--") else f"{how}={state!r}"
                report(
                    f'{what}, container "{container.name}": {shown} is the cache tier\'s Sentinel master name '
                    f"({where}), so it reads and writes the state tier's keys on the evicting cache. Give it the "
                    "state tier's master name (stack setting state.masterName), never the cache's.",
                    workload.urn,
                )


def _cache_pods(caches: Iterable[Any]) -> list[tuple[re.Pattern[str], str]]:
    """``(host pattern, the cache workload)`` of every cache-tier StatefulSet's pod DNS names
    (``redis-0.redis-headless``, with or without ``.<namespace>...``)."""
    pods = []
    for cache in caches:
        spec = as_map(cache.props.get("spec"))
        service = spec.get("serviceName")
        if w.kind(cache.props) != "StatefulSet" or not service:
            continue
        name, ns = re.escape(w.object_name(cache.props)), re.escape(w.namespace(cache.props))
        pattern = re.compile(rf"{name}-[0-9]+\.{re.escape(str(service))}(?:\.{ns}(?:\..*)?)?", re.IGNORECASE)
        pods.append((pattern, describe(cache.resource_type, cache.props, cache.name)))
    return pods


def _cache_pod(host: str, pods: list[tuple[re.Pattern[str], str]]) -> str | None:
    """The cache workload ``host`` (``host`` or ``host:port``) is a pod of, or None."""
    host = host.strip().rsplit(":", 1)[0] if re.search(r":[0-9]+$", host.strip()) else host.strip()
    return next((what for pattern, what in pods if pattern.fullmatch(host)), None)


def _state_pods_follow_the_cache(
    args: StackValidationArgs, state: Any, what: str, pods: list[tuple[re.Pattern[str], str]], report: ReportViolation
) -> None:
    problems: list[str] = []
    caches: list[str] = []
    for name in _STATE_POD_VARS:
        found = variable(args, state, SERVER_COMPONENT, name)
        hosts = [h for value in (found.values if found else ()) for h in value.split()]
        routed = [(h, cache) for h in hosts if (cache := _cache_pod(h, pods))]
        if found is not None and routed:
            problems.append(f"{found.source} names {routed[0][0]}")
            caches += [cache for cache in dict.fromkeys(c for _, c in routed) if cache not in caches]
    if problems:
        report(
            f"{what} is the state tier, but {'; '.join(problems)}: pods of the cache tier's {', '.join(caches)}. "
            "A state pod that finds no Sentinel majority then follows the evicting cache's master and serves "
            "its data in place of the decisions. Point REDIS_ADDRS and REDIS_SEED_HOST at the state tier's own "
            "pods.",
            state.urn,
        )


def _sentinels_seed_state_from_the_cache(
    args: StackValidationArgs, state_names: set[str], pods: list[tuple[re.Pattern[str], str]], report: ReportViolation
) -> None:
    """A Sentinel's ``SENTINEL_MONITORS`` (``name=host:port,...`` per tier) must not list a cache
    pod under a state tier's master name."""
    for sentinel in _workloads(args, SENTINEL_COMPONENT):
        found = variable(args, sentinel, SENTINEL_COMPONENT, MONITORS_VAR)
        if found is None:
            continue
        for entry in (e for value in found.values for e in value.split()):
            name, _, hosts = entry.partition("=")
            if name not in state_names:
                continue
            routed = [(h, cache) for h in hosts.split(",") if (cache := _cache_pod(h, pods))]
            if routed:
                host, cache = routed[0]
                report(
                    f"{describe(sentinel.resource_type, sentinel.props, sentinel.name)}: {found.source} lists "
                    f"{host}, a pod of the cache tier's {cache}, under the state tier's "
                    f"master name {name!r}, so the Sentinels can monitor the evicting cache's master as the state "
                    "tier and hand it to every client that asks for the state keys. List only the state tier's "
                    f"own pods under {name!r}.",
                    sentinel.urn,
                )


def _validate_state_tier(args: StackValidationArgs, report: ReportViolation) -> None:
    servers = _workloads(args, SERVER_COMPONENT)
    states = [s for s in servers if w.tier(s.props) == STATE_TIER]
    caches = [s for s in servers if w.tier(s.props) != STATE_TIER]
    if caches and not states:
        _no_state_tier(caches, report)
    cache_names = _cache_names(args, caches)
    pods = _cache_pods(caches)
    state_names: set[str] = set()
    for state in states:
        what = describe(state.resource_type, state.props, state.name)
        _evicting(args, state, what, report)
        _shared_master_name(args, state, what, cache_names, report)
        _state_pods_follow_the_cache(args, state, what, pods, report)
        found = master_name(args, state)
        state_names |= set(found.values) if found else set()
    # A name both tiers use is reported above; the Sentinels' entry for it is the cache's own.
    _sentinels_seed_state_from_the_cache(args, state_names - cache_names.keys(), pods, report)
    _clients(args, cache_names, report)


state_tier_never_evicts = StackValidationPolicy(
    name="redis-state-tier-never-evicts",
    description=(
        "The decisions live on a state tier that never evicts: one exists beside the cache, runs "
        "maxmemory-policy noeviction with the AOF on, and has a Sentinel master name of its own that clients "
        "use for the state keys."
    ),
    enforcement_level=MANDATORY,
    validate=_validate_state_tier,
)

POLICIES = [state_tier_never_evicts]
