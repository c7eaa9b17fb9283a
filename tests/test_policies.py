"""The policy pack: every policy fires on a deliberately broken stack, with its level and a message
naming the resource, the problem and the fix; the real stacks pass; unknown values give an advisory.

Stacks are the real dev/prod renders (copied, then broken) plus synthetic AWS resources for the
backup bucket. Dev runs without TLS by design, which ``redis-tls-required`` reports, so the broken
stacks start from dev with TLS on (``dev_tls``, what prod runs: clean under every policy). All
are sent through the pack's analyzer the way ``make policy`` sends them (``GetAnalyzerInfo``,
``Configure``, ``Analyze`` per resource, ``AnalyzeStack``).
"""

from __future__ import annotations

import copy
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pulumi_policy
import pytest
import yaml
from pulumi_policy import PolicyCustomTimeouts, PolicyResource, PolicyResourceOptions, StackValidationArgs
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from components import topology
from components.settings import settings_from_config
from policies import analyze, aws, pack, pack_config
from policies import workloads as w
from smoke.local.render import Registered, Rendered
from tests.support import render_with

# --- building stacks ----------------------------------------------------------------------------


def _backup_part(r: Registered) -> bool:
    """The stack's own backup resources (components/backup.py): AWS, and the job's Kubernetes side."""
    return r.type.startswith("aws:") or "dict-redis:index:Backup" in r.urn


def stack(rendered: Rendered, with_backup: bool = True) -> list[Registered]:
    """A private copy of a render whose outputs are its inputs plus what the mock computed (ARNs).

    ``with_backup=False`` leaves out the stack's own backup resources, for tests that add the
    hand-made ones of ``backup_resources`` instead.
    """
    copies = []
    for r in analyze.analyzed(rendered.resources):
        if not with_backup and _backup_part(r):
            continue
        inputs = copy.deepcopy(r.inputs)
        computed = {k: v for k, v in (r.outputs or {}).items() if k not in r.inputs}
        copies.append(Registered(r.type, r.name, inputs, True, r.urn, r.id, {**inputs, **computed}))
    return copies


def make(type_: str, name: str, inputs: dict[str, Any]) -> Registered:
    return Registered(type_, name, inputs, True, f"urn:pulumi:test::dict-redis::{type_}::{name}", f"{name}-id", inputs)


def find(resources: list[Registered], kind: str, name: str) -> dict[str, Any]:
    for r in resources:
        if r.inputs.get("kind") == kind and r.inputs["metadata"]["name"] == name:
            return r.inputs
    raise KeyError(f"{kind} {name}")


def drop(resources: list[Registered], kind: str, name: str) -> list[Registered]:
    return [r for r in resources if not (r.inputs.get("kind") == kind and r.inputs["metadata"].get("name") == name)]


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def check(resources: list[Registered], config: dict[str, Any] | None = None) -> list[analyze.Violation]:
    return analyze.run_analyzer(analyze.in_process_pack(), resources, config or {})[1]


def only(violations: list[analyze.Violation], policy: str) -> list[analyze.Violation]:
    found = [v for v in violations if v.policy == policy]
    others = [v for v in violations if v.policy != policy]
    assert not others, f"unexpected violations besides {policy}: {others}"
    assert found, f"{policy} did not fire"
    return found


def rehearsed_lines_aside(violations: list[analyze.Violation]) -> list[analyze.Violation]:
    """Without redis-server-line-rehearsed, which an image of no named version (``redis:latest``,
    a bare digest) also trips (tests/test_server_lines.py tests that policy)."""
    return [v for v in violations if v.policy != "redis-server-line-rehearsed"]


EXPORTER = {
    "name": "exporter",
    "image": "oliver006/redis_exporter:v1.62.0",
    "ports": [{"name": "metrics", "containerPort": 9121}],
    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
    "securityContext": {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    },
}

# --- AWS: a backup bucket set up the way the backup issue asks for -------------------------------

NS = "redis-dev"
ROLE_ARN = "arn:aws:iam::123456789012:role/redis-backup"
TLS_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": ["arn:aws:s3:::dict-redis-backups", "arn:aws:s3:::dict-redis-backups/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ],
}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.example/id/ABC"},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {"oidc.eks.example/id/ABC:sub": f"system:serviceaccount:{NS}:redis-backup"}},
        }
    ],
}


def backup_resources(bucket_ref: str = "backups-id") -> list[Registered]:
    """Bucket + SSE (KMS) + versioning + public-access block + lifecycle + TLS policy + IRSA job."""
    hardened = copy.deepcopy(EXPORTER["securityContext"])
    job_container = {
        "name": "backup",
        "image": "redis:7.2.4-alpine",
        "resources": EXPORTER["resources"],
        "securityContext": hardened,
        "env": [{"name": "AWS_REGION", "value": "sa-east-1"}],
    }
    labels = {"app.kubernetes.io/part-of": "dict-redis", "app.kubernetes.io/component": "backup"}
    return [
        make("aws:s3/bucket:Bucket", "backups", {"bucket": "dict-redis-backups"}),
        make(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            "backups-sse",
            {
                "bucket": bucket_ref,
                "rules": [
                    {
                        "applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": "key-id"},
                        "bucketKeyEnabled": True,
                    }
                ],
            },
        ),
        make(
            "aws:s3/bucketVersioning:BucketVersioning",
            "backups-versioning",
            {"bucket": bucket_ref, "versioningConfiguration": {"status": "Enabled"}},
        ),
        make(
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            "backups-pab",
            {
                "bucket": bucket_ref,
                "blockPublicAcls": True,
                "blockPublicPolicy": True,
                "ignorePublicAcls": True,
                "restrictPublicBuckets": True,
            },
        ),
        make(
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
            "backups-lifecycle",
            {
                "bucket": bucket_ref,
                "rules": [
                    {
                        "id": "retention",
                        "status": "Enabled",
                        "filter": {"prefix": ""},
                        "expiration": {"days": 30.0},
                        "noncurrentVersionExpiration": {"noncurrentDays": 30.0},
                    }
                ],
            },
        ),
        make(
            "aws:s3/bucketPolicy:BucketPolicy", "backups-policy", {"bucket": bucket_ref, "policy": json.dumps(TLS_ONLY)}
        ),
        make("aws:iam/role:Role", "backup-role", {"name": "redis-backup", "assumeRolePolicy": json.dumps(TRUST)}),
        make(
            "kubernetes:core/v1:ServiceAccount",
            "backup-sa",
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "redis-backup", "namespace": NS, "annotations": {aws.ROLE_ANNOTATION: ROLE_ARN}},
            },
        ),
        make(
            "kubernetes:batch/v1:CronJob",
            "backup-cronjob",
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "redis-backup", "namespace": NS, "labels": labels},
                "spec": {
                    "schedule": "0 */6 * * *",
                    "jobTemplate": {
                        "spec": {
                            "template": {
                                "metadata": {"labels": labels},
                                "spec": {
                                    "serviceAccountName": "redis-backup",
                                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                                    "restartPolicy": "Never",
                                    "containers": [job_container],
                                },
                            }
                        }
                    },
                },
            },
        ),
    ]


def aws_stack(base: Rendered, **changes: Any) -> list[Registered]:
    return stack(base, with_backup=False) + backup_resources(**changes)


def by_name(resources: list[Registered], name: str) -> dict[str, Any]:
    return next(r.inputs for r in resources if r.name == name)


# --- the clean stacks ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_tls() -> Rendered:
    """The dev stack with TLS on, as prod runs it."""
    return render_with("dev", {"dict-redis:tls": json.dumps({"enabled": True})})


def test_prod_passes_every_policy(prod: Rendered) -> None:
    config = analyze.load_pack_config(analyze.CONFIG_DIR / "prod.json")
    assert check(stack(prod), config) == []


