"""Both stacks under the Pulumi mock runtime: what gets registered, how it is wired and parented."""

from __future__ import annotations

from typing import Any

import pytest

from components.topology import RUN_AS_USER
from smoke.local.render import Rendered
from tests.support import render_with

EXPECTED = {
    ("Namespace", None),
    ("Secret", "redis-auth"),
    ("ConfigMap", "redis-config"),
    ("ConfigMap", "redis-state-config"),
    ("ConfigMap", "redis-sentinel-config"),
    ("Service", "redis-headless"),
    ("Service", "redis-state-headless"),
    ("Service", "redis-sentinel-headless"),
    ("Service", "redis-sentinel"),
    ("StatefulSet", "redis"),
    ("StatefulSet", "redis-state"),
    ("StatefulSet", "redis-sentinel"),
    ("PodDisruptionBudget", "redis"),
    ("PodDisruptionBudget", "redis-state"),
    ("PodDisruptionBudget", "redis-sentinel"),
    ("NetworkPolicy", "redis"),
    ("Job", None),
    # monitoring (on in both stacks)
    ("PodMonitor", "redis"),
    ("PrometheusRule", "redis"),
    ("ConfigMap", "redis-dashboard"),
    # backups (components/backup.py, tests/test_backup_stack.py)
    ("CronJob", "redis-backup"),
    ("ServiceAccount", "redis-backup"),
    ("ConfigMap", "redis-backup-scripts"),
    ("NetworkPolicy", "redis-backup"),
}


@pytest.fixture(params=["dev", "prod"])
def stack(request: pytest.FixtureRequest) -> Rendered:
    return request.getfixturevalue(request.param)


def pod_spec(stack: Rendered, name: str) -> dict[str, Any]:
    return stack.find("StatefulSet", name)["spec"]["template"]["spec"]


