"""Validation: the ``Valid`` condition, ``observedGeneration``, and Events on problems."""

from __future__ import annotations

import logging

import kopf
from cairn_agent.resource import contract
from cairn_agent.resource.status import saved_iterations

from cairn_operator.handlers.common import (
    Obj,
    OperatorContext,
    generation_of,
    post_event,
    ref,
    set_condition,
    set_status,
    status_of,
)
from cairn_operator.reconcile import conditions
from cairn_operator.reconcile.spec import read_spec
from cairn_operator.reconcile.validation import ValidationResult, validate

log = logging.getLogger(__name__)


def _condition(
    result: ValidationResult, ctx: OperatorContext, gen: int | None
) -> conditions.Condition:
    if result.errors:
        return conditions.make_condition(
            contract.COND_VALID,
            False,
            "InvalidSpec",
            "; ".join(result.errors),
            now=ctx.clock(),
            generation=gen,
        )
    message = "spec accepted" + (
        "; warnings: " + "; ".join(result.warnings) if result.warnings else ""
    )
    reason = "AcceptedWithWarnings" if result.warnings else "Accepted"
    return conditions.make_condition(
        contract.COND_VALID, True, reason, message, now=ctx.clock(), generation=gen
    )


async def reconcile(obj: Obj, patch: kopf.Patch, ctx: OperatorContext) -> None:
    """Judge the spec; set ``Valid`` and ``observedGeneration``; post an Event on a change."""
    saved = [s.iteration for s in saved_iterations(status_of(obj))]
    result = validate(read_spec(obj.get("spec") or {}), saved)
    gen = generation_of(obj)
    cond = _condition(result, ctx, gen)
    if gen is not None:
        set_status(obj, patch, contract.OBSERVED_GENERATION, gen)
    if not set_condition(obj, patch, cond):
        return
    log.info("%s: Valid=%s (%s)", ref(obj), cond["status"], cond["message"])
    if result.errors:
        post_event(obj, "Warning", "InvalidSpec", cond["message"])
    elif result.warnings:
        post_event(obj, "Warning", "SpecWarning", "; ".join(result.warnings))
