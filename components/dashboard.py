"""The Grafana dashboard of one stack, built from Python data.

Panels are (title, unit, queries) rows; every query is plain PromQL scoped to the stack's namespace
(no Grafana template variables inside expressions), so tests can hand each one to promtool and to
the live metric check unchanged. The only variable is the data source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from string import Template
from typing import Any

from components.alerts import placeholders
from components.settings import Settings

# Grafana's dashboard schema version these panels are written for (Grafana 10/11).
SCHEMA_VERSION = 39


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]  # (legend, PromQL with $server/$sentinel/$ns_match)
    description: str = ""


PANELS: tuple[Panel, ...] = (
    Panel(
        "Throughput (commands/s)",
        "ops",
        (("{{pod}}", "sum by (pod) (rate(redis_commands_processed_total{$server}[5m]))"),),
        "Commands processed per second by each Redis pod.",
    ),
    Panel(
        "Cache hit rate",
        "percentunit",
        (
            (
                "hit rate",
                "sum(rate(redis_keyspace_hits_total{$server}[5m])) / clamp_min(sum(rate(redis_keyspace_hits_total"
                "{$server}[5m])) + sum(rate(redis_keyspace_misses_total{$server}[5m])), 1e-9)",
            ),
        ),
        "Keyspace hits over lookups across the stack; the seed's target is above 70 %.",
    ),
    Panel(
        "Command latency (mean per command)",
        "s",
        (
            (
                "{{cmd}}",
                "sum by (cmd) (rate(redis_commands_duration_seconds_total{$server}[5m])) "
                "/ sum by (cmd) (rate(redis_commands_total{$server}[5m])) > 0",
            ),
        ),
        "Server-side time per call (excludes the network); the seed's target is p95 below 5 ms.",
    ),
    Panel(
        "Memory used vs maxmemory",
        "bytes",
        (
            ("used {{pod}}", "redis_memory_used_bytes{$server}"),
            ("maxmemory {{pod}}", "redis_memory_max_bytes{$server}"),
            ("fragmentation {{pod}}", "redis_mem_fragmentation_ratio{$server}"),
        ),
    ),
    Panel(
        "Evictions and expirations (keys/s)",
        "ops",
        (
            ("evicted {{pod}}", "rate(redis_evicted_keys_total{$server}[5m])"),
            ("expired {{pod}}", "rate(redis_expired_keys_total{$server}[5m])"),
        ),
    ),
    Panel(
        "Clients",
        "short",
        (
            ("connected {{pod}}", "redis_connected_clients{$server}"),
            ("blocked {{pod}}", "redis_blocked_clients{$server}"),
            ("maxclients", "vector($maxclients)"),
            ("rejected/s {{pod}}", "rate(redis_rejected_connections_total{$server}[5m])"),
        ),
    ),
    Panel(
        "Replication link and lag",
        "short",
        (
            ("link up {{pod}}", "redis_master_link_up{$server}"),
            (
                "replicas on master",
                'max(redis_connected_slaves{$server} and on (pod) redis_instance_info{$server,role="master"})',
            ),
            ("lag s {{slave_ip}}", "redis_connected_slave_lag_seconds{$server}"),
            (
                "offset lag bytes {{slave_ip}}",
                "redis_master_repl_offset{$server} - on (namespace, pod) group_right "
                "redis_connected_slave_offset_bytes{$server}",
            ),
        ),
    ),
    Panel(
        "Sentinel view",
        "short",
        (
            ("ok Sentinels ({{pod}})", "redis_sentinel_master_ok_sentinels{$sentinel}"),
            ("ok replicas ({{pod}})", "redis_sentinel_master_ok_slaves{$sentinel}"),
            ("CKQUORUM ok ({{pod}})", "redis_sentinel_master_ckquorum_status{$sentinel}"),
            ("Sentinel up ({{pod}})", "redis_up{$sentinel}"),
        ),
    ),
    Panel(
        "Persistence status",
        "short",
        (
            ("last RDB save ok {{pod}}", "redis_rdb_last_bgsave_status{$server}"),
            ("last AOF write ok {{pod}}", "redis_aof_last_write_status{$server}"),
            ("seconds since RDB save {{pod}}", "time() - redis_rdb_last_save_timestamp_seconds{$server}"),
            ("changes since save {{pod}}", "redis_rdb_changes_since_last_save{$server}"),
            ("AOF size {{pod}}", "redis_aof_current_size_bytes{$server}"),
        ),
    ),
    Panel(
        "Backup age",
        "s",
        (
            (
                "since last successful backup",
                'time() - kube_cronjob_status_last_successful_time{$ns_match,cronjob="$backup_cronjob"}',
            ),
            ("limit (2 x interval)", "vector($backup_max_age)"),
        ),
        "From kube-state-metrics; RedisBackupMissing fires above the limit.",
    ),
)


def panel_queries(settings: Settings, backup_interval_seconds: int | None = None) -> list[str]:
    """Every PromQL expression of the dashboard, as Grafana will run it."""
    return [q["expr"] for panel in dashboard(settings, backup_interval_seconds)["panels"] for q in panel["targets"]]


def dashboard(settings: Settings, backup_interval_seconds: int | None = None) -> dict[str, Any]:
    """The dashboard model Grafana imports (what the sidecar reads from the ConfigMap)."""
    # The same placeholders as the alert rules: one place for selectors and thresholds.
    ctx = placeholders(settings, backup_interval_seconds)
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels = []
    for index, panel in enumerate(PANELS):
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": panel.title,
                "description": panel.description,
                "datasource": datasource,
                # Two panels per row, 8 units high.
                "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
                "targets": [
                    {
                        "refId": chr(ord("A") + i),
                        "datasource": datasource,
                        "expr": Template(expr).substitute(ctx),
                        "legendFormat": legend,
                    }
                    for i, (legend, expr) in enumerate(panel.queries)
                ],
            }
        )
    return {
        "uid": f"dict-redis-{settings.stack}",
        "title": f"DICT Redis cache ({settings.stack}, namespace {settings.namespace})",
        "tags": ["dict", "redis"],
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json(settings: Settings, backup_interval_seconds: int | None = None) -> str:
    return json.dumps(dashboard(settings, backup_interval_seconds), indent=2, sort_keys=True) + "\n"
