"""Monitoring in the rendered stacks: exporter sidecars, a PodMonitor that really selects them, the
PrometheusRule, the dashboard ConfigMap, the NetworkPolicy rule, and the CRD objects validated
against the prometheus-operator schemas vendored under tests/schemas/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from components.monitoring import TARGET_LABELS
from components.settings import SettingsError, settings_from_config
from smoke.local.render import Rendered
from tests.support import render_with

SCHEMAS = Path(__file__).parent / "schemas"
# The cache tier, the state tier (issue 13) and the Sentinels: every one is scraped.
WORKLOADS = ("redis", "redis-state", "redis-sentinel")
TIER_OF = {"redis": "cache", "redis-state": "state"}  # Sentinel pods carry no tier


@pytest.fixture(params=["dev", "prod"])
def stack(request: pytest.FixtureRequest) -> Rendered:
    return request.getfixturevalue(request.param)


def pod_template(stack: Rendered, name: str) -> dict[str, Any]:
    return stack.find("StatefulSet", name)["spec"]["template"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels + matchExpressions) applied to a label set."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        ok = {
            "In": value in expr.get("values", []),
            "NotIn": value not in expr.get("values", []),
            "Exists": expr["key"] in labels,
            "DoesNotExist": expr["key"] not in labels,
        }[expr["operator"]]
        if not ok:
            return False
    return True


def validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{kind.lower()}.monitoring.coreos.com_v1.json").read_text())
    return jsonschema.Draft202012Validator(schema)


# --- exporters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, port", [("redis", 6379), ("redis-state", 6379), ("redis-sentinel", 26379)])
def test_every_pod_carries_an_exporter_sidecar_for_its_own_instance(stack: Rendered, name: str, port: int) -> None:
    template = pod_template(stack, name)
    spec = template["spec"]
    main, exporter = spec["containers"]
    assert exporter["name"] == "exporter"
    assert exporter["image"] == "oliver006/redis_exporter:v1.45.0-alpine"
    # The wrapper from the pod's own script ConfigMap runs the exporter (tests/test_exporter_live.py
    # runs this very command line against real processes).
    config_dir = "/etc/redis-sentinel" if name == "redis-sentinel" else "/etc/redis"
    mode = "sentinel" if name == "redis-sentinel" else "redis"
    assert exporter["command"] == ["/bin/sh", f"{config_dir}/start-exporter.sh", mode]
    config = stack.find("ConfigMap", template["spec"]["volumes"][0]["configMap"]["name"])
    assert "@@" not in config["data"]["start-exporter.sh"]  # shipped, placeholders filled
    assert {"name": "config", "mountPath": config_dir, "readOnly": True} in exporter["volumeMounts"]
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 9121, "protocol": "TCP"}]
    # Hardened like the main container, sized from the settings.
    assert exporter["securityContext"] == main["securityContext"]
    assert exporter["resources"] == {
        "requests": {"cpu": "10m", "memory": "32Mi"},
        "limits": {"cpu": "100m", "memory": "64Mi"},
    }
    assert exporter["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert "readinessProbe" not in exporter  # pod readiness stays Redis' alone


@pytest.mark.parametrize("name, port", [("redis", 6379), ("redis-state", 6379), ("redis-sentinel", 26379)])
def test_the_exporter_dials_localhost_in_plaintext_and_its_own_pod_name_over_verified_tls(
    stack: Rendered, name: str, port: int
) -> None:
    spec = pod_template(stack, name)["spec"]
    exporter = spec["containers"][1]
    env = {e["name"]: e for e in exporter["env"]}
    if stack.stack == "dev":  # tls.enabled: false
        assert f"-redis.addr=redis://localhost:{port}" in exporter["args"]
        assert not any(a.startswith("-tls") or "skip-tls" in a for a in exporter["args"])
        assert "POD_NAME" not in env
        return
    # cert-manager's certificate names the pods' DNS names, not localhost (Go checks the name).
    assert f"-redis.addr=rediss://$(POD_NAME).{name}-headless.redis.svc.cluster.local:{port}" in exporter["args"]
    assert "-tls-ca-cert-file=/etc/redis-tls/ca.crt" in exporter["args"]
    assert not any("skip-tls" in a for a in exporter["args"])
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The certificate behind the Secret the exporter's CA comes from names this pod (the state tier
    # may share the cache's).
    secret = {v["name"]: v for v in spec["volumes"]}["exporter-tls"]["secret"]["secretName"]
    certificate = next(c for c in stack.kubernetes("Certificate") if c["spec"]["secretName"] == secret)
    assert f"{name}-0.{name}-headless.redis.svc.cluster.local" in certificate["spec"]["dnsNames"]
    assert {"name": "exporter-tls", "mountPath": "/etc/redis-tls", "readOnly": True} in exporter["volumeMounts"]


@pytest.mark.parametrize(
    "name, key",
    [("redis", "exporter-password"), ("redis-state", "exporter-password"), ("redis-sentinel", "sentinel-requirepass")],
)
def test_the_exporter_reads_only_its_own_password_file_and_never_gets_a_password_by_env_or_argv(
    stack: Rendered, name: str, key: str
) -> None:
    spec = pod_template(stack, name)["spec"]
    exporter = spec["containers"][1]
    env = {e["name"]: e for e in exporter["env"]}
    # No secretKeyRef: a rotation puts two lines in the Secret value; the wrapper sends the first.
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in exporter["env"])
    assert env["EXPORTER_BIN"]["value"] == "/redis_exporter"
    assert env.get("REDIS_USER", {}).get("value") == (None if name == "redis-sentinel" else "exporter")
    # The exporter would parse REDIS_PASSWORD_FILE as its JSON password map.
    assert "REDIS_PASSWORD_FILE" not in env and "REDIS_PASSWORD" not in env
    assert not any("password" in arg.lower() for arg in exporter["args"] + exporter["command"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in exporter["volumeMounts"]}
    assert mounts["exporter-auth"] == {"name": "exporter-auth", "mountPath": "/etc/redis-auth", "readOnly": True}
    assert "auth" not in mounts and "tls" not in mounts  # not the other users' passwords, not the private key
    # Whole-key projection (refreshed by the kubelet on rotation), not a subPath mount (never refreshed).
    assert volumes["exporter-auth"]["secret"]["items"] == [{"key": key, "path": key}]
    assert not any("subPath" in m for m in exporter["volumeMounts"])
    if stack.stack == "prod":
        assert volumes["exporter-tls"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


def test_exporter_image_and_resources_come_from_settings() -> None:
    rendered = render_with(
        "dev",
        {
            "dict-redis:monitoring": json.dumps(
                {
                    "enabled": True,
                    "exporterImage": "registry.example/redis_exporter:v1.45.0",
                    "exporterResources": {
                        "requests": {"cpu": "20m", "memory": "40Mi"},
                        "limits": {"cpu": "200m", "memory": "80Mi"},
                    },
                }
            )
        },
    )
    exporter = pod_template(rendered, "redis")["spec"]["containers"][1]
    assert exporter["image"] == "registry.example/redis_exporter:v1.45.0"
    assert exporter["resources"]["limits"] == {"cpu": "200m", "memory": "80Mi"}


# --- discovery ---------------------------------------------------------------------------------


def test_the_pod_monitor_selects_every_redis_and_sentinel_pod_and_nothing_else(stack: Rendered) -> None:
    monitor = stack.find("PodMonitor", "redis")
    spec = monitor["spec"]
    namespace = stack.kubernetes("Namespace")[0]["metadata"]["name"]
    assert monitor["metadata"]["namespace"] == namespace
    assert spec["namespaceSelector"] == {"matchNames": [namespace]}
    for name in WORKLOADS:
        labels = pod_template(stack, name)["metadata"]["labels"]
        assert selects(spec["selector"], labels), f"the PodMonitor does not select the {name} pods"
    # The smoke Job's pod carries the layer's labels but has no exporter: it must not be a target.
    for job in stack.kubernetes("Job"):
        assert not selects(spec["selector"], job["spec"]["template"]["metadata"].get("labels", {}))


def test_every_endpoint_port_is_a_named_port_of_each_selected_pod(stack: Rendered) -> None:
    spec = stack.find("PodMonitor", "redis")["spec"]
    for name in WORKLOADS:
        ports = {p["name"] for c in pod_template(stack, name)["spec"]["containers"] for p in c.get("ports", [])}
        for endpoint in spec["podMetricsEndpoints"]:
            assert endpoint["port"] in ports, f"{name} pods have no port named {endpoint['port']!r}"


def test_target_labels_come_from_labels_the_pods_really_carry(stack: Rendered) -> None:
    """The rules select on component=server|sentinel and tier=cache|state: the relabelings must
    find those pod labels (and a Sentinel's series get no tier)."""
    (endpoint,) = stack.find("PodMonitor", "redis")["spec"]["podMetricsEndpoints"]
    sources = {r["targetLabel"]: r["sourceLabels"][0] for r in endpoint["relabelings"]}
    assert set(sources) == set(TARGET_LABELS) == {"component", "stack", "tier"}
    for name in WORKLOADS:
        labels = pod_template(stack, name)["metadata"]["labels"]
        meta = {
            "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in k): v for k, v in labels.items()
        }
        assert meta[sources["component"]] == ("sentinel" if name == "redis-sentinel" else "server")
        assert meta[sources["stack"]] == stack.stack
        assert meta.get(sources["tier"]) == TIER_OF.get(name), name


def test_the_tiers_series_can_be_told_apart_by_the_tier_label_alone(stack: Rendered) -> None:
    """Each data tier's pods carry their own tier value, so ``tier="cache"`` never matches a
    state-tier series and the other way round."""
    (endpoint,) = stack.find("PodMonitor", "redis")["spec"]["podMetricsEndpoints"]
    tier_source = next(r for r in endpoint["relabelings"] if r["targetLabel"] == "tier")
    assert tier_source["sourceLabels"] == ["__meta_kubernetes_pod_label_dict_lbpay_com_br_tier"]
    values = {name: pod_template(stack, name)["metadata"]["labels"].get("dict.lbpay.com.br/tier") for name in WORKLOADS}
    assert values == {"redis": "cache", "redis-state": "state", "redis-sentinel": None}


def test_monitor_and_rule_carry_the_release_label_from_settings(prod: Rendered) -> None:
    for kind in ("PodMonitor", "PrometheusRule"):
        assert prod.find(kind, "redis")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    other = render_with(
        "prod", {"dict-redis:monitoring": json.dumps({"enabled": True, "monitorLabels": {"release": "prom-main"}})}
    )
    for kind in ("PodMonitor", "PrometheusRule"):
        assert other.find(kind, "redis")["metadata"]["labels"]["release"] == "prom-main"


def test_the_dashboard_config_map_has_the_sidecar_label_from_settings(prod: Rendered) -> None:
    assert prod.find("ConfigMap", "redis-dashboard")["metadata"]["labels"]["grafana_dashboard"] == "1"
    other = render_with(
        "prod",
        {
            "dict-redis:monitoring": json.dumps(
                {"enabled": True, "dashboardLabels": {"grafana.io/dashboard": "yes"}, "dashboardNamespace": "grafana"}
            )
        },
    )
    config_map = other.find("ConfigMap", "redis-dashboard")
    assert config_map["metadata"]["labels"]["grafana.io/dashboard"] == "yes"
    assert config_map["metadata"]["namespace"] == "grafana"


def test_the_network_policy_admits_the_monitoring_namespace_to_the_metrics_port_only(stack: Rendered) -> None:
    ingress = stack.find("NetworkPolicy", "redis")["spec"]["ingress"]
    metrics = [rule for rule in ingress if any(p["port"] == 9121 for p in rule["ports"])]
    assert metrics == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"protocol": "TCP", "port": 9121}],
        }
    ]
    others = [rule for rule in ingress if rule not in metrics]
    assert all(p["port"] in (6379, 26379) for rule in others for p in rule["ports"])


