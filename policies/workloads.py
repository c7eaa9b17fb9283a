"""Reading Kubernetes objects the way the rules need them: pod specs, containers, labels, selectors.

Inputs reach the pack with their wire (camelCase) names and, in the analyzer, wrapped in
``pulumi_policy``'s unknown-checking proxies (``Mapping``/``Sequence``, not ``dict``/``list``), so
everything here goes through ``Mapping``/``Sequence`` and never assumes a concrete type.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from policies.pack_config import (
    CACHE_TIER,
    COMPONENT_LABEL,
    MAIN_CONTAINERS,
    NAME_LABEL,
    REDIS_APP,
    SENTINEL_COMPONENT,
    SERVER_APPS,
    SERVER_COMPONENT,
    TIER_LABEL,
    as_list,
    as_map,
)

# Kinds that carry a pod template, and where it sits.
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
WORKLOAD_KINDS = {"Pod", "CronJob", *POD_TEMPLATE_KINDS}


def kind(props: Mapping[str, Any]) -> str:
    return str(props.get("kind") or "")


def metadata(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_map(props.get("metadata"))


def namespace(props: Mapping[str, Any]) -> str:
    """The object's namespace; objects without one land in ``default``."""
    return str(metadata(props).get("namespace") or "default")


def object_name(props: Mapping[str, Any]) -> str:
    return str(metadata(props).get("name") or "")


