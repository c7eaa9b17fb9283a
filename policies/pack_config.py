"""Per-policy configuration with defaults, and the names violation messages give resources.

The Pulumi engine applies a policy's config-schema defaults before it calls the pack, but the
Python analyzer does not (``make policy`` and the tests talk to it directly), so every policy reads
its settings through :func:`option`, which falls back to the same defaults the schema declares.
Numbers arrive as floats through protobuf (``30.0``), hence :func:`whole`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import EnforcementLevel, PolicyConfigSchema

# Facts the pack shares with the program (components/topology.py); tests keep them equal.
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
REDIS_APP = "redis"
# The state tier's data pods (issue 13): their own name, the same ``server`` component.
STATE_APP = "redis-state"
SERVER_APPS = (REDIS_APP, STATE_APP)
# Which tier a data pod serves; a server without the label is the (evicting) cache tier.
TIER_LABEL = "dict.lbpay.com.br/tier"
CACHE_TIER = "cache"
STATE_TIER = "state"
# The scripts' Sentinel master name (common.sh), and the state tier's as a client reads it.
MASTER_NAME_VAR = "MASTER_NAME"
STATE_MASTER_NAME_VAR = "STATE_MASTER_NAME"
SERVER_COMPONENT = "server"
SENTINEL_COMPONENT = "sentinel"
MAIN_CONTAINERS = {SERVER_COMPONENT: "redis", SENTINEL_COMPONENT: "sentinel"}
# The start scripts' TLS switch (common.sh): "yes" makes them write TLS-only settings.
TLS_SWITCH = "REDIS_TLS"


def schema(properties: dict[str, dict[str, Any]]) -> PolicyConfigSchema:
    """A config schema whose ``default`` values are also what :func:`option` falls back to."""
    return PolicyConfigSchema(properties=properties)


def option(args: Any, config_schema: PolicyConfigSchema, key: str) -> Any:
    """The configured value of ``key`` for this policy, or the schema's default."""
    configured = args.get_config() or {}
    if key in configured:
        return configured[key]
    return config_schema.properties[key].get("default")


def whole(value: Any) -> int | None:
    """An integer from config or inputs, which may arrive as a float (``30.0``) or a string."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def level(name: str) -> EnforcementLevel:
    return EnforcementLevel(name)


# --- how messages name resources --------------------------------------------------------------


def describe(resource_type: str, props: Mapping[str, Any], name: str) -> str:
    """``StatefulSet redis-dev/redis`` for a Kubernetes object, ``aws:s3/bucket:Bucket "backups"``
    otherwise: the name a reader finds in ``kubectl`` or in the Pulumi program."""
    if resource_type.startswith("kubernetes:"):
        kind = str(props.get("kind") or resource_type.rsplit(":", 1)[-1])
        meta = props.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        object_name = meta.get("name") or name
        namespace = meta.get("namespace")
        return f"{kind} {namespace}/{object_name}" if namespace else f"{kind} {object_name}"
    return f'{resource_type} "{name}"'


def as_list(value: Any) -> list[Any]:
    """A list from an input that may be absent, a proxy sequence or a single value."""
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def plain(value: Any) -> Any:
    """Proxies turned back into dicts and lists (e.g. to serialise a policy document)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [plain(v) for v in value]
    return value
