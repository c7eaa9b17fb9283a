"""Kubernetes rules: containers, pods, images, disruption budgets, network isolation, Services.

Resource policies look at one object at a time; the stack policies at the end need several
(a StatefulSet and its PodDisruptionBudget, a namespace and its NetworkPolicies, a Service and the
Redis pods it would select). Every container counts, sidecars and init containers included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies import workloads as w
from policies.config_text import LEAD, SENTINEL_PREFIX, WORD, without_comments
from policies.pack_config import SERVER_COMPONENT, as_list, as_map, describe, option, schema

MANDATORY = EnforcementLevel.MANDATORY


def _k8s(args: ResourceValidationArgs) -> Mapping[str, Any] | None:
    return args.props if args.resource_type.startswith("kubernetes:") else None


def _where(args: ResourceValidationArgs, container: w.Container) -> str:
    field = "init container" if container.field == "initContainers" else "container"
    return f'{describe(args.resource_type, args.props, args.name)}, {field} "{container.name}"'


# --- requests and limits ----------------------------------------------------------------------


def _validate_resources(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = _k8s(args)
    if props is None:
        return
    for container in w.containers(props):
        res = as_map(container.spec.get("resources"))
        missing = [
            f"resources.{part}.{name}"
            for part in ("requests", "limits")
            for name in ("cpu", "memory")
            if not as_map(res.get(part)).get(name)
        ]
        if missing:
            report(
                f"{_where(args, container)} has no {', '.join(missing)}. Set requests and limits for cpu "
                "and memory on every container (sidecars too), so the scheduler reserves room for it "
                "and a runaway process cannot starve Redis or get the node's other pods evicted."
            )


container_resources = ResourceValidationPolicy(
    name="k8s-container-resources",
    description="Every container has CPU and memory requests and limits.",
    enforcement_level=MANDATORY,
    validate=_validate_resources,
)


# --- securityContext hardening ----------------------------------------------------------------

_SECCOMP_OK = {"RuntimeDefault", "Localhost"}


def _validate_security_context(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = _k8s(args)
    if props is None:
        return
    pod = as_map(w.pod_spec(props).get("securityContext"))
    for container in w.containers(props):
        sc = as_map(container.spec.get("securityContext"))

        def effective(key: str, sc: Mapping[str, Any] = sc) -> Any:
            return sc[key] if key in sc else pod.get(key)

        problems = []
        if effective("runAsNonRoot") is not True:
            problems.append("runAsNonRoot: true (container or pod)")
        if effective("runAsUser") in (0, 0.0):
            problems.append("a runAsUser other than 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append("allowPrivilegeEscalation: false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append("readOnlyRootFilesystem: true (mount emptyDir volumes where it must write)")
        if sc.get("privileged") is True:
            problems.append("privileged: false")
        capabilities = as_map(sc.get("capabilities"))
        if "ALL" not in [str(c) for c in as_list(capabilities.get("drop"))]:
            problems.append("capabilities.drop: [ALL]")
        added = [str(c) for c in as_list(capabilities.get("add")) if str(c) != "NET_BIND_SERVICE"]
        if added:
            problems.append(f"no capabilities.add (has {', '.join(added)})")
        seccomp = as_map(effective("seccompProfile")).get("type")
        if seccomp not in _SECCOMP_OK:
            problems.append("seccompProfile.type: RuntimeDefault (container or pod)")
        if problems:
            report(
                f"{_where(args, container)} is not hardened: its securityContext needs "
                f"{'; '.join(problems)}. Set these on the container's securityContext "
                "(runAsNonRoot and seccompProfile may come from the pod's)."
            )


container_security_context = ResourceValidationPolicy(
    name="k8s-container-security-context",
    description=(
        "Containers run as non-root with a read-only root filesystem, no privilege escalation, "
        "all capabilities dropped and a seccomp profile."
    ),
    enforcement_level=MANDATORY,
    validate=_validate_security_context,
)


# --- probes on the Redis and Sentinel containers ----------------------------------------------


def _validate_probes(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = _k8s(args)
    role = w.redis_role(props) if props is not None else None
    if role is None:
        return
    what = describe(args.resource_type, props, args.name)
    main = w.main_container(props, role)
    if main is None:
        report(
            f"{what} runs the Redis {role} but has no container named "
            f'"{w.MAIN_CONTAINERS[role]}" to carry its probes. Name the main container '
            f'"{w.MAIN_CONTAINERS[role]}" and give it liveness and readiness probes.'
        )
        return
    missing = [probe for probe in ("livenessProbe", "readinessProbe") if not main.spec.get(probe)]
    if missing:
        report(
            f'{what}, container "{main.name}" has no {" and no ".join(missing)}. Add them (an exec probe '
            "running redis-cli PING with the password from a file, never on the command line), so a "
            "hung process is restarted and a syncing replica or lost Sentinel gets no traffic."
        )


redis_probes = ResourceValidationPolicy(
    name="k8s-redis-probes",
    description="The Redis and Sentinel containers have liveness and readiness probes.",
    enforcement_level=MANDATORY,
    validate=_validate_probes,
)


# --- pinned images ----------------------------------------------------------------------------

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_FULL_VERSION = re.compile(r"\d+\.\d+\.\d+")
_IMAGE_SCHEMA = schema(
    {"requireDigest": {"type": "boolean", "default": False, "description": "refuse images without @sha256:"}}
)


def image_problem(image: str, require_digest: bool) -> str | None:
    """Why an image reference is not pinned, or None when it is."""
    if _DIGEST.search(image):
        return None
    if require_digest:
        return "has no @sha256: digest, which this stack's policy config requires"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    if not tag:
        return "has no tag, so it pulls 'latest'"
    if tag == "latest":
        return "uses the 'latest' tag"
    if not _FULL_VERSION.search(tag):
        return f"uses the floating tag '{tag}', which moves to new releases"
    return None


def _validate_images(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = _k8s(args)
    if props is None:
        return
    require_digest = option(args, _IMAGE_SCHEMA, "requireDigest") is True
    for container in w.containers(props):
        image = str(container.spec.get("image") or "")
        problem = image_problem(image, require_digest) if image else "has no image"
        if problem:
            report(
                f"{_where(args, container)}: image {image!r} {problem}. Pin it to a full version tag "
                "(e.g. valkey/valkey:8.0.1-alpine) or to a digest (name@sha256:<64 hex>) so every pod runs "
                "the same bits."
            )


image_pinned = ResourceValidationPolicy(
    name="k8s-image-pinned",
    description="Container images are pinned: no 'latest' or floating tag; a digest where configured.",
    enforcement_level=MANDATORY,
    config_schema=_IMAGE_SCHEMA,
    validate=_validate_images,
)


# --- anti-affinity or topology spread for Redis and Sentinel ----------------------------------


def _spreads(props: Mapping[str, Any]) -> bool:
    labels = w.pod_labels(props)
    spec = w.pod_spec(props)
    anti = as_map(as_map(spec.get("affinity")).get("podAntiAffinity"))
    terms = list(as_list(anti.get("requiredDuringSchedulingIgnoredDuringExecution")))
    terms += [
        as_map(t).get("podAffinityTerm") for t in as_list(anti.get("preferredDuringSchedulingIgnoredDuringExecution"))
    ]
    terms += list(as_list(spec.get("topologySpreadConstraints")))
    return any(
        as_map(term).get("topologyKey")
        and as_map(term).get("labelSelector") is not None
        and w.selector_matches(as_map(term).get("labelSelector"), labels)
        for term in terms
    )


def _validate_spread(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = _k8s(args)
    if props is None or w.kind(props) not in {"StatefulSet", "Deployment"} or w.redis_role(props) is None:
        return
    if not _spreads(props):
        report(
            f"{describe(args.resource_type, props, args.name)} has neither pod anti-affinity nor a "
            "topology spread constraint selecting its own pods, so the scheduler may put several "
            "of them on one node and a single node failure takes out a majority. Add a "
            "podAntiAffinity term on kubernetes.io/hostname (required in prod) and/or a "
            "topologySpreadConstraint over topology.kubernetes.io/zone, with a labelSelector "
            "matching the pod labels."
        )


redis_pod_spread = ResourceValidationPolicy(
    name="k8s-redis-pod-spread",
    description="Redis and Sentinel pods are spread by anti-affinity or topology spread constraints.",
    enforcement_level=MANDATORY,
    validate=_validate_spread,
)


# --- no secret in a ConfigMap -----------------------------------------------------------------

# A password setting with a literal value, where a setting takes effect (policies/config_text.py):
# prose ("masterauth applied on ...") and grep patterns ('^sentinel auth-pass ') are not settings.
# A value that is a placeholder ($VAR, %s, @NAME@, <...>, {{ }}) is how our scripts write the
# password at start: fine. A value may be quoted (requirepass "...").
_SECRET_DIRECTIVES = [
    re.compile(rf"""{LEAD}{SENTINEL_PREFIX}(requirepass|masterauth|sentinel-pass)[ \t]+["']?({WORD})""", re.I | re.M),
    re.compile(rf"""{LEAD}{SENTINEL_PREFIX}(auth-pass)[ \t]+{WORD}[ \t]+["']?({WORD})""", re.I | re.M),
    re.compile(rf"""{LEAD}(user)[ \t]+{WORD}[^\n'"]*?[ \t]>({WORD})""", re.I | re.M),
    re.compile(rf"""\b(acl[ \t]+setuser)[ \t]+{WORD}[^\n'"]*?[ \t]["']?>({WORD})""", re.I | re.M),
    re.compile(
        r"""\b(password|passwd|secret|token|api[_-]?key|access[_-]?key)["']?[ \t]*[=:][ \t]*["']?([^\s'",}\\]+)""",
        re.IGNORECASE,
    ),
]
_SECRET_SHAPES = re.compile(
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----|aws_secret_access_key", re.IGNORECASE
)
_SECRET_KEY_NAME = re.compile(r"password|passwd|secret|token|credential|api[_-]?key|private[_-]?key", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"^(?:[$%@<{`(]|\*+$|(?:true|false|null|none|yes|no)$)", re.IGNORECASE)