def test_dev_passes_every_policy_but_tls_which_its_pack_config_makes_advisory(dev: Rendered) -> None:
    config = analyze.load_pack_config(analyze.CONFIG_DIR / "dev.json")
    violations = check(stack(dev), config)
    assert {(v.policy, v.level) for v in violations} == {("redis-tls-required", "advisory")}
    assert sorted(v.message.split(" does not serve TLS only")[0] for v in violations) == [
        "StatefulSet redis-dev/redis",
        "StatefulSet redis-dev/redis-sentinel",
        "StatefulSet redis-dev/redis-state",
    ]
    assert all("REDIS_TLS defaults to 'no' in the scripts it runs" in v.message for v in violations)
    # Without the pack config (the pack's default level) dev's plain text would block.
    assert {v.level for v in check(stack(dev))} == {"mandatory"}


def test_dev_with_tls_passes_every_policy(dev_tls: Rendered) -> None:
    assert check(stack(dev_tls)) == []


def test_a_complete_backup_setup_passes(dev_tls: Rendered) -> None:
    assert check(aws_stack(dev_tls)) == []


def test_pack_has_every_policy_with_its_default_level() -> None:
    info = analyze.in_process_pack().GetAnalyzerInfo(analyze.empty_pb2.Empty())
    levels = {p.name: analyze.LEVEL_NAMES[p.enforcementLevel] for p in info.policies}
    assert len(levels) == len(pack.POLICIES) == 25
    assert levels.pop("aws-s3-noncurrent-version-expiration") == "advisory"
    assert levels.pop("redis-server-line-rehearsed") == "advisory"  # mandatory in prod's pack config
    assert set(levels.values()) == {"mandatory"}


def test_pack_shares_labels_and_container_names_with_the_program(dev: Rendered) -> None:
    topo = topology.Topology.of(settings_from_config({}, "dev"))
    for component, main in pack_config.MAIN_CONTAINERS.items():
        assert topo.labels(component)[pack_config.NAME_LABEL] == pack_config.REDIS_APP
        assert topo.labels(component)[pack_config.COMPONENT_LABEL] == component
        name = topo.redis if component == pack_config.SERVER_COMPONENT else topo.sentinel
        sts = dev.find("StatefulSet", name)
        # The main container comes first; sidecars (the exporter) follow it.
        assert sts["spec"]["template"]["spec"]["containers"][0]["name"] == main
    # The tiers: the state tier's pods are told apart by their name and tier labels.
    assert topology.TIER_LABEL == pack_config.TIER_LABEL
    cache, state = topo.tier("cache").pod_labels, topo.tier("state").pod_labels
    assert (cache[pack_config.NAME_LABEL], cache[pack_config.TIER_LABEL]) == (pack_config.REDIS_APP, "cache")
    assert (state[pack_config.NAME_LABEL], state[pack_config.TIER_LABEL]) == (pack_config.STATE_APP, "state")
    assert cache[pack_config.COMPONENT_LABEL] == state[pack_config.COMPONENT_LABEL] == pack_config.SERVER_COMPONENT
    assert (pack_config.CACHE_TIER, pack_config.STATE_TIER) == topology.TIERS


# --- Kubernetes ---------------------------------------------------------------------------------


def test_resources_fire_on_a_sidecar_and_on_a_missing_limit(dev_tls: Rendered) -> None:
    resources = stack(dev_tls)
    sts = find(resources, "StatefulSet", "redis")
    del container(sts, "redis")["resources"]["limits"]["memory"]
    sidecar = copy.deepcopy(EXPORTER)
    del sidecar["resources"]
    sts["spec"]["template"]["spec"]["containers"].append(sidecar)
    violations = [v for v in check(resources) if v.policy == "k8s-container-resources"]
    assert len(violations) == 2 and {v.level for v in violations} == {"mandatory"}
    messages = " ".join(v.message for v in violations)
    assert 'StatefulSet redis-dev/redis, container "redis" has no resources.limits.memory' in messages
    assert 'container "exporter" has no resources.requests.cpu, resources.requests.memory' in messages
    assert "Set requests and limits" in messages


def test_security_context_fires_on_a_sidecar_and_a_writable_root(dev_tls: Rendered) -> None:
    resources = stack(dev_tls)
    sts = find(resources, "StatefulSet", "redis-sentinel")
    container(sts, "sentinel")["securityContext"]["readOnlyRootFilesystem"] = False
    sts["spec"]["template"]["spec"]["containers"].append({**copy.deepcopy(EXPORTER), "securityContext": {}})
    violations = only(check(resources), "k8s-container-security-context")
    assert len(violations) == 2 and violations[0].level == "mandatory"
    sentinel = next(v for v in violations if '"sentinel"' in v.message)
    assert "StatefulSet redis-dev/redis-sentinel" in sentinel.message
    assert "readOnlyRootFilesystem: true" in sentinel.message and "capabilities" not in sentinel.message
    exporter = next(v for v in violations if '"exporter"' in v.message)
    for needed in ("allowPrivilegeEscalation: false", "capabilities.drop: [ALL]", "readOnlyRootFilesystem"):
        assert needed in exporter.message
    # The pod-level runAsNonRoot and seccompProfile count for the sidecar too.
    needs = exporter.message.split(" needs ")[1].split(". Set these")[0]
    assert "runAsNonRoot" not in needs and "seccompProfile" not in needs


def test_probes_are_required_on_the_main_containers_only(dev_tls: Rendered) -> None:
    resources = stack(dev_tls)
    sts = find(resources, "StatefulSet", "redis-sentinel")
    del container(sts, "sentinel")["readinessProbe"]
    sts["spec"]["template"]["spec"]["containers"].append(copy.deepcopy(EXPORTER))  # no probes: fine
    [violation] = only(check(resources), "k8s-redis-probes")
    assert violation.level == "mandatory"
    assert 'StatefulSet redis-dev/redis-sentinel, container "sentinel" has no readinessProbe' in violation.message
    assert "Add them" in violation.message


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("redis:latest", "uses the 'latest' tag"),
        ("redis", "has no tag"),
        ("registry.example:5000/redis", "has no tag"),
        ("redis:7.2", "uses the floating tag '7.2'"),
    ],
)
def test_unpinned_images_fire(dev_tls: Rendered, image: str, problem: str) -> None:
    resources = stack(dev_tls)
    container(find(resources, "StatefulSet", "redis"), "redis")["image"] = image
    [violation] = only(rehearsed_lines_aside(check(resources)), "k8s-image-pinned")
    assert violation.level == "mandatory"
    assert f'StatefulSet redis-dev/redis, container "redis": image {image!r} {problem}' in violation.message
    assert "Pin it to a full version tag" in violation.message


def test_digest_required_where_configured(dev_tls: Rendered) -> None:
    resources = stack(dev_tls)
    digest = "redis@sha256:" + "a" * 64
    container(find(resources, "StatefulSet", "redis"), "redis")["image"] = digest
    violations = only(
        rehearsed_lines_aside(check(resources, {"k8s-image-pinned": {"requireDigest": True}})), "k8s-image-pinned"
    )
    assert all("has no @sha256: digest" in v.message for v in violations)
    named = [v.message.split(":")[0] for v in violations]
    assert 'StatefulSet redis-dev/redis, container "redis"' not in named  # the digest-pinned container passes
    assert 'StatefulSet redis-dev/redis, container "exporter"' in named  # its sidecar does not
    assert 'StatefulSet redis-dev/redis-sentinel, container "sentinel"' in named
    assert any(n.startswith("Job redis-dev/redis-smoke-") for n in named)


def test_spread_fires_without_anti_affinity_or_topology_spread(dev_tls: Rendered) -> None:
    resources = stack(dev_tls)
    spec = find(resources, "StatefulSet", "redis")["spec"]["template"]["spec"]
    del spec["affinity"], spec["topologySpreadConstraints"]
    [violation] = only(check(resources, {"k8s-redis-pod-spread": "mandatory"}), "k8s-redis-pod-spread")
    assert "StatefulSet redis-dev/redis has neither pod anti-affinity nor a topology spread" in violation.message
    assert "podAntiAffinity term on kubernetes.io/hostname" in violation.message
    # dev's pack config makes it advisory: reported, not blocking.
    dev_config = analyze.load_pack_config(analyze.CONFIG_DIR / "dev.json")
    [advisory] = only(check(resources, dev_config), "k8s-redis-pod-spread")
    assert advisory.level == "advisory"


