"""Gauges of ``status.adaptiveInterval``: the chosen intervals, the expected loss and the inputs.

Rendered at scrape time by the collector in ``metrics`` from each Checkpoint's last observed
``status.adaptiveInterval`` (labels ``namespace``, ``name``, and ``tier`` where per tier). An
input that is missing has no sample, rather than a misleading zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from cairn_operator.reconcile.adaptive import TIERS

_LABELS = ("namespace", "name")
_TIER_LABELS = (*_LABELS, "tier")

# (metric name, help, field of status.adaptiveInterval.<tier>)
_PER_TIER = (
    ("cairn_checkpoint_adaptive_interval_steps", "Save interval published", "intervalSteps"),
    (
        "cairn_checkpoint_adaptive_optimal_interval_steps",
        "The model's optimal save interval before bounds and hysteresis",
        "optimalSteps",
    ),
    (
        "cairn_checkpoint_expected_loss_fraction",
        "Expected fraction of time lost to saves, rework and recovery at the published interval",
        "expectedLossFraction",
    ),
)
# (metric name, help, key of status.adaptiveInterval.inputs)
_INPUTS = (
    ("cairn_checkpoint_step_time_seconds", "Training step time", "stepTimeSeconds"),
    ("cairn_checkpoint_recovery_seconds", "Median restart-to-resumed time", "recoverySeconds"),
    ("cairn_checkpoint_mtbf_seconds", "Estimated mean time between failures", "mtbfSeconds"),
)


def _value(node: Any, key: str) -> float | None:
    value = node.get(key) if isinstance(node, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def families(items: Iterable[tuple[tuple[str, str], Mapping[str, Any] | None]]) -> list[Any]:
    """One gauge family per published quantity, over every Checkpoint with a value."""
    tiered = {n: GaugeMetricFamily(n, h, labels=_TIER_LABELS) for n, h, _ in _PER_TIER}
    cost = GaugeMetricFamily(
        "cairn_checkpoint_save_cost_seconds", "Median training stall per save", labels=_TIER_LABELS
    )
    inputs = {n: GaugeMetricFamily(n, h, labels=_LABELS) for n, h, _ in _INPUTS}
    for key, adaptive in items:
        if not adaptive:
            continue
        for tier in TIERS:
            section = adaptive.get(tier)
            for name, _, field in _PER_TIER:
                _add(tiered[name], [*key, tier], _value(section, field))
            cost_node = section.get("saveCostSeconds") if isinstance(section, Mapping) else None
            _add(cost, [*key, tier], _value(cost_node, "value"))
        for name, _, field in _INPUTS:
            _add(
                inputs[name], list(key), _value((adaptive.get("inputs") or {}).get(field), "value")
            )
    return [*tiered.values(), cost, *inputs.values()]


def _add(family: GaugeMetricFamily, labels: list[str], value: float | None) -> None:
    if value is not None:
        family.add_metric(labels, value)
