"""The Grafana dashboard of one stack, built from Python data.

Panels are (title, unit, queries) rows; every query is plain PromQL scoped to the stack's namespace
(no Grafana template variables inside expressions), so tests can hand each one to promtool and to
the live metric check unchanged. The only variable is the data source.

The panels sit in Grafana rows: one per data tier (issue 13) with what tells the tiers apart
(throughput, memory used vs maxmemory, evictions: normal on the cache, never on the state tier),
then one for what both tiers and the Sentinels share (latency, clients, replication, the Sentinels'
view, persistence, backup), where the ``tier`` label and the pod names tell the tiers apart.
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
PANEL_HEIGHT = 8  # grid units; two panels side by side (12 of 24 wide)
ROW_HEIGHT = 1


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]  # (legend, PromQL with $server/$cache/$state/$sentinel/$ns_match)
    description: str = ""


@dataclass(frozen=True)
class Row:
    """A Grafana row: a heading (which may use the placeholders) over its panels."""

    title: str
    panels: tuple[Panel, ...]


def _tier_panels(tier: str, title: str) -> tuple[Panel, ...]:
    """Throughput, memory and evictions of one tier; ``$tier`` in a query becomes ``$cache`` or ``$state``."""

    def queries(*pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple((legend, expr.replace("$tier", f"${tier}")) for legend, expr in pairs)

    memory = queries(
        ("used {{pod}}", "redis_memory_used_bytes{$tier}"),
        ("maxmemory {{pod}}", "redis_memory_max_bytes{$tier}"),
        ("fragmentation {{pod}}", "redis_mem_fragmentation_ratio{$tier}"),
    )
    evictions = queries(
        ("evicted {{pod}}", "rate(redis_evicted_keys_total{$tier}[5m])"),
        ("expired {{pod}}", "rate(redis_expired_keys_total{$tier}[5m])"),
    )
    if tier == "state":
        memory += (
            ("80 % (RedisStateMemoryHigh) {{pod}}", "redis_memory_max_bytes{$state} * $state_memory_high"),
            ("90 % (RedisStateTierFull) {{pod}}", "redis_memory_max_bytes{$state} * $state_memory_full"),
        )
        memory_note = (
            "noeviction: at maxmemory the state tier refuses writes and new claims fail with a retryable "
            "error. RedisStateMemoryHigh warns at 80 %, RedisStateTierFull pages at 90 % (of the master)."
        )
        evictions_note = "Evictions must stay 0 here: RedisStateEvictions pages on a single evicted key."
    else:
        memory_note = "At maxmemory the cache tier's policy evicts; RedisMemoryHigh warns at 90 %."
        evictions_note = "Evictions are how a full cache makes room; RedisEvictions warns after 15 minutes of them."
    return (
        Panel(
            f"{title}: throughput (commands/s)",
            "ops",
            queries(("{{pod}}", "sum by (pod) (rate(redis_commands_processed_total{$tier}[5m]))")),
            "Commands processed per second by each pod of the tier.",
        ),
        Panel(f"{title}: memory used vs maxmemory", "bytes", memory, memory_note),
        Panel(f"{title}: evictions and expirations (keys/s)", "ops", evictions, evictions_note),
    )


ROWS: tuple[Row, ...] = (
    Row(
        "Cache tier (Sentinel master $cache_master, evictable)",
        (
            *_tier_panels("cache", "Cache tier"),
            Panel(
                "Cache tier: hit rate",
                "percentunit",
                (
                    (
                        "hit rate",
                        "sum(rate(redis_keyspace_hits_total{$cache}[5m])) / clamp_min(sum(rate("
                        "redis_keyspace_hits_total{$cache}[5m])) + sum(rate(redis_keyspace_misses_total"
                        "{$cache}[5m])), 1e-9)",
                    ),
                ),
                "Keyspace hits over lookups on the cache tier; the seed's target is above 70 %.",
            ),
        ),
    ),
    Row("State tier (Sentinel master $state_master, noeviction)", _tier_panels("state", "State tier")),
    Row(
        "Both tiers and the Sentinels",
        (
            Panel(
                "Command latency (mean per command)",
                "s",
                (
                    (
                        "{{tier}} {{cmd}}",
                        "sum by (tier, cmd) (rate(redis_commands_duration_seconds_total{$server}[5m])) "
                        "/ sum by (tier, cmd) (rate(redis_commands_total{$server}[5m])) > 0",
                    ),
                ),
                "Server-side time per call (excludes the network); the seed's target is p95 below 5 ms.",
            ),
            Panel(
                "Clients",
                "short",
                (
                    ("connected {{pod}}", "redis_connected_clients{$server}"),
                    ("blocked {{pod}}", "redis_blocked_clients{$server}"),
                    ("maxclients (cache)", "vector($cache_maxclients)"),
                    ("maxclients (state)", "vector($state_maxclients)"),
                    ("rejected/s {{pod}}", "rate(redis_rejected_connections_total{$server}[5m])"),
                ),
            ),
            Panel(
                "Replication link and lag",
                "short",
                (
                    ("link up {{pod}}", "redis_master_link_up{$server}"),
                    (
                        "replicas on the {{tier}} master",
                        "max by (tier) (redis_connected_slaves{$server} and on (pod) "
                        'redis_instance_info{$server,role="master"})',
                    ),
                    ("lag s {{pod}} {{slave_ip}}", "redis_connected_slave_lag_seconds{$server}"),
                    (
                        "offset lag bytes {{pod}} {{slave_ip}}",
                        "redis_master_repl_offset{$server} - on (namespace, pod) group_right "
                        "redis_connected_slave_offset_bytes{$server}",
                    ),
                ),
            ),
            Panel(
                "Sentinel view",
                "short",
                (
                    ("ok Sentinels {{master_name}} ({{pod}})", "redis_sentinel_master_ok_sentinels{$sentinel}"),
                    ("ok replicas {{master_name}} ({{pod}})", "redis_sentinel_master_ok_slaves{$sentinel}"),
                    ("CKQUORUM ok {{master_name}} ({{pod}})", "redis_sentinel_master_ckquorum_status{$sentinel}"),
                    ("Sentinel up ({{pod}})", "redis_up{$sentinel}"),
                ),
                "Each Sentinel's view of each master it monitors ($cache_master: cache, $state_master: state).",
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
        ),
    ),
)
# Every panel with queries, in dashboard order (the rows are headings only).
PANELS: tuple[Panel, ...] = tuple(panel for row in ROWS for panel in row.panels)


def panel_queries(settings: Settings, backup_interval_seconds: int | None = None) -> list[str]:
    """Every PromQL expression of the dashboard, as Grafana will run it."""
    model = dashboard(settings, backup_interval_seconds)
    return [q["expr"] for panel in model["panels"] for q in panel.get("targets", [])]


def dashboard(settings: Settings, backup_interval_seconds: int | None = None) -> dict[str, Any]:
    """The dashboard model Grafana imports (what the sidecar reads from the ConfigMap)."""
    # The same placeholders as the alert rules: one place for selectors and thresholds.
    ctx = placeholders(settings, backup_interval_seconds)
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels: list[dict[str, Any]] = []
    y = 0
    for row in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": Template(row.title).substitute(ctx),
                "collapsed": False,
                "gridPos": {"h": ROW_HEIGHT, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += ROW_HEIGHT
        for index, panel in enumerate(row.panels):
            panels.append(
                {
                    "id": len(panels) + 1,
                    "type": "timeseries",
                    "title": panel.title,
                    "description": Template(panel.description).substitute(ctx),
                    "datasource": datasource,
                    # Two panels side by side under the row's heading.
                    "gridPos": {
                        "h": PANEL_HEIGHT,
                        "w": 12,
                        "x": (index % 2) * 12,
                        "y": y + (index // 2) * PANEL_HEIGHT,
                    },
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
        y += -(-len(row.panels) // 2) * PANEL_HEIGHT
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
