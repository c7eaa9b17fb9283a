"""The alert rules and the dashboard queries, checked and unit-tested by the real promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.alerts import ALERTS, alert_rules, metric_names, rule_groups
from components.dashboard import PANELS, ROWS, dashboard, panel_queries
from components.settings import settings_from_config
from smoke.local.render import ROOT, Rendered, write_render
from tests.alert_cases import CASES, promtool_test_files, promtool_tests
from tests.support import require_binaries

RUNBOOKS = ROOT / "docs" / "runbooks"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    require_binaries("promtool")
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def prod_rules_dir(prod: Rendered, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prod render as ``make render`` writes it; its prometheus/ holds the plain rules file."""
    out = tmp_path_factory.mktemp("rules") / "prod"
    write_render(prod, out)
    return out / "prometheus"


def _urls(rules_file: Path) -> dict[str, str]:
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return {r["alert"]: r["annotations"]["runbook_url"] for g in groups for r in g["rules"]}


def test_the_render_writes_the_rules_file_equal_to_the_prometheus_rule(prod: Rendered, prod_rules_dir: Path) -> None:
    plain = yaml.safe_load((prod_rules_dir / "redis-rules.yaml").read_text())
    assert plain == prod.find("PrometheusRule", "redis")["spec"]
    assert plain == rule_groups(settings_from_config({}, "prod"))  # prod file sets no alert knobs
    assert [r["alert"] for r in plain["groups"][0]["rules"]] == [a.name for a in ALERTS]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_promtool_accepts_the_rules_of_each_stack(stack: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    rendered: Rendered = request.getfixturevalue(stack)
    write_render(rendered, tmp_path / stack)
    result = promtool("check", "rules", "redis-rules.yaml", cwd=tmp_path / stack / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    names = {a.name for a in ALERTS}
    assert {c.alert for c in CASES if c.fires} == names
    assert {c.alert for c in CASES if not c.fires} == names
    assert {c.alert for c in CASES} <= names


def test_promtool_unit_tests_pass_for_every_alert(prod_rules_dir: Path) -> None:
    rules = prod_rules_dir / "redis-rules.yaml"
    files = promtool_test_files(rules.name, _urls(rules))
    assert sum(len(f["tests"]) for f in files.values()) == len(CASES)
    for interval, tests in files.items():
        name = f"redis-rules_{interval}_test.yaml"
        (prod_rules_dir / name).write_text(yaml.safe_dump(tests, sort_keys=False, width=200))
        result = promtool("test", "rules", name, cwd=prod_rules_dir)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_wrong_expectation(prod_rules_dir: Path) -> None:
    """The harness can fail: a firing case whose alert is expected not to fire is reported."""
    rules = prod_rules_dir / "redis-rules.yaml"
    firing = next(c for c in CASES if c.alert == "RedisDown" and c.fires)
    flipped = type(firing)(firing.alert, firing.series, firing.eval_time)
    tests = promtool_tests(rules.name, _urls(rules), (flipped,))
    (prod_rules_dir / "flipped_test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", "flipped_test.yaml", cwd=prod_rules_dir)
    assert result.returncode != 0
    assert "RedisDown" in result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_a_runbook_in_this_repo() -> None:
    for rule in alert_rules(settings_from_config({}, "prod")):
        assert rule["labels"]["severity"] in ("critical", "warning")
        notes = rule["annotations"]
        assert notes["summary"] and len(notes["description"]) > 40
        assert "$" not in notes["summary"].replace("$labels", "").replace("$value", ""), "unexpanded placeholder"
        url = notes["runbook_url"]
        assert url.startswith("https://github.com/lbpay/dict-redis/blob/main/docs/runbooks/")
        runbook = RUNBOOKS / url.rsplit("/", 1)[1]
        assert runbook.is_file(), f"{rule['alert']}: no runbook {runbook.relative_to(ROOT)}"
        text = runbook.read_text()
        assert text.startswith(f"# {rule['alert']}")
        for section in ("## What it means", "## What to check", "## What to do"):
            assert section in text, f"{runbook.name} lacks '{section}'"
        assert "```" in text, f"{runbook.name} gives no commands"


def test_the_backup_alert_follows_the_backup_interval() -> None:
    settings = settings_from_config({}, "prod")
    hourly = next(r for r in alert_rules(settings, backup_interval_seconds=3600) if r["alert"] == "RedisBackupMissing")
    assert "> 7200" in hourly["expr"] and 'cronjob="redis-backup"' in hourly["expr"]
    assert "2h" in hourly["annotations"]["summary"]
    with pytest.raises(ValueError, match="backup_interval_seconds = 0"):
        alert_rules(settings, backup_interval_seconds=0)


def test_rules_are_scoped_to_their_stack() -> None:
    dev = alert_rules(settings_from_config({"redis": {"replicas": 5}}, "dev"))
    for rule in dev:
        assert 'namespace="redis"' in rule["expr"] and rule["labels"]["namespace"] == "redis"
    other = alert_rules(settings_from_config({"namespace": "cache-b"}, "b"))
    assert all('namespace="cache-b"' in r["expr"] for r in other)


def _rules(config: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in alert_rules(settings_from_config(config or {}, "prod"))}


def test_each_tier_is_judged_against_its_own_settings() -> None:
    rules = _rules(
        {
            "redis": {"replicas": 5, "minReplicasMaxLag": 20, "maxclients": 20000},
            "state": {"replicas": 3, "minReplicasMaxLag": 5, "maxclients": 2000},
        }
    )
    disconnected = rules["RedisDisconnectedReplicas"]["expr"]
    assert 'tier="cache",role="master"}) < 4)' in disconnected  # 5 pods: the master should see 4 replicas
    assert 'tier="state",role="master"}) < 2)' in disconnected
    lag = rules["RedisReplicationLagHigh"]["expr"]
    assert 'tier="cache"}) > 20)' in lag and 'tier="state"}) > 5)' in lag
    connections = rules["RedisTooManyConnections"]["expr"]
    assert 'tier="cache"} / 20000 >' in connections and 'tier="state"} / 2000 >' in connections
    # The description quotes the number of the tier the alert is about.
    description = rules["RedisReplicationLagHigh"]["annotations"]["description"]
    assert '{{ if eq $labels.tier "cache" }}20{{ end }}{{ if eq $labels.tier "state" }}5{{ end }}' in description


def test_the_cache_rules_read_only_the_cache_tier_and_the_state_rules_only_the_state_tier() -> None:
    rules = _rules()
    for name in ("RedisCacheHitRateLow", "RedisMemoryHigh", "RedisEvictions"):
        assert 'tier="cache"' in rules[name]["expr"] and 'tier="state"' not in rules[name]["expr"], name
    for name in ("RedisStateMemoryHigh", "RedisStateTierFull", "RedisStateEvictions", "RedisStateEvictionPolicy"):
        assert 'tier="state"' in rules[name]["expr"] and 'tier="cache"' not in rules[name]["expr"], name


def test_the_availability_rules_cover_every_tier() -> None:
    """No availability rule is limited to one tier: either it reads both tiers' pods, or it is
    written once per tier; the rules that count count per tier (or per Sentinel master)."""
    rules = _rules()
    per_pod = ("RedisDown", "RedisReplicaLinkDown", "RedisReplicationOffsetLagHigh", "RedisRejectedConnections",
               "RedisRdbSaveFailed", "RedisAofWriteFailed")  # fmt: skip
    for name in per_pod:
        assert "tier=" not in rules[name]["expr"] and 'component="server"' in rules[name]["expr"], name
    for name in ("RedisDisconnectedReplicas", "RedisReplicationLagHigh", "RedisTooManyConnections"):
        assert 'tier="cache"' in rules[name]["expr"] and 'tier="state"' in rules[name]["expr"], name
    for name in ("RedisMissingMaster", "RedisTooManyMasters"):
        assert "count by (tier)" in rules[name]["expr"], name
    assert '"tier", "cache"' in rules["RedisMissingMaster"]["expr"]  # a silent tier still counts as none
    assert '"tier", "state"' in rules["RedisMissingMaster"]["expr"]
    quorum_lost = rules["RedisSentinelQuorumLost"]["expr"]
    assert "max by (master_name)" in quorum_lost
    assert '"master_name", "mymaster"' in quorum_lost and '"master_name", "dictstate"' in quorum_lost
    assert "min by (master_name)" in rules["RedisSentinelQuorumAtRisk"]["expr"]


def test_the_state_tier_alerts_are_those_the_issue_asks_for() -> None:
    rules = _rules()
    high, full, evicted = rules["RedisStateMemoryHigh"], rules["RedisStateTierFull"], rules["RedisStateEvictions"]
    assert (high["labels"]["severity"], full["labels"]["severity"]) == ("warning", "critical")
    assert "> 0.8 and" in high["expr"] and "> 0.9 and" in full["expr"]
    assert evicted["labels"]["severity"] == "critical"
    assert (
        evicted["expr"]
        == 'increase(redis_evicted_keys_total{namespace="redis",component="server",tier="state"}[10m]) > 0'
    )
    for rule in (high, full):  # what a full state tier does to the callers
        assert "retryable error" in rule["annotations"]["description"]
        assert "replays of completed requests still work" in rule["annotations"]["description"]


def test_metric_names_reads_names_not_labels_functions_or_keywords() -> None:
    expr = (
        'max by (namespace, pod) (rate(redis_a_total{x="y",b=~"c|d"}[5m])) / on (pod) group_left (role) '
        'redis_b > 0.9 and absent(kube_c{q="1"}) or vector(1e-9)'
    )
    assert metric_names(expr) == {"redis_a_total", "redis_b", "kube_c"}
    assert metric_names("time() - kube_cronjob_created") == {"kube_cronjob_created"}


# --- the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_covers_what_the_issue_asks_for(prod: Rendered) -> None:
    config_map = prod.find("ConfigMap", "redis-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    import json

    model = json.loads(text)
    assert model == dashboard(settings_from_config({}, "prod"))
    titles = " | ".join(p["title"] for p in model["panels"]).lower()
    for topic in ("throughput", "hit rate", "latency", "maxmemory", "evictions", "expirations", "clients",
                  "replication", "sentinel", "persistence", "backup"):  # fmt: skip
        assert topic in titles, topic
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids)) == len(PANELS) + len(ROWS)
    assert all(t["datasource"]["uid"] == "${datasource}" for p in model["panels"] for t in p.get("targets", []))


def test_the_dashboard_has_a_row_per_tier_with_its_memory_evictions_and_throughput() -> None:
    model = dashboard(settings_from_config({}, "prod"))
    rows: dict[str, list[dict[str, Any]]] = {}
    for panel in model["panels"]:
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], [])
        else:
            current.append(panel)
    cache = rows["Cache tier (Sentinel master mymaster, evictable)"]
    state = rows["State tier (Sentinel master dictstate, noeviction)"]
    for tier, panels in (("cache", cache), ("state", state)):
        titles = " | ".join(p["title"] for p in panels).lower()
        for topic in ("throughput", "memory used vs maxmemory", "evictions"):
            assert topic in titles, (tier, topic)
        exprs = [t["expr"] for p in panels for t in p["targets"]]
        other = "state" if tier == "cache" else "cache"
        assert all(f'tier="{tier}"' in e and f'tier="{other}"' not in e for e in exprs), tier
    # The rows stack without overlapping: each starts below everything before it.
    bottom = 0
    for panel in model["panels"]:
        grid = panel["gridPos"]
        if panel["type"] == "row":
            assert grid["y"] >= bottom
        bottom = max(bottom, grid["y"] + grid["h"])


def test_promtool_accepts_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel expression wrapped as a recording rule: promtool parses and type-checks it."""
    queries = panel_queries(settings_from_config({}, "prod"))
    assert len(queries) >= 20
    rules: dict[str, Any] = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    (tmp_path / "dashboard-queries.yaml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", "dashboard-queries.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    """The check above can fail: an unbalanced expression is refused."""
    rules = {"groups": [{"name": "g", "rules": [{"record": "r:x", "expr": "sum(rate(redis_up[5m])"}]}]}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", "broken.yaml", cwd=tmp_path)
    assert result.returncode != 0