def test_monitoring_off_removes_sidecars_monitor_rules_dashboard_and_the_metrics_rule() -> None:
    rendered = render_with("prod", {"dict-redis:monitoring": json.dumps({"enabled": False})})
    kinds = {d["kind"] for d in rendered.kubernetes()}
    assert not kinds & {"PodMonitor", "PrometheusRule"}
    with pytest.raises(KeyError):
        rendered.find("ConfigMap", "redis-dashboard")
    for name in WORKLOADS:
        assert [c["name"] for c in pod_template(rendered, name)["spec"]["containers"]] != ["exporter"]
        assert len(pod_template(rendered, name)["spec"]["containers"]) == 1
    ports = {p["port"] for r in rendered.find("NetworkPolicy", "redis")["spec"]["ingress"] for p in r["ports"]}
    assert ports == {6379, 26379}


# --- CRD schemas --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["PodMonitor", "PrometheusRule"])
def test_custom_resources_match_the_prometheus_operator_schema(stack: Rendered, kind: str) -> None:
    (doc,) = stack.kubernetes(kind)
    errors = sorted(validator(kind).iter_errors(doc), key=str)
    assert errors == [], [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_the_schema_check_is_strict(prod: Rendered) -> None:
    """Unknown keys (snake_case instead of camelCase, typos) and bad durations are refused."""
    monitor = prod.find("PodMonitor", "redis")
    check = validator("PodMonitor")
    typo = json.loads(json.dumps(monitor))
    typo["spec"]["pod_metrics_endpoints"] = typo["spec"].pop("podMetricsEndpoints")
    assert not check.is_valid(typo)
    bad_interval = json.loads(json.dumps(monitor))
    bad_interval["spec"]["podMetricsEndpoints"][0]["interval"] = "30 seconds"
    assert not check.is_valid(bad_interval)
    rule = prod.find("PrometheusRule", "redis")
    bad_rule = json.loads(json.dumps(rule))
    bad_rule["spec"]["groups"][0]["rules"][0]["for"] = "1 minute"
    assert not validator("PrometheusRule").is_valid(bad_rule)


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "monitoring, message",
    [
        ({"enabled": True, "exporterImage": "oliver006/redis_exporter:latest"}, "monitoring.exporterImage"),
        ({"scrapeInterval": "10s", "scrapeTimeout": "15s"}, "monitoring.scrapeTimeout = '15s': must not exceed"),
        ({"scrapeInterval": "30 s"}, "monitoring.scrapeInterval = '30 s'"),
        ({"monitorLabels": {"release": "not valid!"}}, "monitoring.monitorLabels"),
        ({"exporterResources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "64Mi"}}},
         "monitoring.exporterResources.requests.memory = '1Gi'"),
        ({"enable": True}, "monitoring.enable: unknown key; valid keys here: dashboardLabels"),
    ],
)  # fmt: skip
def test_bad_monitoring_settings_name_the_key(monitoring: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings_from_config({"dict-redis:monitoring": json.dumps(monitoring)}, "prod")
    assert message in str(info.value)
