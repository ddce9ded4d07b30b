"""Adaptive save interval: ``status.adaptiveInterval`` and ``SaveIntervalChanged`` Events.

Runs after the restarts group, whose pending ``status.restarts`` it reads. With
``spec.save.policy: Fixed`` the key is removed; with ``Adaptive`` the pure
``reconcile.adaptive.next_status`` decides, and a changed value is written (the agent applies the
published intervals as the effective ``save.interval`` / ``save.nonPersistentInterval``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf
from cairn_agent.resource import contract

from cairn_operator.handlers.common import (
    Obj,
    OperatorContext,
    generation_of,
    pending_status,
    post_event,
    ref,
    set_status,
    status_of,
)
from cairn_operator.reconcile import adaptive
from cairn_operator.reconcile.spec import read_spec

log = logging.getLogger(__name__)


async def reconcile(obj: Obj, patch: kopf.Patch, ctx: OperatorContext) -> None:
    """Publish the adaptive intervals; an Event when one of them moves."""
    spec = read_spec(obj.get("spec") or {})
    previous = pending_status(obj, patch, contract.ADAPTIVE_INTERVAL)
    if spec.save_policy != "Adaptive" or spec.adaptive is None:
        # Validation reports an unusable Adaptive policy; the job keeps its fixed intervals.
        set_status(obj, patch, contract.ADAPTIVE_INTERVAL, None)
        return
    merged = {**status_of(obj), **(patch.get("status") or {})}
    value = adaptive.next_status(
        spec.adaptive,
        merged,
        previous if isinstance(previous, Mapping) else None,
        now=ctx.clock(),
        keep_every=spec.retention.keep_every,
        fallback=spec.save_interval,
        generation=generation_of(obj),
    )
    if value is None or value == previous:
        return
    # A JSON merge patch deletes only the keys it sets to null: null out what the value dropped.
    stored = status_of(obj).get(contract.ADAPTIVE_INTERVAL)
    patch.setdefault("status", {})[contract.ADAPTIVE_INTERVAL] = _nulling(stored, value)
    for tier in adaptive.TIERS:
        _announce(obj, tier, previous, value)


def _nulling(old: Any, new: Any) -> Any:
    """``new`` with None for every key of ``old`` it lacks, at every level of nesting."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    out = {key: _nulling(old.get(key), value) for key, value in new.items()}
    out.update({key: None for key in old if key not in new})
    return out


def _steps(value: Any, tier: str) -> int | None:
    steps = (value or {}).get(tier, {}).get("intervalSteps") if isinstance(value, Mapping) else None
    return steps if isinstance(steps, int) else None


def _announce(obj: Obj, tier: str, previous: Any, value: Mapping[str, Any]) -> None:
    old, new = _steps(previous, tier), _steps(value, tier)
    if new is None or new == old:
        return
    inputs = value.get("inputs") or {}
    mtbf = inputs.get("mtbfSeconds") or {}
    cost = (value.get(tier) or {}).get("saveCostSeconds") or {}
    message = (
        f"{tier} save interval {old or 'unset'} -> {new} steps: save cost "
        f"{cost.get('value')}s, MTBF {mtbf.get('value')}s ({mtbf.get('source')}, "
        f"{mtbf.get('failures')} failure(s)), recovery "
        f"{(inputs.get('recoverySeconds') or {}).get('value')}s; expected loss "
        f"{value[tier]['expectedLossFraction']:.2%}"
    )
    log.info("%s: %s", ref(obj), message)
    post_event(obj, "Normal", "SaveIntervalChanged", message)
