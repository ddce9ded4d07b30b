"""``PolicyApplied``: whether the running job follows the latest spec (reads the agent's report)."""

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
    status_of,
)
from cairn_operator.reconcile import conditions
from cairn_operator.reconcile.policy_applied import judge

log = logging.getLogger(__name__)


async def reconcile(obj: Obj, patch: kopf.Patch, ctx: OperatorContext) -> None:
    """Set ``PolicyApplied``; an Event when a field cannot be applied."""
    gen = generation_of(obj)
    verdict = judge(status_of(obj), gen)
    cond = conditions.make_condition(
        contract.COND_POLICY_APPLIED,
        verdict.ok,
        verdict.reason,
        verdict.message,
        now=ctx.clock(),
        generation=gen,
    )
    if not set_condition(obj, patch, cond):
        return
    log.info("%s: PolicyApplied=%s (%s)", ref(obj), cond["status"], verdict.message)
    if verdict.reason == "FieldNotApplied":
        post_event(obj, "Warning", "PolicyNotApplied", verdict.message)
