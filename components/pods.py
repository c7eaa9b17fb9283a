"""Pod-spec fragments shared by the Redis and Sentinel StatefulSets (plain dicts, no resources).

Hardening, probes and spreading are decided once here so both workloads get the same treatment.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from components.settings import AntiAffinity, Probe, Resources, Settings
from components.topology import RUN_AS_USER

HOSTNAME_KEY = "kubernetes.io/hostname"
ZONE_KEY = "topology.kubernetes.io/zone"


def pod_security_context() -> dict[str, Any]:
    """Non-root with a high UID; fsGroup makes the data volume writable for that user."""
    return {
        "run_as_non_root": True,
        "run_as_user": RUN_AS_USER,
        "run_as_group": RUN_AS_USER,
        "fs_group": RUN_AS_USER,
        "fs_group_change_policy": "OnRootMismatch",
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "run_as_non_root": True,
        "run_as_user": RUN_AS_USER,
        "run_as_group": RUN_AS_USER,
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def resources(res: Resources) -> dict[str, Any]:
    return {
        "requests": {"cpu": res.requests.cpu, "memory": res.requests.memory},
        "limits": {"cpu": res.limits.cpu, "memory": res.limits.memory},
    }


def exec_probe(script: str, mode: str, probe: Probe) -> dict[str, Any]:
    """A probe running one of our probe scripts; redis-cli gets 1 s less than the kubelet allows."""
    cli_timeout = max(1, probe.timeout_seconds - 1)
    return {
        "exec": {"command": ["sh", script, mode, str(cli_timeout)]},
        "initial_delay_seconds": probe.initial_delay_seconds,
        "period_seconds": probe.period_seconds,
        "timeout_seconds": probe.timeout_seconds,
        "failure_threshold": probe.failure_threshold,
        "success_threshold": 1,
    }


def spread(labels: dict[str, str], anti_affinity: AntiAffinity) -> dict[str, Any]:
    """Affinity and topology spread: one pod per node, and pods spread evenly over zones.

    ``required`` refuses to put two pods of the set on one node (production: losing a node must
    not take a majority); ``preferred`` lets a small dev cluster schedule them anyway.
    """
    term = {"label_selector": {"match_labels": labels}, "topology_key": HOSTNAME_KEY}
    if anti_affinity == "required":
        affinity = {"pod_anti_affinity": {"required_during_scheduling_ignored_during_execution": [term]}}
    else:
        affinity = {
            "pod_anti_affinity": {
                "preferred_during_scheduling_ignored_during_execution": [{"weight": 100, "pod_affinity_term": term}]
            }
        }
    return {
        "affinity": affinity,
        "topology_spread_constraints": [
            {
                "max_skew": 1,
                "topology_key": ZONE_KEY,
                "when_unsatisfiable": "ScheduleAnyway",
                "label_selector": {"match_labels": labels},
            }
        ],
    }


def config_checksum(data: dict[str, str]) -> str:
    """Pod-template annotation value that changes whenever the mounted config does, so a config
    change rolls the pods instead of waiting for their next restart."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def tls_volumes(settings: Settings, secret_name: Any) -> list[dict[str, Any]]:
    """The certificate volume when TLS is on (cert-manager's Secret: tls.crt, tls.key, ca.crt)."""
    if not settings.tls.enabled:
        return []
    if secret_name is None:
        raise ValueError("tls.enabled is true but no certificate Secret was given to the component")
    return [{"name": "tls", "secret": {"secret_name": secret_name, "default_mode": 0o440}}]
