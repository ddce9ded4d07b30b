"""The ``PolicyApplied`` condition: does the running job apply the latest spec? Pure.

The agent reports the spec generation it applies and the fields it could not apply in
``status.appliedPolicy``. True when that generation is the object's and nothing was refused;
False with ``PolicyPending`` while the job lags its spec (or no job has reported yet), and with
``FieldNotApplied`` naming each refused field and its fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cairn_agent.resource import contract


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The condition's status, reason and message."""

    ok: bool
    reason: str
    message: str


def judge(status: Mapping[str, Any], generation: int | None) -> Verdict:
    """``PolicyApplied`` for ``status`` of an object at ``generation``."""
    applied = status.get(contract.APPLIED_POLICY)
    if not isinstance(applied, Mapping):
        return Verdict(False, "PolicyPending", "no running job has reported the policy it applies")
    observed = applied.get("observedGeneration")
    problems = [p for p in applied.get("problems") or [] if isinstance(p, Mapping)]
    if problems:
        text = "; ".join(f"{p.get('field')}: {p.get('message')}" for p in problems)
        return Verdict(False, "FieldNotApplied", f"the job keeps its previous value of {text}")
    if generation is not None and observed != generation:
        return Verdict(
            False,
            "PolicyPending",
            f"the job applies spec generation {observed}, the spec is at generation "
            f"{generation}; it picks edits up at its next step boundary",
        )
    return Verdict(True, "Applied", f"the job applies spec generation {observed}")
