"""When the job has answered ``spec.saveNow`` (shared by the agent and the operator)."""

from __future__ import annotations

from cairn_agent.resource.save_request import answered, requested

SPEC = {"saveNow": {"requestId": "preempt-pod-1", "requestedAt": "2026-11-30T10:00:00Z"}}


def _answer(request_id: str, committed_at: str, outcome: str = "Committed") -> dict[str, object]:
    return {
        "lastSaveRequest": {
            "requestId": request_id,
            "outcome": outcome,
            "committedAt": committed_at,
        }
    }


def test_no_request_is_answered_and_a_named_answer_answers_it() -> None:
    assert requested({}) is None and answered({}, {})
    assert requested(SPEC) == "preempt-pod-1"
    assert not answered(SPEC, {})
    assert answered(SPEC, _answer("preempt-pod-1", "2026-11-30T10:00:05Z"))
    assert answered(SPEC, _answer("preempt-pod-1", "", outcome="Failed"))  # answered, badly


def test_a_sigterm_save_after_the_request_answers_it_and_one_before_does_not() -> None:
    # The pod got SIGTERM before its next step boundary: the final save is the one asked for.
    assert answered(SPEC, _answer("sigterm-3-133", "2026-11-30T10:00:02Z"))
    assert not answered(SPEC, _answer("sigterm-3-133", "2026-11-30T09:59:00Z"))
    assert not answered(SPEC, _answer("sigterm-3-133", "2026-11-30T10:00:02Z", outcome="Failed"))
    assert not answered(SPEC, _answer("manual-1", "2026-11-30T10:00:02Z"))
