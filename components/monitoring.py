"""Monitoring: the PodMonitor that finds every exporter sidecar, the PrometheusRule with the alerts,
and the Grafana dashboard ConfigMap.

A PodMonitor rather than a ServiceMonitor: the exporters are per pod, and there is no Service
that should carry a metrics port (a Service over the data pods would invite clients to write to
a replica). Its selector is the layer's pod labels and its endpoint the sidecars' port name, both
from ``components.topology``, so they match the StatefulSets by construction (and a test proves
it on the rendered objects). It selects by component (``server`` or ``sentinel``), not by name,
so the pods of both data tiers (``redis`` and ``redis-state``) and the Sentinels are targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import topology as t
from components.alerts import rule_groups
from components.dashboard import dashboard_json
from components.settings import Settings

MONITORING_API = "monitoring.coreos.com/v1"
# Pod labels copied onto every scraped series; the rules select on them (components/alerts.py).
# ``tier`` (cache or state) tells the two data tiers apart; Sentinel pods carry none, so their
# series have no ``tier`` label (a relabeling from an absent pod label sets nothing).
TARGET_LABELS = {
    "component": "app.kubernetes.io/component",
    "stack": "dict.lbpay.com.br/stack",
    "tier": t.TIER_LABEL,
}


def _meta_label(label: str) -> str:
    """Prometheus' discovery label for a pod label (every character not [a-zA-Z0-9_] becomes _)."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() or c == "_" else "_" for c in label)


def pod_monitor_spec(settings: Settings) -> dict[str, Any]:
    """The PodMonitor's spec, camelCase as the CRD wants it (CustomResource passes it verbatim)."""
    topo = t.Topology.of(settings)
    mon = settings.monitoring
    return {
        "selector": {
            "matchLabels": topo.part_of,
            "matchExpressions": [
                {"key": "app.kubernetes.io/component", "operator": "In", "values": ["server", "sentinel"]}
            ],
        },
        "namespaceSelector": {"matchNames": [settings.namespace]},
        "podMetricsEndpoints": [
            {
                "port": t.METRICS_PORT_NAME,
                "path": "/metrics",
                "scheme": "http",
                "interval": mon.scrape_interval,
                "scrapeTimeout": mon.scrape_timeout,
                "relabelings": [
                    {"action": "replace", "sourceLabels": [_meta_label(label)], "targetLabel": target}
                    for target, label in TARGET_LABELS.items()
                ],
            }
        ],
    }


@dataclass(frozen=True)
class MonitoringArgs:
    settings: Settings
    namespace: pulumi.Input[str]


class Monitoring(pulumi.ComponentResource):
    """What Prometheus (via prometheus-operator) and Grafana need to watch one stack."""

    pod_monitor_name: pulumi.Output[str]
    prometheus_rule_name: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dict-redis:index:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        topo = t.Topology.of(s)
        mon = s.monitoring
        # The labels the Prometheus installation selects monitors and rules by come last.
        labels = {**topo.common_labels, **mon.monitor_labels}

        pod_monitor = k8s.apiextensions.CustomResource(
            f"{name}-pod-monitor",
            api_version=MONITORING_API,
            kind="PodMonitor",
            metadata={"name": topo.pod_monitor, "namespace": args.namespace, "labels": labels},
            spec=pod_monitor_spec(s),
            opts=child,
        )
        rule = k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version=MONITORING_API,
            kind="PrometheusRule",
            metadata={"name": topo.prometheus_rule, "namespace": args.namespace, "labels": labels},
            spec=rule_groups(s),
            opts=child,
        )
        k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata={
                "name": topo.dashboard,
                "namespace": mon.dashboard_namespace or args.namespace,
                "labels": {**topo.common_labels, **mon.dashboard_labels},
            },
            data={f"dict-redis-{s.stack}.json": dashboard_json(s)},
            opts=child,
        )

        self.pod_monitor_name = pod_monitor.metadata.apply(lambda m: m["name"])
        self.prometheus_rule_name = rule.metadata.apply(lambda m: m["name"])
        self.register_outputs(
            {"pod_monitor_name": self.pod_monitor_name, "prometheus_rule_name": self.prometheus_rule_name}
        )