@pytest.mark.parametrize(
    ("key", "text", "finding"),
    [
        (
            "redis.conf",
            "requirepass s3cr3t-Value-123\n",
            "'redis.conf' sets requirepass to a literal value",
        ),
        ("redis.conf", "masterauth s3cr3t-Value-123\n", "'redis.conf' sets masterauth"),
        ("sentinel.conf", "sentinel auth-pass mymaster s3cr3t-Value-123\n", "'sentinel.conf' sets auth-pass"),
        ("acl.conf", "user app on ~* +@all >s3cr3t-Value-123\n", "'acl.conf' sets user"),
        ("app.env", 'PASSWORD="s3cr3t-Value-123"\n', "'app.env' sets PASSWORD"),
        ("redis-password", "s3cr3t-Value-123", "key 'redis-password' is named like a secret"),
        ("aws.ini", "[default]\nkey=AKIAABCDEFGHIJKLMNOP\n", "'aws.ini' holds an AWS key"),
    ],
)
def test_configmap_with_a_secret_fires(dev_tls: Rendered, key: str, text: str, finding: str) -> None:
    resources = stack(dev_tls)
    data = find(resources, "ConfigMap", "redis-config")["data"]
    data[key] = data.get(key, "") + text
    violations = check(resources)
    if text.startswith("requirepass"):  # a password for the default user, on a data node
        [default_user] = [v for v in violations if v.policy == "redis-default-user-disabled"]
        assert "set requirepass" in default_user.message and "s3cr3t-Value-123" not in default_user.message
        violations.remove(default_user)
    [violation] = only(violations, "k8s-configmap-no-secrets")
    assert violation.level == "mandatory"
    assert violation.message.startswith("ConfigMap redis-dev/redis-config looks like it carries a secret")
    assert finding in violation.message and "put the value in a Secret" in violation.message
    assert "s3cr3t-Value-123" not in violation.message and "AKIAABCDEFGHIJKLMNOP" not in violation.message


def test_configmap_placeholders_and_comments_are_not_secrets() -> None:
    from policies.kubernetes import secret_findings

    script = 'printf \'requirepass %s\\nmasterauth %s\\n\' "$REDISCLI_AUTH" "$REDISCLI_AUTH"\n'
    script += 'grep -v -e \'^requirepass \' "$conf"\npassword=$(cat "$file")\n# requirepass is written at start\n'
    assert secret_findings("start-redis.sh", script) == []


@pytest.mark.parametrize("key", ["start-sentinel.sh", "sync-acl.sh", "start-redis.sh"])
def test_the_stacks_own_scripts_are_not_secrets(dev: Rendered, prod: Rendered, key: str) -> None:
    """Their grep patterns ('^sentinel auth-pass ') and log lines ("masterauth applied on ...")
    name the settings without setting them."""
    from policies.kubernetes import secret_findings

    for rendered in (dev, prod):
        name = "redis-sentinel-config" if key == "start-sentinel.sh" else "redis-config"
        assert secret_findings(key, rendered.find("ConfigMap", name)["data"][key]) == []


@pytest.mark.parametrize(
    ("line", "setting"),
    [
        ("printf 'masterauth s3cr3t-Value-123\\n' >>\"$conf\"", "masterauth"),
        ("printf 'bind %s\\nrequirepass s3cr3t-Value-123\\n' \"$BIND\"", "requirepass"),
        ('echo "sentinel auth-pass mymaster s3cr3t-Value-123" >>"$conf"', "auth-pass"),
        ("printf 'sentinel sentinel-pass s3cr3t-Value-123\\n'", "sentinel-pass"),
        ('exec redis-server "$conf" --masterauth s3cr3t-Value-123', "masterauth"),
        ("redis_cli CONFIG SET masterauth s3cr3t-Value-123", "masterauth"),
        ("printf '%sCONFIG SET requirepass s3cr3t-Value-123\\n' \"$commands\"", "requirepass"),
        ('requirepass "s3cr3t-Value-123"', "requirepass"),
        ("redis_cli ACL SETUSER app on '>s3cr3t-Value-123'", "ACL SETUSER"),
        ("redis_cli ACL SETUSER app on >s3cr3t-Value-123", "ACL SETUSER"),
    ],
)
def test_literal_passwords_written_by_scripts_fire(line: str, setting: str) -> None:
    from policies.kubernetes import secret_findings

    findings = secret_findings("start.sh", f"set -eu\n{line}\n")
    assert findings == [f"'start.sh' sets {setting} to a literal value"]


def test_statefulset_without_pdb_fires(dev_tls: Rendered) -> None:
    resources = drop(stack(dev_tls), "PodDisruptionBudget", "redis-sentinel")
    [violation] = only(check(resources), "k8s-statefulset-disruption-budget")
    assert violation.level == "mandatory" and violation.resource.endswith("::sentinel-statefulset")
    assert "StatefulSet redis-dev/redis-sentinel has no PodDisruptionBudget" in violation.message
    assert "maxUnavailable: 1" in violation.message


def test_namespace_without_network_policy_fires(dev_tls: Rendered) -> None:
    resources = drop(stack(dev_tls, with_backup=False), "NetworkPolicy", "redis")
    resources = drop(resources, "NetworkPolicy", "redis-backup")
    violations = only(check(resources), "k8s-namespace-network-policy")
    assert len(violations) == 4  # the three StatefulSets (cache, state, Sentinel) and the smoke Job
    assert all("namespace 'redis-dev' has no NetworkPolicy" in v.message for v in violations)


def test_pods_no_network_policy_selects_fire(dev_tls: Rendered) -> None:
    resources = stack(dev_tls, with_backup=False) + backup_resources()
    del by_name(resources, "backup-cronjob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"][
        "app.kubernetes.io/part-of"
    ]
    [violation] = only(check(resources), "k8s-namespace-network-policy")
    assert (
        "CronJob redis-dev/redis-backup: no NetworkPolicy in namespace 'redis-dev' selects its pods"
        in violation.message
    )


def test_service_over_every_redis_pod_fires(dev_tls: Rendered) -> None:
    selector = dict(find(stack(dev_tls), "StatefulSet", "redis")["spec"]["selector"]["matchLabels"])
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis", "namespace": NS}}
    writes = make(
        "kubernetes:core/v1:Service", "writes", {**service, "spec": {"selector": selector, "ports": [{"port": 6379}]}}
    )
    [violation] = only(check([*stack(dev_tls), writes]), "k8s-no-service-over-all-redis-pods")
    assert violation.level == "mandatory"
    assert (
        "Service redis-dev/redis load-balances over every Redis pod of StatefulSet redis-dev/redis" in violation.message
    )
    assert "READONLY" in violation.message
    one_pod = {**selector, "statefulset.kubernetes.io/pod-name": "redis-0"}
    pinned = make("kubernetes:core/v1:Service", "pod0", {**service, "spec": {"selector": one_pod}})
    assert check([*stack(dev_tls), pinned]) == []


# --- Redis --------------------------------------------------------------------------------------


def _set_conf(resources: list[Registered], old: str, new: str) -> None:
    data = find(resources, "ConfigMap", "redis-config")["data"]
    assert old in data["redis.conf"]
    data["redis.conf"] = data["redis.conf"].replace(old, new)


def test_maxmemory_beyond_the_share_fires_only_with_persistence(dev_tls: Rendered) -> None:
    resources = stack(dev_tls)
    limit = 512 * 2**20
    _set_conf(resources, f"maxmemory {limit // 2}\n", f"maxmemory {int(limit * 0.8)}\n")
    [violation] = only(check(resources), "redis-maxmemory-headroom")
    assert violation.level == "mandatory"
    assert (
        f"StatefulSet redis-dev/redis: maxmemory {int(limit * 0.8)} is 80% of the container memory limit"
        in violation.message
    )
    assert f"at most 60% ({int(limit * 0.6)} bytes)" in violation.message
    assert check(resources, {"redis-maxmemory-headroom": {"maxMemoryShare": 0.9}}) == []
    _set_conf(resources, "appendonly yes", "appendonly no")
    _set_conf(resources, "save 900 1\nsave 300 10\nsave 60 10000", 'save ""')
    assert check(resources) == []


