"""Summary: ``status.phase`` and the per-Checkpoint metrics (runs after the other groups)."""

from __future__ import annotations

import kopf
from cairn_agent.resource import contract

from cairn_operator.handlers.common import (
    Obj,
    OperatorContext,
    key_of,
    pending_status,
    set_status,
    status_of,
)
from cairn_operator.reconcile.conditions import derive_phase


async def reconcile(obj: Obj, patch: kopf.Patch, ctx: OperatorContext) -> None:
    """Set the phase from what this event leaves behind; feed the metrics."""
    merged = {**status_of(obj), **(patch.get("status") or {})}
    conds = pending_status(obj, patch, contract.CONDITIONS)
    deleting = bool((obj.get("metadata") or {}).get("deletionTimestamp"))
    set_status(obj, patch, contract.PHASE, derive_phase(merged, conds, deleting))
    ctx.metrics.observe(
        key_of(obj), {**merged, contract.PHASE: patch.get("status", {}).get(contract.PHASE)}
    )


def forget(obj: Obj, ctx: OperatorContext) -> None:
    """Drop a deleted Checkpoint's metrics."""
    ctx.metrics.forget(key_of(obj))
