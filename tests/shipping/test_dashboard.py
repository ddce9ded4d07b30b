"""The Grafana dashboard the chart ships: every PromQL query names only metrics the operator
exports (read from its own registry), and the chart renders it as a sidecar-labelled ConfigMap
only when ``grafana.dashboard.enabled``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml
from cairn_operator.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cairn"
DASHBOARD = CHART / "dashboards" / "cairn.json"
METRIC = re.compile(r"\bcairn_[a-z0-9_]+\b")
# The series a family of each type exposes (Prometheus text format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
}


def exported_series() -> set[str]:
    """Every series name the operator's registry can expose."""
    names = set()
    for family in Metrics().registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def _queries(node: Any) -> Iterator[str]:
    """Every PromQL string of a dashboard: panel targets and template-variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            # A datasource variable's "query" is a plugin name, not PromQL: no parenthesis.
            is_promql = key in ("expr", "definition") or (key == "query" and "(" in str(value))
            if is_promql and isinstance(value, str):
                yield value
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def test_every_dashboard_query_uses_only_metrics_the_operator_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = list(_queries(dashboard))
    used = {name for query in queries for name in METRIC.findall(query)}
    assert len(queries) >= 10 and len(used) >= 10  # the panels are there
    assert used - exported_series() == set()
    # The dashboard covers what an SRE asks first.
    for needed in (
        "cairn_checkpoint_seconds_since_last_commit",
        "cairn_checkpoint_save_cost_seconds",
        "cairn_checkpoint_saves_failed_total",
        "cairn_checkpoint_job_restarts",
    ):
        assert needed in used


def test_a_query_naming_an_unknown_metric_is_caught() -> None:
    broken = {"panels": [{"targets": [{"expr": "rate(cairn_checkpoint_preemptions_total[5m])"}]}]}
    used = {name for query in _queries(broken) for name in METRIC.findall(query)}
    assert used - exported_series() == {"cairn_checkpoint_preemptions_total"}


def _render(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="cairn", namespace="cairn-system", is_install=True)
    return [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith(".txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def test_the_chart_ships_the_dashboard_only_when_enabled() -> None:
    assert not [d for d in _render(None) if d["kind"] == "ConfigMap"]  # off by default

    values = {"grafana": {"dashboard": {"enabled": True, "annotations": {"grafana_folder": "ML"}}}}
    (configmap,) = [d for d in _render(values) if d["kind"] == "ConfigMap"]
    kubernetes_validate.validate(configmap, "1.33.0", strict=True)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "ML"}
    assert configmap["metadata"]["namespace"] == "cairn-system"
    assert json.loads(configmap["data"]["cairn.json"]) == json.loads(DASHBOARD.read_text())
    report = helm.lint(CHART, values, strict=True, namespace="cairn-system", kube_version="v1.33.0")
    assert (report["errors"], [m for m in report["messages"] if m["severity"] >= 2]) == ([], [])