def test_missing_maxmemory_with_persistence_fires(dev_tls: Rendered) -> None:
    resources = stack(dev_tls)
    _set_conf(resources, f"maxmemory {256 * 2**20}\n", "")
    [violation] = only(check(resources), "redis-maxmemory-headroom")
    assert "persistence (RDB or AOF) but maxmemory is unset" in violation.message


def test_even_or_too_few_sentinels_and_a_minority_quorum_fire(dev_tls: Rendered) -> None:
    resources = stack(dev_tls)
    find(resources, "StatefulSet", "redis-sentinel")["spec"]["replicas"] = 4.0
    even, *quorums = only(check(resources), "redis-sentinel-quorum")
    assert "StatefulSet redis-dev/redis-sentinel runs 4 Sentinels: use an odd number of at least 3" in even.message
    # One monitor line per tier, each judged.
    assert [q.message.rsplit("the master ", 1)[1] for q in quorums] == ["'mymaster' down.", "'dictstate' down."]
    assert all("quorum 2 is not a majority of its 4 Sentinels; set it between 3 and 4" in q.message for q in quorums)
    resources = stack(dev_tls)
    _replace(
        resources, "redis-sentinel-config", "sentinel.conf", "@MASTER_PORT:dictstate@ 2", "@MASTER_PORT:dictstate@ 1"
    )
    [violation] = only(check(resources), "redis-sentinel-quorum")
    assert "quorum 1 is not a majority of its 3 Sentinels; set it between 2 and 3" in violation.message
    assert violation.message.endswith("declare the master 'dictstate' down.")


def test_redis_without_sentinels_fires(dev_tls: Rendered) -> None:
    resources = drop(stack(dev_tls), "StatefulSet", "redis-sentinel")
    violations = check(resources)
    quorum = sorted(v.message for v in violations if v.policy == "redis-sentinel-quorum")
    assert len(quorum) == 2  # each tier's StatefulSet
    assert quorum[0].startswith("StatefulSet redis-dev/redis has no Sentinels in the stack")
    assert quorum[1].startswith("StatefulSet redis-dev/redis-state has no Sentinels in the stack")


def _replace(resources: list[Registered], config_map: str, key: str, old: str, new: str) -> None:
    data = find(resources, "ConfigMap", config_map)["data"]
    assert old in data[key], f"{old!r} not in {key}"
    data[key] = data[key].replace(old, new)


def _unmount(resources: list[Registered], workload: str, container_name: str, volume: str) -> None:
    spec = find(resources, "StatefulSet", workload)["spec"]["template"]["spec"]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != volume]
    main = container(find(resources, "StatefulSet", workload), container_name)
    main["volumeMounts"] = [m for m in main["volumeMounts"] if m["name"] != volume]


REDIS_AUTH_LINE = (
    'printf \'aclfile %s\\nmasteruser %s\\nmasterauth %s\\n\' "$acl" "$REPLICATION_USER" "$replication_auth"'
)


@pytest.mark.parametrize(
    ("new_line", "unset"),
    [
        # The pre-ACL wiring: a password as the default user, which the ACL turns off.
        ('printf \'aclfile %s\\nmasterauth %s\\n\' "$acl" "$replication_auth"', "sets masteruser"),
        # sync-acl.sh (the rotation) still sets masterauth with CONFIG SET: it is not how a pod starts.
        ('printf \'aclfile %s\\nmasteruser %s\\n\' "$acl" "$REPLICATION_USER"', "sets masterauth"),
        ("printf 'aclfile %s\\n' \"$acl\"", "sets masteruser and masterauth"),
    ],
)
def test_replicas_not_logging_in_as_their_acl_user_fire(dev_tls: Rendered, new_line: str, unset: str) -> None:
    resources = stack(dev_tls)
    _replace(resources, "redis-config", "start-redis.sh", REDIS_AUTH_LINE, new_line)
    [violation] = only(check(resources), "redis-replica-auth")
    assert violation.level == "mandatory" and violation.resource.endswith("::redis-statefulset")
    assert (
        "StatefulSet redis-dev/redis: nothing in the config it starts from (its *.conf files, start script or "
        f"command line) {unset}, so its replicas cannot log in" in violation.message
    )
    assert "write 'masteruser' (the ACL user) and 'masterauth'" in violation.message


def test_sentinels_without_auth_user_or_a_password_file_fire(dev_tls: Rendered) -> None:
    # The grep pattern '^sentinel auth-user ' that strips old credentials stays: it sets nothing.
    resources = stack(dev_tls)
    _replace(
        resources,
        "redis-sentinel-config",
        "start-sentinel.sh",
        '        printf \'sentinel auth-user %s %s\\n\' "${_monitor%%=*}" "$SENTINEL_ACL_USER"\n',
        "",
    )
    [violation] = only(check(resources), "redis-replica-auth")
    assert "StatefulSet redis-dev/redis-sentinel: nothing in the config it starts from" in violation.message
    assert "sets sentinel auth-user, so its Sentinels cannot log in" in violation.message
    assert "write 'sentinel auth-user' (the ACL user) and 'sentinel auth-pass'" in violation.message
    # Without the password Secret mounted: the exporter's env reference and the certificate Secret
    # the container still mounts do not count.
    resources = stack(dev_tls)
    _unmount(resources, "redis-sentinel", "sentinel", "auth")
    [violation] = only(check(resources), "redis-replica-auth")
    assert (
        'StatefulSet redis-dev/redis-sentinel: its container "sentinel" mounts no Secret to read the password from'
        in violation.message
    )


# --- TLS only ---------------------------------------------------------------------------------


def test_tls_switched_off_on_the_container_fires(dev_tls: Rendered) -> None:
    resources = stack(dev_tls)
    container(find(resources, "StatefulSet", "redis"), "redis")["env"].append({"name": "REDIS_TLS", "value": "no"})
    [violation] = only(check(resources), "redis-tls-required")
    assert violation.level == "mandatory" and violation.resource.endswith("::redis-statefulset")
    assert violation.message.startswith(
        "StatefulSet redis-dev/redis does not serve TLS only: TLS is switched off (env REDIS_TLS='no' on its "
        "container), so its start script opens a plain-text port."
    )
    assert "Turn TLS on (stack setting tls.enabled: true)" in violation.message


@pytest.mark.parametrize(
    ("config_map", "key", "old", "new", "workload", "missing"),
    [
        (
            "redis-config",
            "start-redis.sh",
            "printf 'port 0\\ntls-port",
            "printf 'port %s\\ntls-port",
            "redis",
            "port 0",
        ),
        (
            "redis-sentinel-config",
            "start-sentinel.sh",
            "\\ntls-replication yes\\n",
            "\\ntls-replication no\\n",
            "redis-sentinel",
            "tls-replication yes",
        ),
        (
            "redis-sentinel-config",
            "start-sentinel.sh",
            "printf 'port 0\\ntls-port %s\\ntls-replication yes",
            "printf 'port %s\\ntls-replication yes",
            "redis-sentinel",
            "port 0, tls-port",
        ),
    ],
)
def test_tls_settings_missing_from_the_start_script_fire(
    dev_tls: Rendered, config_map: str, key: str, old: str, new: str, workload: str, missing: str
) -> None:
    resources = stack(dev_tls)
    _replace(resources, config_map, key, old, new)
    [violation] = only(check(resources), "redis-tls-required")
    assert (
        f"StatefulSet redis-dev/{workload} does not serve TLS only: nothing in the config it starts from sets "
        f"{missing}. Passwords" in violation.message
    )


