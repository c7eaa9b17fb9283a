"""Redis-specific stack rules: memory headroom, the Sentinel majority, how replicas and Sentinels
log in, TLS only, and the default user turned off.

None of these can be judged from one object: maxmemory sits in a ConfigMap while the memory limit
sits on the StatefulSet that mounts it; the quorum is in sentinel.conf while the Sentinel count is
the StatefulSet's replicas; the TLS settings are printed by a start script whose certificate comes
from a cert-manager Certificate's Secret or the stack CA's ``kubernetes.io/tls`` Secret. Each rule
follows a workload to the ConfigMaps its pods mount (same namespace, by name) and reads the
config text, the scripts and the container's command line (``policies/config_text.py`` says
where a setting counts).
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from pulumi_policy import EnforcementLevel, ReportViolation, StackValidationArgs, StackValidationPolicy

from policies import workloads as w
from policies.config_text import acl_user_enabled, acl_user_rules, setting_values, without_comments
from policies.kubernetes import kubernetes_objects
from policies.pack_config import (
    SENTINEL_COMPONENT,
    SERVER_COMPONENT,
    TLS_SWITCH,
    as_map,
    describe,
    option,
    schema,
    whole,
)

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


def _conf_text(entries: Mapping[str, str], container: w.Container | None) -> str:
    """The config files (``*.conf``) plus ``--directive value`` pairs from the command line."""
    text = "\n".join(without_comments(v) for k, v in entries.items() if k.endswith(".conf"))
    if container is not None:
        argv = w.command_line(container)
        pairs = [f"{a[2:]} {b}" for a, b in itertools.pairwise(argv) if a.startswith("--")]
        text += "\n" + "\n".join(pairs)
    return text


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
    r"^[ \t]*sentinel[ \t]+monitor[ \t]+(\S+)[ \t]+\S+[ \t]+\S+[ \t]+(\S+)", re.MULTILINE | re.IGNORECASE
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
        # One monitor line per data tier (the cache's and the state tier's master).
        quorums = [(m.group(1), whole(m.group(2))) for m in _MONITOR.finditer(conf)]
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
        for master, quorum in quorums:
            if quorum is None or not majority <= quorum <= replicas:
                report(
                    f"{what}: quorum {quorum} is not a majority of its {replicas} Sentinels; set it "
                    f"between {majority} and {replicas} so no minority can declare the master {master!r} down.",
                    sentinel.urn,
                )


sentinel_quorum = StackValidationPolicy(
    name="redis-sentinel-quorum",
    description="Redis runs under an odd number (at least 3) of Sentinels whose quorum is a majority.",
    enforcement_level=MANDATORY,
    validate=_validate_sentinels,
)


# --- what a workload starts from ----------------------------------------------------------------

# A script sourcing another: `. "$(dirname "$0")/common.sh"`.
_SOURCES = re.compile(r"^[ \t]*(?:\.|source)[ \t]+[^\n]*?([\w.-]+\.sh)\b", re.MULTILINE)


def _started_from(entries: Mapping[str, str], container: w.Container | None) -> str:
    """The config the process starts from: the mounted ``*.conf`` files, the scripts its command
    line runs (and those they source), and the command line itself. Other scripts in the same
    ConfigMap (probes, the rotation's sync-acl.sh) do not shape how it starts."""
    by_key = {key.split("/", 1)[-1]: text for key, text in entries.items()}
    argv = w.command_line(container) if container is not None else []
    queue = [posixpath.basename(a) for a in argv if posixpath.basename(a) in by_key]
    scripts: list[str] = []
    while queue:
        key = queue.pop(0)
        if key in scripts:
            continue
        scripts.append(key)
        queue += [m.group(1) for m in _SOURCES.finditer(by_key[key]) if m.group(1) in by_key]
    texts = [text for key, text in entries.items() if key.endswith(".conf")] + [by_key[k] for k in scripts]
    return "\n".join(without_comments(t) for t in texts) + "\n" + " ".join(argv)


def _certificate_secrets(args: StackValidationArgs, ns: str) -> set[str]:
    """Secrets in the namespace that hold a certificate: issued by a cert-manager Certificate, or
    of type kubernetes.io/tls."""
    names = set()
    for cert in kubernetes_objects(args, "Certificate"):
        if w.namespace(cert.props) == ns:
            name = as_map(cert.props.get("spec")).get("secretName")
            if name:
                names.add(str(name))
    for secret in kubernetes_objects(args, "Secret"):
        if w.namespace(secret.props) == ns and secret.props.get("type") == "kubernetes.io/tls":
            names.add(w.object_name(secret.props))
    return names


def _mounted_secrets(workload: Any, container: w.Container | None) -> set[str]:
    if container is None:
        return set()
    return {name for volume in w.mounted_volumes(workload.props, container) for name in w.volume_secrets(volume)}


# --- replicas and Sentinels authenticate to the data nodes as their ACL users -------------------

# (settings that must be present, who they are for). Without a user name a replica or Sentinel
# authenticates as `default`, which the ACL turns off.
_AUTH_WIRING = {
    SERVER_COMPONENT: (("masteruser", "masterauth"), "replicas", ""),
    SENTINEL_COMPONENT: (("auth-user", "auth-pass"), "Sentinels", "sentinel "),
}


def _validate_replica_auth(args: StackValidationArgs, report: ReportViolation) -> None:
    for role, (settings, who, prefix) in _AUTH_WIRING.items():
        for workload in _workloads(args, role):
            what = describe(workload.resource_type, workload.props, workload.name)
            main = w.main_container(workload.props, role)
            text = _started_from(_mounted_config(args, workload), main)
            missing = []
            unset = [name for name in settings if not setting_values(text, name)]
            if unset:
                missing.append(
                    f"nothing in the config it starts from (its *.conf files, start script or command line) "
                    f"sets {' and '.join(prefix + name for name in unset)}"
                )
            certificates = _certificate_secrets(args, w.namespace(workload.props))
            if not _mounted_secrets(workload, main) - certificates:
                container = f'container "{main.name}"' if main else "main container"
                missing.append(f"its {container} mounts no Secret to read the password from")
            if missing:
                report(
                    f"{what}: {' and '.join(missing)}, so its {who} cannot log in to the data nodes, whose "
                    f"ACL turns the default user off. Mount the password Secret as a file and have the start "
                    f"script write '{prefix}{settings[0]}' (the ACL user) and '{prefix}{settings[1]}' (its password, "
                    "read from the file) at start, never into a ConfigMap or onto the command line.",
                    workload.urn,
                )


replica_auth = StackValidationPolicy(
    name="redis-replica-auth",
    description=(
        "Redis replicas (masteruser + masterauth) and Sentinels (sentinel auth-user + auth-pass) log in to the "
        "data nodes as ACL users, with the password from a mounted Secret."
    ),
    enforcement_level=MANDATORY,
    validate=_validate_replica_auth,
)


# --- Redis and Sentinel serve TLS only ----------------------------------------------------------

_TLS_SETTINGS = (("port", "0"), ("tls-port", None), ("tls-replication", "yes"))


def _tls_switch(text: str, main: w.Container | None) -> tuple[str, str] | None:
    """``(value, where)`` of the scripts' TLS switch, or None when they have none (TLS settings
    that are not behind a switch are always written)."""
    if main is not None:
        value = w.env_value(main, TLS_SWITCH)
        if value is not None:
            return value, f"env {TLS_SWITCH}={value!r} on its container"
    defaults = re.findall(rf"\$\{{{TLS_SWITCH}:?=([^}}]*)\}}", text)
    if defaults:
        return defaults[-1], f"{TLS_SWITCH} defaults to {defaults[-1]!r} in the scripts it runs"
    if re.search(rf"\${{?{TLS_SWITCH}\b", text):
        return "", f"{TLS_SWITCH} is unset"
    return None


def _validate_tls(args: StackValidationArgs, report: ReportViolation) -> None:
    for role in (SERVER_COMPONENT, SENTINEL_COMPONENT):
        for workload in _workloads(args, role):
            what = describe(workload.resource_type, workload.props, workload.name)
            main = w.main_container(workload.props, role)
            text = _started_from(_mounted_config(args, workload), main)
            problems = []
            switch = _tls_switch(text, main)
            if switch is not None and switch[0].lower() != "yes":
                problems.append(f"TLS is switched off ({switch[1]}), so its start script opens a plain-text port")
            missing = [
                f"{name} {value}" if value else name
                for name, value in _TLS_SETTINGS
                if not any(v == (value or v) for v in setting_values(text, name))
            ]
            if missing:
                problems.append(f"nothing in the config it starts from sets {', '.join(missing)}")
            if not _mounted_secrets(workload, main) & _certificate_secrets(args, w.namespace(workload.props)):
                container = f'container "{main.name}"' if main else "main container"
                problems.append(
                    f"its {container} mounts no certificate (a Secret issued by a cert-manager Certificate, "
                    "or of type kubernetes.io/tls)"
                )
            if problems:
                report(
                    f"{what} does not serve TLS only: {'; '.join(problems)}. Passwords and PIX key data then "
                    "cross the network in plain text. Turn TLS on (stack setting tls.enabled: true): "
                    "'port 0' with 'tls-port', 'tls-replication yes' (Sentinels too), and the pod's "
                    "certificate Secret (tls.crt, tls.key, ca.crt; from cert-manager or the stack's CA, "
                    "tls.source) mounted in the container.",
                    workload.urn,
                )


tls_required = StackValidationPolicy(
    name="redis-tls-required",
    description=(
        "Redis and Sentinel serve TLS only (port 0, tls-port, tls-replication yes) with a mounted certificate."
    ),
    enforcement_level=MANDATORY,
    validate=_validate_tls,
)


# --- the default user is off ------------------------------------------------------------------


def _validate_default_user(args: StackValidationArgs, report: ReportViolation) -> None:
    for server in _workloads(args, SERVER_COMPONENT):
        what = describe(server.resource_type, server.props, server.name)
        main = w.main_container(server.props, SERVER_COMPONENT)
        entries = _mounted_config(args, server)
        # Every script counts here: a rotation script's CONFIG SET requirepass would do it too.
        argv = " ".join(w.command_line(main)) if main is not None else ""
        text = "\n".join(without_comments(v) for v in entries.values()) + "\n" + argv
        problems = []
        if setting_values(text, "requirepass"):
            problems.append("its config or scripts set requirepass, which gives the default user a password")
        rules = acl_user_rules(text, "default")
        if not rules:
            problems.append(
                "the ACL it renders has no 'user default' line, so Redis keeps its built-in default user "
                "(on, every command and key)"
            )
        elif acl_user_enabled(" ".join(rules), enabled=True):
            problems.append("the ACL it renders leaves the default user on")
        if problems:
            report(
                f"{what}: {'; '.join(problems)}. A client that sends only a password (or none) then gets "
                "in as 'default', with rights no role was given. Start the ACL file with 'user default off "
                "resetpass resetkeys resetchannels -@all', give every role its own ACL user, and set no "
                "requirepass on the data nodes.",
                server.urn,
            )


default_user_disabled = StackValidationPolicy(
    name="redis-default-user-disabled",
    description="The data nodes' ACL turns the default user off, and no requirepass gives it a password.",
    enforcement_level=MANDATORY,
    validate=_validate_default_user,
)

POLICIES = [maxmemory_headroom, sentinel_quorum, replica_auth, tls_required, default_user_disabled]
