"""The alert rules and the dashboard queries, checked and unit-tested by the real promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.alerts import ALERTS, alert_rules, metric_names, rule_groups
from components.dashboard import PANELS, dashboard, panel_queries
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
    disconnected = next(r for r in dev if r["alert"] == "RedisDisconnectedReplicas")
    assert disconnected["expr"].endswith("< 4")  # 5 pods: the master should see 4 replicas
    other = alert_rules(settings_from_config({"namespace": "cache-b"}, "b"))
    assert all('namespace="cache-b"' in r["expr"] for r in other)


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
    assert len(ids) == len(set(ids)) == len(PANELS)
    assert all(t["datasource"]["uid"] == "${datasource}" for p in model["panels"] for t in p["targets"])


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