def test_tls_without_a_certificate_fires(dev_tls: Rendered) -> None:
    resources = drop(stack(dev_tls), "Certificate", "redis-tls")
    violations = only(check(resources), "redis-tls-required")  # both tiers' data pods use it
    assert sorted(v.message.split(" does not serve TLS only: ")[0] for v in violations) == [
        "StatefulSet redis-dev/redis",
        "StatefulSet redis-dev/redis-state",
    ]
    assert all('its container "redis" mounts no certificate' in v.message for v in violations)
    resources = stack(dev_tls)
    _unmount(resources, "redis-sentinel", "sentinel", "tls")
    [violation] = only(check(resources), "redis-tls-required")
    assert 'StatefulSet redis-dev/redis-sentinel does not serve TLS only: its container "sentinel"' in violation.message


def test_tls_switch_is_the_one_the_scripts_read(dev: Rendered, prod: Rendered) -> None:
    for rendered, value in ((dev, "no"), (prod, "yes")):
        common = rendered.find("ConfigMap", "redis-config")["data"]["common.sh"]
        assert f': "${{{pack_config.TLS_SWITCH}:={value}}}"' in common
        assert f'if [ "${pack_config.TLS_SWITCH}" = yes ]' in common


# --- the default user -------------------------------------------------------------------------

DEFAULT_OFF = "user default off resetpass resetkeys resetchannels -@all"


@pytest.mark.parametrize(
    ("acl_line", "script_line", "problems"),
    [
        ("user default on resetpass resetkeys resetchannels -@all", "", ["leaves the default user on"]),
        # Later rules win: "off ... on" ends on.
        ("user default off resetpass nopass on ~* +@all", "", ["leaves the default user on"]),
        ("", "", ["has no 'user default' line, so Redis keeps its built-in default user"]),
        # default on with a password: requirepass written at start from the Secret.
        (
            "user default on resetpass",
            "printf 'requirepass %s\\n' \"$REDIS_AUTH\"\n",
            ["set requirepass, which gives the default user a password", "leaves the default user on"],
        ),
        (DEFAULT_OFF, 'redis-cli CONFIG SET requirepass "$REDIS_AUTH"\n', ["set requirepass"]),
    ],
)
def test_default_user_left_on_or_given_a_password_fires(
    dev_tls: Rendered, acl_line: str, script_line: str, problems: list[str]
) -> None:
    resources = stack(dev_tls)
    _replace(resources, "redis-config", "users.acl", DEFAULT_OFF + "\n", acl_line + "\n" if acl_line else "")
    if script_line:
        _replace(resources, "redis-config", "start-redis.sh", "\nload_password\n", "\nload_password\n" + script_line)
    [violation] = only(check(resources), "redis-default-user-disabled")
    assert violation.level == "mandatory" and violation.resource.endswith("::redis-statefulset")
    assert violation.message.startswith("StatefulSet redis-dev/redis: ")
    assert all(problem in violation.message for problem in problems)
    assert "Start the ACL file with 'user default off" in violation.message


def test_acl_rules_apply_left_to_right() -> None:
    from policies.config_text import acl_user_enabled, acl_user_rules

    assert acl_user_rules("user app on >x\nuser default off -@all\n", "default") == ["off -@all"]
    assert acl_user_rules("printf 'user default on nopass\\n'\nsentinel auth-user default x", "default") == [
        "on nopass"
    ]
    assert acl_user_enabled("off resetpass", enabled=True) is False
    assert acl_user_enabled("on reset", enabled=False) is False
    assert acl_user_enabled("reset on", enabled=False) is True
    assert acl_user_enabled("+@all", enabled=True) is True


# --- the state tier never evicts ----------------------------------------------------------------

STATE = "redis-state"
STATE_CONFIG = "redis-state-config"
TIER = pack_config.TIER_LABEL


@pytest.fixture(scope="module")
def tiers(dev_tls: Rendered) -> list[Registered]:
    """dev with TLS on, its cache and state tiers: clean under every policy (copy it to break it)."""
    return stack(dev_tls)


def _state_conf(resources: list[Registered], key: str, old: str, new: str) -> None:
    _replace(resources, STATE_CONFIG, key, old, new)


def test_the_pack_tells_the_tiers_apart(tiers: list[Registered]) -> None:
    state, cache = find(tiers, "StatefulSet", STATE), find(tiers, "StatefulSet", "redis")
    assert w.redis_role(state) == w.redis_role(cache) == "server"
    assert (w.tier(state), w.tier(cache)) == ("state", "cache")
    unlabelled = copy.deepcopy(state)
    del unlabelled["spec"]["template"]["metadata"]["labels"][TIER]
    assert w.tier(unlabelled) == "cache"  # a data workload without the label is the evicting cache
    assert w.tier(find(tiers, "StatefulSet", "redis-sentinel")) is None


def _state_violation(resources: list[Registered]) -> analyze.Violation:
    [violation] = only(check(resources), "redis-state-tier-never-evicts")
    assert violation.level == "mandatory"
    return violation


def test_a_stack_without_a_state_tier_fires(tiers: list[Registered]) -> None:
    resources = drop(copy.deepcopy(tiers), "StatefulSet", STATE)
    violation = _state_violation(resources)
    assert violation.resource.endswith("::redis-statefulset")
    assert violation.message.startswith(
        f"StatefulSet redis-dev/redis is a cache-tier Redis (its pods' {TIER} label is 'cache') and the stack "
        "has no state tier"
    )
    assert "decisions (completed idempotency records, rate-limit counters" in violation.message
    assert f"Add the state tier: a Redis StatefulSet of its own whose pods are labelled {TIER}: state" in (
        violation.message
    )


def _untier(value: Any) -> None:
    """Every ``tier: state`` label and selector term removed, in place."""
    if isinstance(value, dict):
        if value.get(TIER) == pack_config.STATE_TIER:
            del value[TIER]
        for item in value.values():
            _untier(item)
    elif isinstance(value, list):
        for item in value:
            _untier(item)


def test_state_pods_without_the_tier_label_count_as_cache(tiers: list[Registered]) -> None:
    resources = copy.deepcopy(tiers)
    for r in resources:
        _untier(r.inputs)
    *stateless, smoke = sorted(only(check(resources), "redis-state-tier-never-evicts"), key=lambda v: v.resource)
    assert [v.message.split(" and the stack has no state tier")[0] for v in stateless] == [
        f"StatefulSet redis-dev/redis is a cache-tier Redis (its pods' {TIER} label is 'cache')",
        f"StatefulSet redis-dev/redis-state is a cache-tier Redis (its pods carry no {TIER} label)",
    ]
    # And the smoke Job's state master name now names an evicting workload.
    assert smoke.resource.endswith("::smoke-job")
    assert (
        "--state-master-name dictstate is the cache tier's Sentinel master name (StatefulSet redis-dev/redis-state"
        in (smoke.message)
    )


@pytest.mark.parametrize(
    ("key", "old", "new", "where"),
    [
        ("redis.conf", "maxmemory-policy noeviction", "maxmemory-policy allkeys-lru", "redis.conf sets"),
        ("redis.conf", "maxmemory-policy noeviction", "maxmemory-policy volatile-ttl", "redis.conf sets"),
        # noeviction in the file, an evicting policy printed into the running copy at start.
        (
            "start-redis.sh",
            "    printf 'bind %s\\ndir %s\\n'",
            "    printf 'maxmemory-policy allkeys-lfu\\n'\n    printf 'bind %s\\ndir %s\\n'",
            "start-redis.sh sets",
        ),
    ],
)
def test_an_evicting_policy_on_the_state_tier_fires(
    tiers: list[Registered], key: str, old: str, new: str, where: str
) -> None:
    resources = copy.deepcopy(tiers)
    _state_conf(resources, key, old, new)
    violation = _state_violation(resources)
    assert violation.resource.endswith("::state-statefulset")
    policy = new.split("maxmemory-policy ")[1].split("\\n")[0]
    assert violation.message.startswith(
        f"StatefulSet redis-dev/redis-state is the state tier, but {STATE_CONFIG}/{where} maxmemory-policy {policy!r}, "
        "so once it is full Redis deletes decisions"
    )
    assert "Set 'maxmemory-policy noeviction' in its redis.conf (stack setting state.maxmemoryPolicy)" in (
        violation.message
    )