def secret_findings(key: str, text: str) -> list[str]:
    """What in one ConfigMap entry looks like a secret (the finding, never the value itself)."""
    found = []
    if _SECRET_KEY_NAME.search(key) and text.strip():
        found.append(f"key {key!r} is named like a secret")
    # Commented-out lines are prose ("masterauth read from the Secret"), not settings.
    settings = without_comments(text)
    for pattern in _SECRET_DIRECTIVES:
        for match in pattern.finditer(settings):
            if not _PLACEHOLDER.match(match.group(2)):
                found.append(f"{key!r} sets {match.group(1)} to a literal value")
    if _SECRET_SHAPES.search(text):
        found.append(f"{key!r} holds an AWS key or private key")
    return found


def _validate_configmap(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = _k8s(args)
    if props is None or w.kind(props) != "ConfigMap":
        return
    findings: list[str] = []
    for key, value in as_map(props.get("data")).items():
        findings += secret_findings(str(key), str(value or ""))
    for key in as_map(props.get("binaryData")):
        if _SECRET_KEY_NAME.search(str(key)):
            findings.append(f"binary key {key!r} is named like a secret")
    if findings:
        report(
            f"{describe(args.resource_type, props, args.name)} looks like it carries a secret: "
            f"{'; '.join(findings)}. ConfigMaps are readable by anyone who can read the namespace "
            "and end up in logs and diffs: put the value in a Secret, mount it as a file, and have "
            "the start script write it into the config (requirepass/masterauth/auth-pass) at start."
        )


configmap_no_secrets = ResourceValidationPolicy(
    name="k8s-configmap-no-secrets",
    description="No ConfigMap carries a password (requirepass, masterauth, auth-pass) or anything secret-looking.",
    enforcement_level=MANDATORY,
    validate=_validate_configmap,
)


# --- stack policies ---------------------------------------------------------------------------


def kubernetes_objects(args: StackValidationArgs, *kinds: str) -> list[Any]:
    """The stack's Kubernetes resources of the given kinds (all kinds when none are named)."""
    return [
        r
        for r in args.resources
        if r.resource_type.startswith("kubernetes:") and (not kinds or w.kind(r.props) in kinds)
    ]


def _validate_pdbs(args: StackValidationArgs, report: ReportViolation) -> None:
    pdbs = kubernetes_objects(args, "PodDisruptionBudget")
    for sts in kubernetes_objects(args, "StatefulSet"):
        labels = w.pod_labels(sts.props)
        ns = w.namespace(sts.props)
        covered = any(
            w.namespace(p.props) == ns and w.selector_matches(as_map(p.props.get("spec")).get("selector"), labels)
            for p in pdbs
        )
        if not covered:
            report(
                f"{describe(sts.resource_type, sts.props, sts.name)} has no PodDisruptionBudget selecting its "
                "pods, so a node drain may evict several at once and take the quorum or every replica "
                "with it. Add a PodDisruptionBudget in the same namespace with maxUnavailable: 1 and "
                "the StatefulSet's selector labels.",
                sts.urn,
            )


statefulset_disruption_budget = StackValidationPolicy(
    name="k8s-statefulset-disruption-budget",
    description="Every StatefulSet has a PodDisruptionBudget selecting its pods.",
    enforcement_level=MANDATORY,
    validate=_validate_pdbs,
)


def _validate_network_policies(args: StackValidationArgs, report: ReportViolation) -> None:
    policies = kubernetes_objects(args, "NetworkPolicy")
    for workload in kubernetes_objects(args, *w.WORKLOAD_KINDS):
        ns = w.namespace(workload.props)
        here = [p for p in policies if w.namespace(p.props) == ns]
        what = describe(workload.resource_type, workload.props, workload.name)
        if not here:
            report(
                f"{what}: namespace {ns!r} has no NetworkPolicy, so every pod in the cluster can reach "
                "these pods. Add a NetworkPolicy in the namespace that admits only the clients and "
                "peers that need each port.",
                workload.urn,
            )
            continue
        labels = w.pod_labels(workload.props)
        if not any(w.selector_matches(as_map(p.props.get("spec")).get("podSelector"), labels) for p in here):
            report(
                f"{what}: no NetworkPolicy in namespace {ns!r} selects its pods (labels "
                f"{dict(labels)}), so they accept traffic from anywhere. Give the pods a label that an "
                "existing policy's podSelector matches, or add a policy for them.",
                workload.urn,
            )


namespace_network_policy = StackValidationPolicy(
    name="k8s-namespace-network-policy",
    description="Every workload's namespace has a NetworkPolicy, and one selects the workload's pods.",
    enforcement_level=MANDATORY,
    validate=_validate_network_policies,
)

# A selector naming one pod of a StatefulSet routes to that pod only.
_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"


def _validate_services(args: StackValidationArgs, report: ReportViolation) -> None:
    servers = [r for r in kubernetes_objects(args, *w.WORKLOAD_KINDS) if w.redis_role(r.props) == SERVER_COMPONENT]
    for service in kubernetes_objects(args, "Service"):
        spec = as_map(service.props.get("spec"))
        selector = as_map(spec.get("selector"))
        if not selector or spec.get("clusterIP") == "None" or _POD_NAME_LABEL in selector:
            continue
        ns = w.namespace(service.props)
        for server in servers:
            if w.namespace(server.props) == ns and w.selector_matches(
                {"matchLabels": selector}, w.pod_labels(server.props)
            ):
                report(
                    f"{describe(service.resource_type, service.props, service.name)} load-balances over every "
                    f"Redis pod of {describe(server.resource_type, server.props, server.name)}: writes sent "
                    "through it land on replicas and fail with READONLY. Remove it and let clients ask "
                    "Sentinel for the master (or make it headless, clusterIP: None, for pod DNS names only).",
                    service.urn,
                )


no_service_over_all_redis_pods = StackValidationPolicy(
    name="k8s-no-service-over-all-redis-pods",
    description="No load-balancing Service routes to every Redis pod (writes would reach replicas).",
    enforcement_level=MANDATORY,
    validate=_validate_services,
)

POLICIES = [
    container_resources,
    container_security_context,
    redis_probes,
    image_pinned,
    redis_pod_spread,
    configmap_no_secrets,
    statefulset_disruption_budget,
    namespace_network_policy,
    no_service_over_all_redis_pods,
]
