"""Redis-specific stack rules: memory headroom, the Sentinel majority, and replication auth.

None of these can be judged from one object: maxmemory sits in a ConfigMap while the memory limit
sits on the StatefulSet that mounts it; the quorum is in sentinel.conf while the Sentinel count is
the StatefulSet's replicas. Each rule follows a workload to the ConfigMaps its pods mount (same
namespace, by name) and reads the config text and the container's command line.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

from pulumi_policy import EnforcementLevel, ReportViolation, StackValidationArgs, StackValidationPolicy

from policies import workloads as w
from policies.kubernetes import kubernetes_objects
from policies.pack_config import SENTINEL_COMPONENT, SERVER_COMPONENT, as_map, describe, option, schema, whole

MANDATORY = EnforcementLevel.MANDATORY


def _mounted_config(args: StackValidationArgs, workload: Any) -> dict[str, str]:
    """``{key: text}`` of every ConfigMap entry the workload's pods mount."""
    ns = w.namespace(workload.props)
    names = w.mounted_names(workload.props, "configMap")
    entries: dict[str, str] = {}
    for cm in kubernetes_objects(args, "ConfigMap"):
        if w.namespace(cm.props) == ns and w.object_name(cm.props) in names:
            for key, value in as_map(cm.props.get("data")).items():
                entries[f"{w.object_name(cm.props)}/{key}"] = str(value or "")
    return entries


def _without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _conf_text(entries: Mapping[str, str], container: w.Container | None) -> str:
    """The config files (``*.conf``) plus ``--directive value`` pairs from the command line."""
    text = "\n".join(_without_comments(v) for k, v in entries.items() if k.endswith(".conf"))
    if container is not None:
        argv = w.command_line(container)
        pairs = [f"{a[2:]} {b}" for a, b in itertools.pairwise(argv) if a.startswith("--")]
        text += "\n" + "\n".join(pairs)
    return text


def _all_text(entries: Mapping[str, str], container: w.Container | None) -> str:
    """Config files and scripts (which write credentials at start), plus the command line."""
    argv = " ".join(w.command_line(container)) if container is not None else ""
    return "\n".join(_without_comments(v) for v in entries.values()) + "\n" + argv


def _workloads(args: StackValidationArgs, role: str) -> list[Any]:
    return [r for r in kubernetes_objects(args, *w.WORKLOAD_KINDS) if w.redis_role(r.props) == role]


# --- quantities -------------------------------------------------------------------------------
# Parsed by hand: the pack runs in its own virtualenv with only pulumi-policy installed.

_K8S_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_K8S_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(k|M|G|T|Ki|Mi|Gi|Ti)?$")
# redis.conf units: 1k = 1000, 1kb = 1024, and so on (case-insensitive).
_REDIS_UNITS = {"": 1, "k": 10**3, "kb": 2**10, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}
_REDIS_MEMORY = re.compile(r"^([0-9]+)(k|kb|m|mb|g|gb)?$", re.IGNORECASE)


def k8s_memory_bytes(quantity: Any) -> int | None:
    match = _K8S_MEMORY.match(str(quantity or ""))
    return int(float(match.group(1)) * _K8S_UNITS[match.group(2) or ""]) if match else None


def redis_memory_bytes(value: str) -> int | None:
    match = _REDIS_MEMORY.match(value)
    return int(match.group(1)) * _REDIS_UNITS[(match.group(2) or "").lower()] if match else None


def _directive(text: str, name: str) -> list[str]:
    """Arguments of every ``name ...`` line, in order."""
    return [m.group(1).strip() for m in re.finditer(rf"^[ \t]*{name}[ \t]+(.*)$", text, re.MULTILINE | re.IGNORECASE)]


def persistence_on(conf: str) -> bool:
    """RDB or AOF on. Without any ``save`` line Redis 7 uses its default save points."""
    appendonly = _directive(conf, "appendonly")
    saves = _directive(conf, "save")
    rdb = not saves or any(s.strip("\"' ") for s in saves[-1:])
    return rdb or (bool(appendonly) and appendonly[-1].lower() == "yes")


# --- maxmemory within the allowed share of the memory limit ------------------------------------

_MEMORY_SCHEMA = schema(
    {
        "maxMemoryShare": {
            "type": "number",
            "default": 0.6,
            "minimum": 0.1,
            "maximum": 1,
            "description": "largest maxmemory / container memory limit while RDB or AOF is on",
        }
    }
)