def test_an_evicting_policy_on_the_command_line_fires(tiers: list[Registered]) -> None:
    resources = copy.deepcopy(tiers)
    container(find(resources, "StatefulSet", STATE), "redis")["args"] = ["--maxmemory-policy", "allkeys-random"]
    violation = _state_violation(resources)
    assert "but its command line sets maxmemory-policy 'allkeys-random'" in violation.message


def test_the_state_tier_on_the_caches_config_fires(tiers: list[Registered]) -> None:
    """State pods mounting the cache's ConfigMap: its LRU policy, its master name and its pods."""
    resources = copy.deepcopy(tiers)
    for volume in find(resources, "StatefulSet", STATE)["spec"]["template"]["spec"]["volumes"]:
        if volume.get("configMap", {}).get("name") == STATE_CONFIG:
            volume["configMap"]["name"] = "redis-config"
    violations = check(resources)
    # The cache's maxmemory does not fit the state tier's smaller memory limit either.
    [headroom] = [v for v in violations if v.policy == "redis-maxmemory-headroom"]
    assert headroom.message.startswith("StatefulSet redis-dev/redis-state: maxmemory")
    violations.remove(headroom)
    evicting, shared, pods = only(violations, "redis-state-tier-never-evicts")
    assert all(v.resource.endswith("::state-statefulset") for v in (evicting, shared, pods))
    assert "but redis-config/redis.conf sets maxmemory-policy 'allkeys-lru'" in evicting.message
    assert (
        "it registers with the Sentinels as 'mymaster' (the MASTER_NAME default in the scripts it runs), the "
        "master name of the cache tier's StatefulSet redis-dev/redis" in shared.message
    )
    assert (
        "but the REDIS_ADDRS default in the scripts it runs names redis-0.redis-headless.redis-dev.svc.cluster.local"
        ":6379; the REDIS_SEED_HOST default in the scripts it runs names redis-0.redis-headless" in pods.message
    )
    assert "pods of the cache tier's StatefulSet redis-dev/redis. A state pod" in pods.message
    assert "Point REDIS_ADDRS and REDIS_SEED_HOST at the state tier's own pods" in pods.message


def test_state_pods_seeded_from_the_cache_fire(tiers: list[Registered]) -> None:
    resources = copy.deepcopy(tiers)
    seed = "REDIS_SEED_HOST:=redis-state-0.redis-state-headless."
    _state_conf(resources, "common.sh", seed, "REDIS_SEED_HOST:=redis-0.redis-headless.")
    violation = _state_violation(resources)
    assert violation.message.startswith(
        "StatefulSet redis-dev/redis-state is the state tier, but the REDIS_SEED_HOST default in the scripts it "
        "runs names redis-0.redis-headless.redis-dev.svc.cluster.local: pods of the cache tier's StatefulSet "
        "redis-dev/redis."
    )
    # The same through the container's env, a short name (same namespace) this time.
    resources = copy.deepcopy(tiers)
    env = container(find(resources, "StatefulSet", STATE), "redis")["env"]
    env.append({"name": "REDIS_ADDRS", "value": "redis-state-0.redis-state-headless:6379 redis-1.redis-headless:6379"})
    violation = _state_violation(resources)
    assert "but env REDIS_ADDRS on its container names redis-1.redis-headless:6379" in violation.message


def test_sentinels_monitoring_the_cache_as_the_state_tier_fire(tiers: list[Registered]) -> None:
    resources = copy.deepcopy(tiers)
    _replace(
        resources,
        "redis-sentinel-config",
        "common.sh",
        "dictstate=redis-state-0.redis-state-headless.",
        "dictstate=redis-0.redis-headless.",
    )
    violation = _state_violation(resources)
    assert violation.resource.endswith("::sentinel-statefulset")
    assert violation.message.startswith(
        "StatefulSet redis-dev/redis-sentinel: the SENTINEL_MONITORS default in the scripts it runs lists "
        "redis-0.redis-headless.redis-dev.svc.cluster.local:6379, a pod of the cache tier's StatefulSet "
        "redis-dev/redis, under the state tier's master name 'dictstate', so the Sentinels can monitor the "
        "evicting cache's master as the state tier"
    )
    assert "List only the state tier's own pods under 'dictstate'." in violation.message


def test_an_unset_policy_is_redis_default_noeviction(tiers: list[Registered]) -> None:
    resources = copy.deepcopy(tiers)
    _state_conf(resources, "redis.conf", "maxmemory-policy noeviction\n", "")
    assert check(resources) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("appendonly yes", "appendonly no", "redis-state-config/redis.conf sets appendonly 'no'"),
        ("appendonly yes", "", "nothing in its config sets appendonly, so the AOF is off"),
        ("appendfsync everysec", "appendfsync no", "redis-state-config/redis.conf sets appendfsync 'no'"),
    ],
)
def test_a_state_tier_without_the_aof_fires(tiers: list[Registered], old: str, new: str, problem: str) -> None:
    resources = copy.deepcopy(tiers)
    _state_conf(resources, "redis.conf", old + "\n", new + "\n")
    violation = _state_violation(resources)
    assert violation.message.startswith(f"StatefulSet redis-dev/redis-state is the state tier, but {problem}")
    assert "Set 'appendonly yes' and 'appendfsync everysec'" in violation.message


@pytest.mark.parametrize("how", ["env", "script default"])
def test_the_state_tier_under_the_caches_master_name_fires(tiers: list[Registered], how: str) -> None:
    resources = copy.deepcopy(tiers)
    if how == "env":
        env = container(find(resources, "StatefulSet", STATE), "redis")["env"]
        env.append({"name": "MASTER_NAME", "value": "mymaster"})
        source = "env MASTER_NAME on its container"
    else:
        _state_conf(resources, "common.sh", "MASTER_NAME:=dictstate", "MASTER_NAME:=mymaster")
        source = "the MASTER_NAME default in the scripts it runs"
    violation = _state_violation(resources)
    assert violation.resource.endswith("::state-statefulset")
    assert violation.message.startswith(
        f"StatefulSet redis-dev/redis-state is the state tier, but it registers with the Sentinels as 'mymaster' "
        f"({source}), the master name of the cache tier's StatefulSet redis-dev/redis (the MASTER_NAME default in "
        "the scripts it runs): a client asking the Sentinels for the state tier's master"
    )
    assert "Give the state tier a master name of its own (stack setting state.masterName" in violation.message


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_smoke_job_routing_state_keys_to_the_cache_fires(tiers: list[Registered], how: str) -> None:
    resources = copy.deepcopy(tiers)
    job = next(r.inputs for r in resources if r.inputs.get("kind") == "Job")
    smoke = job["spec"]["template"]["spec"]["containers"][0]
    assert smoke["args"][smoke["args"].index("--state-master-name") + 1] == "dictstate"
    if how == "flag":
        smoke["args"][smoke["args"].index("--state-master-name") + 1] = "mymaster"
        given = "--state-master-name mymaster"
    else:
        smoke["env"].append({"name": pack_config.STATE_MASTER_NAME_VAR, "value": "mymaster"})
        given = "STATE_MASTER_NAME='mymaster'"
    violation = _state_violation(resources)
    assert violation.resource.endswith("::smoke-job")
    assert re.match(
        rf'Job redis-dev/redis-smoke-\w+, container "smoke": {re.escape(given)} is the cache tier\'s Sentinel '
        r"master name \(StatefulSet redis-dev/redis \(the MASTER_NAME default in the scripts it runs\)\), so it "
        r"reads and writes the state tier's keys on the evicting cache\.",
        violation.message,
    )
    assert "Give it the state tier's master name (stack setting state.masterName)" in violation.message


