"""Resume point: ``status.resumeFrom``, ``ResumePointSelected``, and ``ResumeFallback`` Events."""

from __future__ import annotations

import logging

import kopf
from cairn_agent.resource import contract

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
from cairn_operator.reconcile.resume_point import choose_resume_point
from cairn_operator.reconcile.spec import read_spec

log = logging.getLogger(__name__)


async def reconcile(obj: Obj, patch: kopf.Patch, ctx: OperatorContext) -> None:
    """Choose and publish the resume point; an Event when corruption moved it back."""
    spec = read_spec(obj.get("spec") or {})
    decision = choose_resume_point(spec, status_of(obj))
    changed = set_status(obj, patch, contract.RESUME_FROM, decision.resume_from(spec.path))
    set_condition(
        obj,
        patch,
        conditions.make_condition(
            contract.COND_RESUME_POINT_SELECTED,
            decision.iteration is not None,
            decision.reason,
            decision.message,
            now=ctx.clock(),
            generation=generation_of(obj),
        ),
    )
    if not changed:
        return
    log.info("%s: resume point -> %s (%s)", ref(obj), decision.iteration, decision.message)
    if decision.fallback_from is not None:
        post_event(obj, "Warning", "ResumeFallback", decision.message)