def _validate_maxmemory(args: StackValidationArgs, report: ReportViolation) -> None:
    allowed = float(option(args, _MEMORY_SCHEMA, "maxMemoryShare"))
    for server in _workloads(args, SERVER_COMPONENT):
        what = describe(server.resource_type, server.props, server.name)
        main = w.main_container(server.props, SERVER_COMPONENT)
        limit = (
            k8s_memory_bytes(as_map(as_map(main.spec.get("resources")).get("limits")).get("memory")) if main else None
        )
        if limit is None:
            report(
                f"{what}: the Redis container has no readable memory limit, so maxmemory cannot be "
                "checked against it. Set resources.limits.memory (e.g. 4Gi) on the redis container.",
                server.urn,
            )
            continue
        conf = _conf_text(_mounted_config(args, server), main)
        if not persistence_on(conf):
            continue
        values = _directive(conf, "maxmemory")
        maxmemory = redis_memory_bytes(values[-1]) if values else None
        if not maxmemory:
            state = "maxmemory is unset" if not values else f"maxmemory is {values[-1]!r}"
            report(
                f"{what}: Redis runs with persistence (RDB or AOF) but {state}, "
                "so the dataset can grow until the fork of a save is OOM-killed. Set maxmemory to at "
                f"most {allowed:.0%} of the memory limit ({int(limit * allowed)} bytes).",
                server.urn,
            )
        elif maxmemory > limit * allowed:
            report(
                f"{what}: maxmemory {values[-1]} is {maxmemory / limit:.0%} of the container memory limit "
                f"({limit} bytes) while RDB or AOF is on; a save forks and copy-on-write can double "
                f"memory. Lower maxmemory to at most {allowed:.0%} ({int(limit * allowed)} bytes) or "
                "raise the limit.",
                server.urn,
            )


maxmemory_headroom = StackValidationPolicy(
    name="redis-maxmemory-headroom",
    description="With persistence on, Redis maxmemory stays within the allowed share of the container memory limit.",
    enforcement_level=MANDATORY,
    config_schema=_MEMORY_SCHEMA,
    validate=_validate_maxmemory,
)


# --- an odd number of at least 3 Sentinels with a majority quorum ------------------------------

_MONITOR = re.compile(
    r"^[ \t]*sentinel[ \t]+monitor[ \t]+\S+[ \t]+\S+[ \t]+\S+[ \t]+(\S+)", re.MULTILINE | re.IGNORECASE
)


def _validate_sentinels(args: StackValidationArgs, report: ReportViolation) -> None:
    servers = _workloads(args, SERVER_COMPONENT)
    sentinels = _workloads(args, SENTINEL_COMPONENT)
    if servers and not sentinels:
        for server in servers:
            report(
                f"{describe(server.resource_type, server.props, server.name)} has no Sentinels in the stack, "
                "so nothing fails over when its master dies. Add a Sentinel StatefulSet of 3 (or 5) pods "
                "with quorum 2 (or 3).",
                server.urn,
            )
    for sentinel in sentinels:
        what = describe(sentinel.resource_type, sentinel.props, sentinel.name)
        replicas = whole(as_map(sentinel.props.get("spec")).get("replicas", 1))
        if replicas is None or replicas < 3 or replicas % 2 == 0:
            report(
                f"{what} runs {replicas} Sentinels: use an odd number of at least 3 (3, 5, 7) so a "
                "majority survives losing one and two halves of a partition cannot both elect a master.",
                sentinel.urn,
            )
        main = w.main_container(sentinel.props, SENTINEL_COMPONENT)
        conf = _conf_text(_mounted_config(args, sentinel), main)
        quorums = [whole(m.group(1)) for m in _MONITOR.finditer(conf)]
        if not quorums:
            report(
                f"{what}: no 'sentinel monitor <name> <host> <port> <quorum>' line found in the "
                "sentinel.conf it mounts, so its quorum cannot be checked. Render the monitor line "
                "into the Sentinel ConfigMap.",
                sentinel.urn,
            )
            continue
        if replicas is None:
            continue
        majority = replicas // 2 + 1
        for quorum in quorums:
            if quorum is None or not majority <= quorum <= replicas:
                report(
                    f"{what}: quorum {quorum} is not a majority of its {replicas} Sentinels; set it "
                    f"between {majority} and {replicas} so no minority can declare the master down.",
                    sentinel.urn,
                )


sentinel_quorum = StackValidationPolicy(
    name="redis-sentinel-quorum",
    description="Redis runs under an odd number (at least 3) of Sentinels whose quorum is a majority.",
    enforcement_level=MANDATORY,
    validate=_validate_sentinels,
)


# --- replicas (and Sentinels) authenticate to the master ----------------------------------------


def _validate_replica_auth(args: StackValidationArgs, report: ReportViolation) -> None:
    wiring = {SERVER_COMPONENT: ("masterauth", "replicas"), SENTINEL_COMPONENT: ("auth-pass", "Sentinels")}
    for role, (directive, who) in wiring.items():
        for workload in _workloads(args, role):
            what = describe(workload.resource_type, workload.props, workload.name)
            text = _all_text(_mounted_config(args, workload), w.main_container(workload.props, role))
            missing = []
            # A substring test: scripts write it inside printf formats ('...\nmasterauth %s').
            if directive not in text:
                missing.append(f"nothing in its config, scripts or command line sets {directive}")
            if not w.secret_refs(workload.props):
                missing.append("its pods use no Secret to read the password from")
            if missing:
                report(
                    f"{what}: {' and '.join(missing)}, so its {who} get NOAUTH from a password-protected "
                    f"master. Mount the password Secret as a file and have the start script write "
                    f"'{directive}' from it at start (never into a ConfigMap or onto the command line).",
                    workload.urn,
                )


replica_auth = StackValidationPolicy(
    name="redis-replica-auth",
    description="Redis replicas (masterauth) and Sentinels (auth-pass) are wired to authenticate to the master.",
    enforcement_level=MANDATORY,
    validate=_validate_replica_auth,
)

POLICIES = [maxmemory_headroom, sentinel_quorum, replica_auth]