@pytest.mark.parametrize(
    ("policy", "break_it", "expected"),
    [
        (
            "redis-maxmemory-headroom",
            lambda r: _state_conf(r, "redis.conf", f"maxmemory {128 * 2**20}\n", f"maxmemory {240 * 2**20}\n"),
            f"StatefulSet redis-dev/redis-state: maxmemory {240 * 2**20} is 94% of the container memory limit",
        ),
        (
            "redis-default-user-disabled",
            lambda r: _state_conf(r, "users.acl", DEFAULT_OFF, "user default on resetpass"),
            "StatefulSet redis-dev/redis-state: the ACL it renders leaves the default user on",
        ),
        (
            "redis-replica-auth",
            lambda r: _state_conf(r, "start-redis.sh", REDIS_AUTH_LINE, "printf 'aclfile %s\\n' \"$acl\""),
            "StatefulSet redis-dev/redis-state: nothing in the config it starts from",
        ),
        (
            "k8s-redis-probes",
            lambda r: container(find(r, "StatefulSet", STATE), "redis").pop("readinessProbe"),
            'StatefulSet redis-dev/redis-state, container "redis" has no readinessProbe',
        ),
    ],
)
def test_the_server_policies_judge_the_state_tier_too(
    tiers: list[Registered], policy: str, break_it: Any, expected: str
) -> None:
    resources = copy.deepcopy(tiers)
    break_it(resources)
    [violation] = only(check(resources), policy)
    assert violation.level == "mandatory" and violation.message.startswith(expected)


# --- AWS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broken", "change", "policy", "expected"),
    [
        (
            "backups-sse",
            lambda r: r["rules"][0]["applyServerSideEncryptionByDefault"].update(sseAlgorithm="AES256"),
            "aws-s3-kms-encryption",
            'aws:s3/bucket:Bucket "backups" is not encrypted with KMS',
        ),
        (
            "backups-versioning",
            lambda r: r["versioningConfiguration"].update(status="Suspended"),
            "aws-s3-versioning",
            "has no BucketVersioning with status 'Enabled'",
        ),
        (
            "backups-pab",
            lambda r: r.update(restrictPublicBuckets=False),
            "aws-s3-public-access-block",
            "a BucketPublicAccessBlock without restrictPublicBuckets",
        ),
        (
            "backups-lifecycle",
            lambda r: r["rules"][0]["expiration"].update(days=90.0),
            "aws-s3-lifecycle-retention",
            "expires objects after 90 days, beyond the 30-day retention",
        ),
        (
            "backups-lifecycle",
            lambda r: r["rules"][0].update(status="Disabled"),
            "aws-s3-lifecycle-retention",
            "has no enabled lifecycle rule expiring objects",
        ),
        (
            "backups-policy",
            lambda r: r.update(policy=json.dumps({"Statement": []})),
            "aws-s3-tls-only",
            "has no bucket policy refusing plain HTTP",
        ),
        (
            "backup-sa",
            lambda r: r["metadata"].pop("annotations"),
            "aws-backup-irsa",
            "service account redis-dev/redis-backup has no eks.amazonaws.com/role-arn annotation",
        ),
        (
            "backup-role",
            lambda r: r.update(assumeRolePolicy=json.dumps({"Statement": []})),
            "aws-backup-irsa",
            'aws:iam/role:Role "backup-role" does not trust service account redis-dev/redis-backup',
        ),
        (
            "backup-cronjob",
            lambda r: r["spec"]["jobTemplate"]["spec"]["template"]["spec"].pop("serviceAccountName"),
            "aws-backup-irsa",
            "CronJob redis-dev/redis-backup runs under the namespace's default service account",
        ),
    ],
)
def test_each_aws_rule_fires(dev_tls: Rendered, broken: str, change: Any, policy: str, expected: str) -> None:
    resources = aws_stack(dev_tls)
    change(by_name(resources, broken))
    violations = check(resources)
    if policy == "aws-s3-lifecycle-retention":  # the noncurrent rule shares the lifecycle config
        violations = [v for v in violations if v.policy != "aws-s3-noncurrent-version-expiration"]
    [violation] = only(violations, policy)
    assert violation.level == "mandatory" and expected in violation.message


def test_missing_bucket_companions_fire_every_bucket_rule(dev_tls: Rendered) -> None:
    bare = make("aws:s3/bucket:Bucket", "bare", {"bucket": "bare"})
    violations = check([*stack(dev_tls), bare])
    fired = {v.policy: v for v in violations}
    assert set(fired) == {
        "aws-s3-kms-encryption",
        "aws-s3-versioning",
        "aws-s3-public-access-block",
        "aws-s3-lifecycle-retention",
        "aws-s3-tls-only",
    }
    assert all(v.resource == bare.urn and 'aws:s3/bucket:Bucket "bare"' in v.message for v in violations)


def test_companions_match_the_bucket_by_name_too(dev_tls: Rendered) -> None:
    assert check(aws_stack(dev_tls, bucket_ref="dict-redis-backups")) == []
    other = [v.policy for v in check(aws_stack(dev_tls, bucket_ref="someone-elses-bucket"))]
    assert "aws-s3-kms-encryption" in other and "aws-s3-versioning" in other


def test_companions_match_through_property_dependencies_in_preview() -> None:
    """Under the engine the bucket's name is unknown in a first preview; the URN dependency is not."""
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    bucket = PolicyResource(
        "aws:s3/bucket:Bucket",
        unknown_checking_proxy({"bucket": UNKNOWN_STRING_VALUE}),
        "urn:b",
        "b",
        opts,
        None,
        None,
        [],
        {},
    )
    sse_props = {
        "bucket": UNKNOWN_STRING_VALUE,
        "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}],
    }
    sse = PolicyResource(
        next(iter(aws.SSE)),
        unknown_checking_proxy(sse_props),
        "urn:s",
        "s",
        opts,
        None,
        None,
        [bucket],
        {"bucket": [bucket]},
    )
    reports: list[str] = []
    aws.s3_kms_encryption.validate(StackValidationArgs([bucket, sse]), lambda msg, urn=None: reports.append(msg))
    assert reports == []
    aws.s3_kms_encryption.validate(StackValidationArgs([bucket]), lambda msg, urn=None: reports.append(msg))
    assert len(reports) == 1 and "is not encrypted with KMS" in reports[0]


def test_noncurrent_versions_beyond_retention_are_advisory(dev_tls: Rendered) -> None:
    resources = aws_stack(dev_tls)
    del by_name(resources, "backups-lifecycle")["rules"][0]["noncurrentVersionExpiration"]
    [violation] = only(check(resources), "aws-s3-noncurrent-version-expiration")
    assert violation.level == "advisory" and "never expires noncurrent versions" in violation.message
    assert (
        only(check(resources, {"aws-s3-noncurrent-version-expiration": "mandatory"}), violation.policy)[0].level
        == "mandatory"
    )


def test_retention_comes_from_pack_config(dev_tls: Rendered) -> None:
    resources = aws_stack(dev_tls)
    violations = check(resources, {"aws-s3-lifecycle-retention": {"retentionDays": 7}})
    [violation] = only(violations, "aws-s3-lifecycle-retention")
    assert "expires objects after 30 days, beyond the 7-day retention" in violation.message


@pytest.mark.parametrize("type_", ["aws:iam/user:User", "aws:iam/accessKey:AccessKey"])
def test_iam_users_and_access_keys_fire(dev_tls: Rendered, type_: str) -> None:
    [violation] = only(check([*stack(dev_tls), make(type_, "backup-user", {"user": "backup"})]), "aws-no-iam-users")
    assert violation.level == "mandatory"
    assert f'{type_} "backup-user": IAM users and access keys are long-lived' in violation.message
    assert "IRSA" in violation.message


def test_aws_credentials_in_env_or_secrets_fire(dev_tls: Rendered) -> None:
    resources = aws_stack(dev_tls)
    job = by_name(resources, "backup-cronjob")
    job_container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    job_container["env"].append(
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "k"}}}
    )
    secret = make(
        "kubernetes:core/v1:Secret",
        "aws-keys",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "aws", "namespace": NS},
            "stringData": {"credentials": "[default]\naws_access_key_id = AKIAABCDEFGHIJKLMNOP\n"},
        },
    )
    violations = only(check([*resources, secret]), "aws-no-static-credentials")
    messages = sorted(v.message for v in violations)
    assert len(messages) == 2
    assert 'CronJob redis-dev/redis-backup: container "backup" sets AWS_SECRET_ACCESS_KEY' in messages[0]
    assert "Secret redis-dev/aws: stringData key 'credentials' holds AWS credentials" in messages[1]
    assert not any("AKIAABCDEFGHIJKLMNOP" in m for m in messages)