def test_every_expected_kubernetes_object_is_registered_once(stack: Rendered) -> None:
    objects = [(d["kind"], d["metadata"]["name"]) for d in stack.kubernetes()]
    assert len(objects) == len(set(objects))
    # TLS (on in prod, off in dev) adds the two cert-manager Certificates.
    certificates = {("Certificate", "redis-tls"), ("Certificate", "redis-sentinel-tls")}
    expected = EXPECTED | (certificates if stack.stack == "prod" else set())
    assert {(k, None if k in ("Namespace", "Job") else n) for k, n in objects} == expected
    namespace = stack.kubernetes("Namespace")[0]["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == namespace for d in stack.kubernetes() if d["kind"] != "Namespace")


def test_children_are_parented_to_their_components(stack: Rendered) -> None:
    parents = {r.name: r.parent_type for r in stack.resources if r.custom}
    assert parents["redis-statefulset"] == "dict-redis:index:RedisDataPlane"
    assert parents["redis-config"] == "dict-redis:index:RedisDataPlane"
    assert parents["state-statefulset"] == "dict-redis:index:RedisDataPlane"
    assert parents["state-config"] == "dict-redis:index:RedisDataPlane"
    assert parents["sentinel-statefulset"] == "dict-redis:index:Sentinel"
    assert parents["sentinel-service"] == "dict-redis:index:Sentinel"
    assert parents["auth-secret"] == "dict-redis:index:RedisAuth"
    assert parents["auth-password"] == "dict-redis:index:RedisAuth"
    assert parents["network-policy"] == "dict-redis:index:CacheNetworkPolicy"
    assert parents["namespace"] is None
    # Child names derive from the component's name.
    components = {r.name: r.type for r in stack.resources if not r.custom}
    for child, parent_type in parents.items():
        if parent_type:
            owners = [n for n, t in components.items() if t == parent_type]
            assert any(child.startswith(f"{owner}-") for owner in owners), child


def test_stack_outputs_name_the_namespace_sentinel_service_master_and_secret(dev: Rendered, prod: Rendered) -> None:
    job = dev.kubernetes("Job")[0]["metadata"]["name"]
    assert dev.outputs == {
        "namespace": "redis-dev",
        "sentinelService": "redis-sentinel.redis-dev.svc.cluster.local:26379",
        "masterName": "mymaster",
        "stateMasterName": "dictstate",
        "secretName": "redis-auth",
        "smokeJob": job,
        "backupBucket": "lbpay-dict-redis-backups-dev",
        "backupRoleArn": "arn:aws:mock:::backup-role",
        "backupCronJob": "redis-backup",
    }
    assert prod.outputs["sentinelService"] == "redis-sentinel.redis.svc.cluster.local:26379"


def test_no_service_routes_to_the_data_pods_except_the_headless_one(stack: Rendered) -> None:
    for name in ("redis", "redis-state"):
        pods = stack.find("StatefulSet", name)["spec"]["template"]["metadata"]["labels"]
        routing = [
            s["metadata"]["name"] for s in stack.kubernetes("Service") if s["spec"]["selector"].items() <= pods.items()
        ]
        assert routing == [f"{name}-headless"]
    headless = stack.find("Service", "redis-headless")["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    client = stack.find("Service", "redis-sentinel")["spec"]
    assert [p["port"] for p in client["ports"]] == [26379]


@pytest.mark.parametrize("name", ["redis", "redis-state", "redis-sentinel"])
def test_pods_run_hardened_as_a_high_non_root_uid(stack: Rendered, name: str) -> None:
    spec = pod_spec(stack, name)
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["securityContext"]["runAsUser"] == RUN_AS_USER >= 10000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert [c["name"] for c in spec["containers"]][1:] == ["exporter"]
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert set(container["resources"]) == {"requests", "limits"}
        if container["name"] == "exporter":
            # It writes nothing: every mount is read-only (its wrapper script, its password, the CA).
            assert all(m.get("readOnly") is True for m in container["volumeMounts"])
            continue
        # Every writable path is an explicit volume.
        mounts = {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]}
        assert mounts["/etc/redis-auth"] is True
        assert "/tmp" in mounts and "/data" in mounts


def test_the_password_reaches_pods_only_as_a_mounted_secret_file(stack: Rendered) -> None:
    for name in ("redis", "redis-sentinel"):
        spec = pod_spec(stack, name)
        container = spec["containers"][0]
        assert all("valueFrom" not in e or "secretKeyRef" not in e["valueFrom"] for e in container.get("env", []))
        assert "envFrom" not in container
        auth = next(v for v in spec["volumes"] if v["name"] == "auth")
        assert auth["secret"]["secretName"] == "redis-auth"
        script = "/etc/redis/probe-redis.sh" if name == "redis" else "/etc/redis-sentinel/probe-sentinel.sh"
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["exec"]["command"][:2] == ["sh", script]


def test_redis_statefulset_wiring(stack: Rendered) -> None:
    sts = stack.find("StatefulSet", "redis")["spec"]
    assert sts["replicas"] == 3
    assert sts["serviceName"] == "redis-headless"
    assert sts["podManagementPolicy"] == "Parallel"
    container, _exporter = sts["template"]["spec"]["containers"]
    assert container["command"] == ["sh", "/etc/redis/start-redis.sh"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sh", "/etc/redis/prestop-redis.sh"]
    assert [container[p]["exec"]["command"][2] for p in ("startupProbe", "livenessProbe", "readinessProbe")] == [
        "startup",
        "liveness",
        "readiness",
    ]
    run = next(v for v in sts["template"]["spec"]["volumes"] if v["name"] == "run")
    assert run["emptyDir"]["medium"] == "Memory"
    (claim,) = sts["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert sts["template"]["spec"]["terminationGracePeriodSeconds"] >= 15


def test_storage_follows_the_stack(dev: Rendered, prod: Rendered) -> None:
    (prod_claim,) = prod.find("StatefulSet", "redis")["spec"]["volumeClaimTemplates"]
    assert prod_claim["spec"]["storageClassName"] == "standard"
    assert prod_claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    (dev_claim,) = dev.find("StatefulSet", "redis")["spec"]["volumeClaimTemplates"]
    assert "storageClassName" not in dev_claim["spec"]  # the cluster's default class


def test_client_namespaces_restrict_the_network_policy() -> None:

    rendered = render_with("dev", {"dict-redis:clientNamespaces": '["dict-app", "dict-bridge"]'})
    spec = rendered.find("NetworkPolicy", "redis")["spec"]
    clients = spec["ingress"][1]["from"][0]
    assert clients["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["dict-app", "dict-bridge"]}
        ]
    }


def test_sentinels_are_a_statefulset_of_three_with_writable_config(stack: Rendered) -> None:
    sts = stack.find("StatefulSet", "redis-sentinel")["spec"]
    assert sts["replicas"] == 3
    assert sts["serviceName"] == "redis-sentinel-headless"
    volumes = {v["name"]: v for v in sts["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]
    container, _exporter = sts["template"]["spec"]["containers"]
    assert container["command"] == ["sh", "/etc/redis-sentinel/start-sentinel.sh"]
    # The startup probe outlasts start-sentinel.sh's 60 s wait for the master on a first boot.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 90


def test_sentinel_pods_get_only_the_passwords_their_scripts_read(stack: Rendered) -> None:
    spec = stack.find("StatefulSet", "redis-sentinel")["spec"]["template"]["spec"]
    auth = next(v for v in spec["volumes"] if v["name"] == "auth")["secret"]
    assert sorted(i["key"] for i in auth["items"]) == sorted(
        ["sentinel-requirepass", "sentinel-password", "probe-password"]
    )
    # The scripts' users: the Sentinel ACL user towards the data nodes, probe for their checks.
    scripts = stack.find("ConfigMap", "redis-sentinel-config")["data"]
    assert ': "${REDIS_USER:=probe}"' in scripts["common.sh"]
    assert "$AUTH_DIR/$SENTINEL_ACL_USER-password" in scripts["start-sentinel.sh"]
    # No admin, app, replication, backup or exporter password in a Sentinel pod.
    assert not {"admin-password", "app-password", "replication-password"} & {i["key"] for i in auth["items"]}


@pytest.mark.parametrize("name", ["redis", "redis-sentinel"])
def test_each_statefulset_has_a_pdb_of_one_and_spreads_over_nodes_and_zones(
    dev: Rendered, prod: Rendered, name: str
) -> None:
    for stack in (dev, prod):
        selector = stack.find("StatefulSet", name)["spec"]["selector"]["matchLabels"]
        pdb = stack.find("PodDisruptionBudget", name)["spec"]
        assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
        spread = pod_spec(stack, name)["topologySpreadConstraints"][0]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    required = pod_spec(prod, name)["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required[0]["topologyKey"] == "kubernetes.io/hostname"
    preferred = pod_spec(dev, name)["affinity"]["podAntiAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in preferred


def test_network_policy_admits_only_clients_and_the_layer_itself(stack: Rendered) -> None:
    spec = stack.find("NetworkPolicy", "redis")["spec"]
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "dict-redis"}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    sources = [peer for rule in spec["ingress"] for peer in rule["from"]]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "dict-redis"}}} in sources
    assert {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"dict.lbpay.com.br/redis-client": "true"}},
    } in sources
    # Every rule but the monitoring one (tests/test_monitoring.py) admits to Redis and Sentinel only.
    for rule in spec["ingress"][:2]:
        assert sorted(p["port"] for p in rule["ports"]) == [6379, 26379]
    dns = [rule for rule in spec["egress"] if any(p["port"] == 53 for p in rule["ports"])]
    assert dns, "pods must be allowed to resolve each other's names"


