"""Choosing the iteration the next (re)start of a job resumes from (``status.resumeFrom``).

Policies: ``LatestVerified`` (newest verified, else newest committed), ``LatestCommitted`` and
``Pinned``. An iteration the agent reported corrupt is never chosen: the decision falls back to
the newest good one older than it and says so (``fallback_from``), so the handler can post a
``ResumeFallback`` Event.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping
from typing import Any

from cairn_agent.resource.status import SavedIteration, corrupt_iterations, saved_iterations
from cairn_agent.storage import layout

from cairn_operator.reconcile.spec import SpecView

SOURCE_PERSISTENT = "persistent"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResumeDecision:
    """The chosen resume point, or why there is none."""

    iteration: int | None
    """Chosen iteration; None when nothing can be resumed from."""
    reason: str
    """CamelCase reason (also the condition's reason)."""
    message: str
    """Human explanation."""
    fallback_from: int | None = None
    """The iteration the policy preferred but which is corrupt, if that moved the choice."""

    def resume_from(self, root: str) -> dict[str, Any] | None:
        """``status.resumeFrom`` for this decision."""
        if self.iteration is None:
            return None
        return {
            "iteration": self.iteration,
            "path": posixpath.join(root, layout.iteration_dir_name(self.iteration)),
            "source": SOURCE_PERSISTENT,
            "reason": self.reason,
        }


def _preferred(
    policy: str, saved: list[SavedIteration], pinned_it: int | None
) -> tuple[int | None, str]:
    if policy == "Pinned":
        return pinned_it, "Pinned"
    if policy == "LatestVerified":
        verified = [s.iteration for s in saved if s.verified]
        if verified:
            return max(verified), "LatestVerified"
        return (saved[-1].iteration, "NoVerifiedCheckpoint") if saved else (None, "NoCheckpoint")
    return (saved[-1].iteration, "LatestCommitted") if saved else (None, "NoCheckpoint")


def _fallback(
    saved: list[SavedIteration], pins: tuple[int, ...], bad: Mapping[int, str], below: int
) -> int | None:
    """Newest good candidate older than ``below``: verified first, then committed, then pinned."""
    older = [s for s in saved if s.iteration < below and s.iteration not in bad]
    for group in ([s.iteration for s in older if s.verified], [s.iteration for s in older]):
        if group:
            return max(group)
    pinned = [p for p in pins if p < below and p not in bad]
    return max(pinned) if pinned else None


def choose_resume_point(spec: SpecView, status: Mapping[str, Any]) -> ResumeDecision:
    """Apply ``spec.resume.policy`` to what the agent reported."""
    saved = saved_iterations(status)
    bad = corrupt_iterations(status)
    preferred, reason = _preferred(spec.resume_policy, saved, spec.resume_iteration)
    if preferred is None:
        return ResumeDecision(iteration=None, reason=reason, message="no committed checkpoint yet")
    if preferred not in bad:
        return ResumeDecision(
            iteration=preferred,
            reason=reason,
            message=f"resume from iteration {preferred} ({reason})",
        )
    chosen = _fallback(saved, spec.retention.pinned, bad, preferred)
    why = f"iteration {preferred} is corrupt ({bad[preferred]})"
    if chosen is None:
        return ResumeDecision(
            iteration=None,
            reason="NoValidCheckpoint",
            message=f"{why} and no older good one exists",
            fallback_from=preferred,
        )
    return ResumeDecision(
        iteration=chosen,
        reason="FallbackFromCorrupt",
        fallback_from=preferred,
        message=f"{why}; falling back to iteration {chosen}",
    )