def pod_template(props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``{metadata, spec}`` of the pods a workload runs, or None for other objects."""
    k = kind(props)
    spec = as_map(props.get("spec"))
    if k == "Pod":
        return {"metadata": metadata(props), "spec": spec}
    if k in POD_TEMPLATE_KINDS:
        return as_map(spec.get("template"))
    if k == "CronJob":
        return as_map(as_map(as_map(spec.get("jobTemplate")).get("spec")).get("template"))
    return None


def pod_spec(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_map(as_map(pod_template(props)).get("spec"))


def pod_labels(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_map(as_map(as_map(pod_template(props)).get("metadata")).get("labels"))


@dataclass(frozen=True)
class Container:
    """One container of a pod spec, with where it sits (``containers`` or ``initContainers``)."""

    field: str
    spec: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or "?")


def containers(props: Mapping[str, Any]) -> Iterator[Container]:
    """Every container and init container (sidecars included) of a workload."""
    spec = pod_spec(props)
    for field in ("initContainers", "containers"):
        for item in as_list(spec.get(field)):
            yield Container(field, as_map(item))


def redis_role(props: Mapping[str, Any]) -> str | None:
    """``server`` or ``sentinel`` for the cache layer's workloads, None for anything else.

    Read from the labels the program puts on its workloads: the cache tier's data pods and the
    Sentinels are ``app.kubernetes.io/name: redis``, the state tier's data pods ``redis-state``
    (both tiers ``component: server``). A workload without them is recognised by a main container
    named ``redis`` or ``sentinel``.
    """
    if kind(props) not in WORKLOAD_KINDS:
        return None
    labels = {**as_map(metadata(props).get("labels")), **pod_labels(props)}
    name, component = labels.get(NAME_LABEL), labels.get(COMPONENT_LABEL)
    if name == REDIS_APP and component in MAIN_CONTAINERS:
        return str(component)
    if name in SERVER_APPS and component == SERVER_COMPONENT:
        return SERVER_COMPONENT
    names = {c.name for c in containers(props) if c.field == "containers"}
    if MAIN_CONTAINERS[SENTINEL_COMPONENT] in names:
        return SENTINEL_COMPONENT
    if MAIN_CONTAINERS[SERVER_COMPONENT] in names:
        return SERVER_COMPONENT
    return None


def tier(props: Mapping[str, Any]) -> str | None:
    """The tier a Redis data workload serves (its pods' ``dict.lbpay.com.br/tier`` label: ``cache``
    or ``state``), None for anything that is not a data workload. A data workload without the
    label is the cache tier, the one that evicts."""
    if redis_role(props) != SERVER_COMPONENT:
        return None
    return str(pod_labels(props).get(TIER_LABEL) or CACHE_TIER)


def main_container(props: Mapping[str, Any], role: str) -> Container | None:
    """The Redis or Sentinel process's container (exporter sidecars are not it)."""
    wanted = MAIN_CONTAINERS[role]
    return next((c for c in containers(props) if c.field == "containers" and c.name == wanted), None)


def selector_matches(selector: Any, labels: Mapping[str, Any]) -> bool:
    """Whether a Kubernetes label selector (matchLabels + matchExpressions) selects ``labels``.

    An empty selector selects everything, as it does for NetworkPolicy and PDB selectors.
    """
    selector = as_map(selector)
    for key, value in as_map(selector.get("matchLabels")).items():
        if labels.get(key) != value:
            return False
    for expression in as_list(selector.get("matchExpressions")):
        expression = as_map(expression)
        key, operator = expression.get("key"), expression.get("operator")
        values = [str(v) for v in as_list(expression.get("values"))]
        present = key in labels
        if operator == "In" and not (present and str(labels[key]) in values):
            return False
        if operator == "NotIn" and present and str(labels[key]) in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def mounted_names(props: Mapping[str, Any], source: str) -> set[str]:
    """Names of the ConfigMaps (``configMap``) or Secrets (``secret``) a workload's pods mount,
    including projected volumes."""
    key = "name" if source == "configMap" else "secretName"
    names: set[str] = set()
    for volume in as_list(pod_spec(props).get("volumes")):
        volume = as_map(volume)
        if source in volume:
            name = as_map(volume[source]).get(key)
            if name:
                names.add(str(name))
        for projected in as_list(as_map(volume.get("projected")).get("sources")):
            name = as_map(as_map(projected).get(source)).get("name")
            if name:
                names.add(str(name))
    return names


def secret_refs(props: Mapping[str, Any]) -> set[str]:
    """Every Secret a workload uses: mounted, in ``env`` (``secretKeyRef``) or ``envFrom``."""
    names = mounted_names(props, "secret")
    for container in containers(props):
        for env in as_list(container.spec.get("env")):
            ref = as_map(as_map(as_map(env).get("valueFrom")).get("secretKeyRef")).get("name")
            if ref:
                names.add(str(ref))
        for env_from in as_list(container.spec.get("envFrom")):
            ref = as_map(as_map(env_from).get("secretRef")).get("name")
            if ref:
                names.add(str(ref))
    return names


def command_line(container: Container) -> list[str]:
    return [str(part) for part in as_list(container.spec.get("command")) + as_list(container.spec.get("args"))]


def mounted_volumes(props: Mapping[str, Any], container: Container) -> list[Mapping[str, Any]]:
    """The pod volumes one container mounts (a Secret in the pod is no use to a container that
    does not mount it)."""
    names = {str(as_map(m).get("name")) for m in as_list(container.spec.get("volumeMounts"))}
    return [as_map(v) for v in as_list(pod_spec(props).get("volumes")) if str(as_map(v).get("name")) in names]


def volume_secrets(volume: Mapping[str, Any]) -> set[str]:
    """The Secrets a volume holds: a ``secret`` volume, or the Secrets of a projected one."""
    names = set()
    name = as_map(volume.get("secret")).get("secretName")
    if name:
        names.add(str(name))
    for projected in as_list(as_map(volume.get("projected")).get("sources")):
        name = as_map(as_map(projected).get("secret")).get("name")
        if name:
            names.add(str(name))
    return names


def env_value(container: Container, name: str) -> str | None:
    """A plain ``env`` value of the container (None when it is unset or comes from elsewhere)."""
    for env in as_list(container.spec.get("env")):
        env = as_map(env)
        if env.get("name") == name and "value" in env:
            return str(env.get("value"))
    return None