def test_a_config_change_rolls_the_pods(dev: Rendered, prod: Rendered) -> None:
    def checksum(stack: Rendered) -> str:
        return stack.find("StatefulSet", "redis")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum(dev) != checksum(prod)
    assert len(checksum(dev)) == 64


def test_the_smoke_job_runs_the_suite_through_the_sentinels_with_the_password_from_a_file(
    dev: Rendered, prod: Rendered
) -> None:
    from smoke.checks.runner import build_parser

    for stack, failover in ((dev, True), (prod, False)):
        (job,) = stack.kubernetes("Job")
        spec = job["spec"]
        assert spec["backoffLimit"] == 0
        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e["value"] for e in container["env"]}
        # The application ACL user, its password and the Sentinels' from files; the CA with TLS.
        assert env == {
            "REDIS_USERNAME": "app",
            "REDIS_PASSWORD_FILE": "/etc/redis-auth/app-password",
            "SENTINEL_PASSWORD_FILE": "/etc/redis-auth/sentinel-requirepass",
            **({"REDIS_TLS_CA_FILE": "/etc/redis-tls/ca.crt"} if stack is prod else {}),
        }
        auth = next(v for v in pod["volumes"] if v["name"] == "auth")["secret"]
        assert [i["key"] for i in auth["items"]] == ["app-password", "sentinel-requirepass"]
        if stack is prod:
            tls = next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]
            assert tls["secretName"] == "redis-tls" and tls["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
        # The labels the NetworkPolicy admits, and arguments the runner accepts as they are.
        assert spec["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "dict-redis"
        args = build_parser().parse_args(container["args"])
        assert args.target == "cluster" and args.failover is failover
        assert str(args.report) == "-"
        assert len(args.sentinels) == 3 and args.replicas == 2
        # Both tiers: each strategy is checked on the tier it lives on.
        assert (args.master_name, args.state_master_name, args.state_replicas) == ("mymaster", "dictstate", 2)
        assert all(host.endswith(".svc.cluster.local") and port == 26379 for host, port in args.sentinels)


def test_a_changed_stack_gets_a_new_smoke_job(dev: Rendered) -> None:

    before = dev.kubernetes("Job")[0]["metadata"]["name"]
    smoke = '{"enabled": true, "image": "ghcr.io/lbpay/dict-redis-smoke:0.1.0", "failover": true, "runId": "r2"}'
    rerun = render_with("dev", {"dict-redis:smoke": smoke})
    assert rerun.kubernetes("Job")[0]["metadata"]["name"] != before
    disabled = render_with("dev", {"dict-redis:smoke": '{"enabled": false}'})
    assert disabled.kubernetes("Job") == [] and "smokeJob" not in disabled.outputs


def test_tls_certificates_name_every_pod_and_are_mounted_where_the_scripts_look(prod: Rendered, dev: Rendered) -> None:
    redis_cert = prod.find("Certificate", "redis-tls")
    assert redis_cert["apiVersion"] == "cert-manager.io/v1"
    spec = redis_cert["spec"]
    assert spec["secretName"] == "redis-tls"
    assert spec["issuerRef"] == {"name": "dict-redis-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    pods = [f"redis-{i}.redis-headless.redis.svc.cluster.local" for i in range(3)]
    assert set(pods) | {"redis-headless.redis.svc.cluster.local"} <= set(spec["dnsNames"])
    sentinel = prod.find("Certificate", "redis-sentinel-tls")["spec"]
    assert "redis-sentinel-2.redis-sentinel-headless.redis.svc.cluster.local" in sentinel["dnsNames"]
    assert "redis-sentinel.redis.svc.cluster.local" in sentinel["dnsNames"]
    for name, secret in (("redis", "redis-tls"), ("redis-sentinel", "redis-sentinel-tls")):
        spec = pod_spec(prod, name)
        tls = next(v for v in spec["volumes"] if v["name"] == "tls")
        assert tls["secret"]["secretName"] == secret
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["tls"] == "/etc/redis-tls"
        assert not any(v["name"] == "tls" for v in pod_spec(dev, name)["volumes"])
    assert dev.kubernetes("Certificate") == []


def test_the_acl_template_ships_in_the_redis_configmap_without_passwords(stack: Rendered) -> None:
    from components.acl import USERS

    data = stack.find("ConfigMap", "redis-config")["data"]
    lines = data["users.acl"].splitlines()
    assert lines[0].startswith("user default off")
    assert [line.split()[1] for line in lines[1:]] == [u.name for u in USERS]
    assert all("@PASSWORDS@" in line for line in lines[1:])
    assert "sync-acl.sh" in data


def test_certificates_carry_no_common_name_a_long_namespace_would_overflow() -> None:
    # redis-sentinel-0.redis-sentinel-headless.<ns>.svc.cluster.local passes 64 bytes (the
    # common-name limit cert-manager enforces) from a 6-character namespace on.
    rendered = render_with("prod", {"dict-redis:namespace": "dict-redis-cache-production"})
    for name in ("redis-tls", "redis-sentinel-tls"):
        spec = rendered.find("Certificate", name)["spec"]
        assert "commonName" not in spec
        assert all(len(n) <= 253 for n in spec["dnsNames"]) and any(len(n) > 64 for n in spec["dnsNames"])


def test_the_state_tier_is_a_statefulset_of_its_own_that_never_evicts(stack: Rendered) -> None:
    cache, state = stack.find("StatefulSet", "redis"), stack.find("StatefulSet", "redis-state")
    # Neither selector matches the other's pods (a StatefulSet adopting the other's pods would
    # fight over them), and the cache keeps the selector it always had.
    cache_pods = cache["spec"]["template"]["metadata"]["labels"]
    state_pods = state["spec"]["template"]["metadata"]["labels"]
    assert not state["spec"]["selector"]["matchLabels"].items() <= cache_pods.items()
    assert not cache["spec"]["selector"]["matchLabels"].items() <= state_pods.items()
    assert cache["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "redis",
        "app.kubernetes.io/part-of": "dict-redis",
        "app.kubernetes.io/component": "server",
    }
    assert (cache_pods["dict.lbpay.com.br/tier"], state_pods["dict.lbpay.com.br/tier"]) == ("cache", "state")
    conf = stack.find("ConfigMap", "redis-state-config")["data"]
    assert "maxmemory-policy noeviction" in conf["redis.conf"] and "appendonly yes" in conf["redis.conf"]
    assert "maxmemory-policy allkeys-lru" in stack.find("ConfigMap", "redis-config")["data"]["redis.conf"]
    # The state pods' scripts act on the state tier: its master name, its pods, its ordinal 0.
    common = conf["common.sh"]
    assert ': "${MASTER_NAME:=dictstate}"' in common
    assert (
        "redis-state-0.redis-state-headless." in common
        and "redis-0.redis-headless." not in common.split("SENTINEL_MONITORS")[0]
    )
    # The same hardening, probes, preStop and PDB as the cache.
    spec, cache_spec = state["spec"]["template"]["spec"], cache["spec"]["template"]["spec"]
    main, cache_main = spec["containers"][0], cache_spec["containers"][0]
    for key in ("securityContext", "startupProbe", "livenessProbe", "readinessProbe", "lifecycle", "command"):
        assert main[key] == cache_main[key], key
    assert spec["securityContext"] == cache_spec["securityContext"]
    assert state["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == (
        "5Gi" if stack.stack == "prod" else "1Gi"
    )
    assert stack.find("PodDisruptionBudget", "redis-state")["spec"]["maxUnavailable"] == 1


def test_the_sentinels_monitor_both_tiers_and_the_app_user_is_confined_per_tier(stack: Rendered) -> None:
    sentinel = stack.find("ConfigMap", "redis-sentinel-config")["data"]
    assert "sentinel monitor mymaster @MASTER_HOST:mymaster@" in sentinel["sentinel.conf"]
    assert "sentinel monitor dictstate @MASTER_HOST:dictstate@" in sentinel["sentinel.conf"]
    assert "mymaster=redis-0.redis-headless." in sentinel["common.sh"]
    assert "dictstate=redis-state-0.redis-state-headless." in sentinel["common.sh"]
    cache_acl = stack.find("ConfigMap", "redis-config")["data"]["users.acl"]
    state_acl = stack.find("ConfigMap", "redis-state-config")["data"]["users.acl"]
    app = {name: next(line for line in text.splitlines() if line.startswith("user app ")) for name, text in (
        ("cache", cache_acl), ("state", state_acl))}  # fmt: skip
    assert "~bridge:idempotency:*" not in app["cache"] and "~bridge:idempotency:*" in app["state"]
    assert "~dict:entry:*" in app["cache"] and "~dict:entry:*" not in app["state"]