# --- levels, config and unknown values ----------------------------------------------------------


def test_pack_config_overrides_levels_and_rejects_unknown_names(dev_tls: Rendered) -> None:
    resources = drop(stack(dev_tls), "PodDisruptionBudget", "redis")
    assert only(check(resources, {"all": "advisory"}), "k8s-statefulset-disruption-budget")[0].level == "advisory"
    assert check(resources, {"k8s-statefulset-disruption-budget": "disabled"}) == []
    with pytest.raises(analyze.PackConfigError, match="unknown policy no-such-policy; policies: aws-backup-irsa"):
        check(resources, {"no-such-policy": "mandatory"})
    with pytest.raises(
        analyze.PackConfigError, match="k8s-image-pinned: unknown config digest; valid keys: requireDigest"
    ):
        check(resources, {"k8s-image-pinned": {"digest": True}})
    with pytest.raises(analyze.PackConfigError, match="'strict': use one of advisory, mandatory"):
        check(resources, {"k8s-image-pinned": "strict"})


def test_unknown_values_give_an_advisory_not_a_crash(dev_tls: Rendered) -> None:
    resources = stack(dev_tls)
    container(find(resources, "StatefulSet", "redis"), "redis")["image"] = UNKNOWN_STRING_VALUE
    find(resources, "ConfigMap", "redis-config")["data"]["redis.conf"] = UNKNOWN_STRING_VALUE
    violations = check(resources)
    assert violations and {v.level for v in violations} == {"advisory"}
    by_policy = {v.policy: v for v in violations}
    assert "k8s-image-pinned" in by_policy and "redis-maxmemory-headroom" in by_policy
    assert "can't run policy 'k8s-image-pinned'" in by_policy["k8s-image-pinned"].message
    assert "during preview" in by_policy["k8s-image-pinned"].message


@pytest.mark.parametrize(
    ("config_map", "key", "policies"),
    [
        ("redis-config", "users.acl", {"redis-default-user-disabled", "redis-tls-required", "redis-replica-auth"}),
        ("redis-sentinel-config", "start-sentinel.sh", {"redis-tls-required", "redis-replica-auth"}),
    ],
)
def test_unknown_scripts_give_the_new_rules_an_advisory(
    dev_tls: Rendered, config_map: str, key: str, policies: set[str]
) -> None:
    resources = stack(dev_tls)
    find(resources, "ConfigMap", config_map)["data"][key] = UNKNOWN_STRING_VALUE
    violations = check(resources)
    assert {v.level for v in violations} == {"advisory"}
    stack_rules = {v.policy: v for v in violations if v.policy.startswith("redis-")}
    assert set(stack_rules) >= policies
    for policy in policies:
        assert f"can't run policy '{policy}'" in stack_rules[policy].message


# --- make policy and the pack's entry point -----------------------------------------------------


def test_make_policy_runs_the_real_pack_over_grpc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "policy-dev.json"
    assert analyze.main(["--stack", "dev", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["policies"] == [p.name for p in pack.POLICIES]
    # Dev runs without TLS by design: reported, not blocking.
    assert sorted((v["policy"], v["level"], v["resource"].rsplit("::", 1)[1]) for v in report["violations"]) == [
        ("redis-tls-required", "advisory", "redis-statefulset"),
        ("redis-tls-required", "advisory", "sentinel-statefulset"),
        ("redis-tls-required", "advisory", "state-statefulset"),
    ]
    printed = capsys.readouterr().out
    assert "with policies/config/dev.json" in printed
    assert "[advisory] redis-tls-required (3)" in printed
    assert "stack dev: 25 policies, 0 mandatory and 3 advisory violations" in printed


def test_make_policy_fails_on_a_mandatory_violation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "strict.json"
    config.write_text(json.dumps({"k8s-image-pinned": {"requireDigest": True}, "k8s-redis-probes": "advisory"}))
    out = tmp_path / "policy-prod.json"
    assert analyze.main(["--stack", "prod", "--config", str(config), "--out", str(out)]) == 1
    violations = json.loads(out.read_text())["violations"]
    # both tiers and Sentinel (each with its exporter), the smoke Job, the backup's 4 (dump and
    # upload per tier)
    assert len(violations) == 11
    assert all(set(v) == {"policy", "level", "resource", "message"} for v in violations)
    assert {(v["policy"], v["level"]) for v in violations} == {("k8s-image-pinned", "mandatory")}
    assert {v["resource"].rsplit("::", 1)[1] for v in violations} == {
        "redis-statefulset",
        "state-statefulset",
        "sentinel-statefulset",
        "smoke-job",
        "backup-cronjob",
    }
    printed = capsys.readouterr().out
    assert "[mandatory] k8s-image-pinned (11)" in printed
    assert (
        "    - StatefulSet redis/redis, container \"redis\": image 'valkey/valkey:8.0.1-alpine' has no @sha256: digest"
        in printed
    )


def test_make_policy_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "typo.json"
    config.write_text(json.dumps({"k8s-image-pined": "mandatory"}))
    assert analyze.main(["--stack", "dev", "--config", str(config), "--out", str(tmp_path / "r.json")]) == 2
    assert "unknown policy k8s-image-pined; policies: " in capsys.readouterr().err
    assert analyze.main(["--stack", "qa"]) == 2
    assert "unknown stack 'qa': no Pulumi.qa.yaml; stacks: dev, prod" in capsys.readouterr().err


def test_make_policy_on_a_stack_without_a_pack_config_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack_file = tmp_path / "Pulumi.qa.yaml"
    stack_file.write_text((analyze.ROOT / "Pulumi.dev.yaml").read_text())
    out = tmp_path / "policy-qa.json"
    assert analyze.main(["--stack-file", str(stack_file), "--out", str(out), "--in-process"]) == 1
    printed = capsys.readouterr()
    note = (
        "note: stack qa has no pack config (policies/config/qa.json does not exist): every policy runs at the "
        "pack's default level, most of them mandatory; give one with --config FILE"
    )
    assert note in printed.err  # before the run
    assert printed.out.rstrip().endswith(note)  # and after the failing summary
    assert "[mandatory] redis-tls-required (3)" in printed.out


def test_make_policy_target_runs_the_analyzer() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "policy", "STACK=prod"],
        cwd=analyze.ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert ".venv/bin/python -m policies.analyze --stack prod" in dry_run.stdout


def test_entry_point_only_builds_the_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kwargs: built.append(kwargs))
    monkeypatch.setattr(sys, "path", [str(analyze.PACK_DIR), *sys.path])
    runpy.run_path(str(analyze.PACK_DIR / "__main__.py"), run_name="__main__")
    [kwargs] = built
    assert kwargs["name"] == pack.PACK_NAME == "dict-redis-policies"
    assert [p.name for p in kwargs["policies"]] == [p.name for p in pack.POLICIES]
    assert kwargs["enforcement_level"] == pulumi_policy.EnforcementLevel.MANDATORY
    # The pack's own directory left sys.path: its redis.py must not shadow redis-py.
    assert str(analyze.PACK_DIR) not in sys.path


def test_pack_project_files() -> None:
    meta = yaml.safe_load((analyze.PACK_DIR / "PulumiPolicy.yaml").read_text())
    assert meta["runtime"]["name"] == "python" and meta["version"]
    pins = (analyze.PACK_DIR / "requirements.txt").read_text()
    assert (
        "pulumi-policy==1.21.*" in pins and "pulumi-policy==1.21.*" in (analyze.ROOT / "requirements.txt").read_text()
    )


def test_readme_lists_every_policy_with_its_level() -> None:
    # The policy table moved from README.md to docs/policies-and-ci.md (the README links it).
    readme = (analyze.ROOT / "docs" / "policies-and-ci.md").read_text()
    documented = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (mandatory|advisory) \|", readme, re.MULTILINE))
    info = analyze.in_process_pack().GetAnalyzerInfo(analyze.empty_pb2.Empty())
    assert documented == {p.name: analyze.LEVEL_NAMES[p.enforcementLevel] for p in info.policies}
