"""Whether the job has answered the Checkpoint's ``spec.saveNow`` request. Torch-free.

Both halves ask: the agent, so that a restarted job does not save again for a request answered
before it started; the operator, so that a new preemption signal joins a request still pending
instead of asking twice. A request is answered when ``status.lastSaveRequest`` names it, or when
the job committed a save on SIGTERM (``sigterm-*``) after the request was made: that save is the
one the request asked for, only made sooner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cairn_agent.resource import contract
from cairn_agent.resource.spec import section
from cairn_agent.resource.times import parse_time

SIGTERM_PREFIX: Final = "sigterm-"
"""Request ids the agent gives the final save it makes on SIGTERM."""


def requested(spec: Mapping[str, Any]) -> str | None:
    """``spec.saveNow.requestId``, if set."""
    request = section(spec, "saveNow").get("requestId")
    return request if isinstance(request, str) and request else None


def answered(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """True when the job answered the current ``spec.saveNow`` request (or there is none)."""
    request = requested(spec)
    if request is None:
        return True
    answer = status.get(contract.LAST_SAVE_REQUEST)
    if not isinstance(answer, Mapping):
        return False
    if answer.get("requestId") == request:
        return True
    return _sigterm_save_after(answer, section(spec, "saveNow").get("requestedAt"))


def _sigterm_save_after(answer: Mapping[str, Any], requested_at: Any) -> bool:
    answer_id = answer.get("requestId")
    if not isinstance(answer_id, str) or not answer_id.startswith(SIGTERM_PREFIX):
        return False
    if answer.get("outcome") != "Committed":
        return False
    committed, asked = parse_time(answer.get("committedAt")), parse_time(requested_at)
    return committed is not None and asked is not None and committed >= asked
