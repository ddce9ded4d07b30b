"""The ``Preemption`` section of ``kubectl cairn describe``.

Shows whether a final save fits in the pods' grace period (the ``PreemptionSafe`` condition the
operator sets, with its numbers) and the newest preemption the operator saw announced
(``status.lastPreemption``): what announced it, the save it asked for and the job's answer.
Pure and torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cairn_agent.cli import formatting
from cairn_agent.resource import contract


def section(obj: Mapping[str, Any], now: float) -> str:
    """The section; empty when the operator has said nothing about preemption yet."""
    status = obj.get("status") or {}
    safe = _condition(status, contract.COND_PREEMPTION_SAFE)
    last = status.get(contract.LAST_PREEMPTION)
    if safe is None and not isinstance(last, Mapping):
        return ""
    pairs: list[tuple[str, str]] = []
    if safe is not None:
        pairs.append(
            ("Safe", f"{safe.get('status')} ({safe.get('reason')}): {safe.get('message')}")
        )
    if isinstance(last, Mapping):
        pairs += _last(last, now)
    width = max(len(k) for k, _ in pairs) + 2
    lines = "\n".join(f"  {(k + ':').ljust(width)}{v}" for k, v in pairs)
    return f"Preemption:\n{lines}"


def _condition(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in status.get(contract.CONDITIONS) or ():
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return cond
    return None


def _ago(rfc3339: Any, now: float) -> str:
    age = formatting.age_of_unix(formatting.parse_rfc3339(rfc3339), now)
    return f"{rfc3339} ({formatting.human_age(age)} ago)" if rfc3339 else "-"


def _last(last: Mapping[str, Any], now: float) -> list[tuple[str, str]]:
    pairs = [
        ("Last", f"{last.get('reason')}: {last.get('message')}"),
        ("Announced", _ago(last.get("announcedAt"), now)),
        ("Deadline", str(last.get("deadline") or "-")),
        ("Request", str(last.get("requestId") or "-")),
        ("Signals", ", ".join(str(s) for s in last.get("signals") or ()) or "-"),
    ]
    outcome = last.get("outcome") or "Pending"
    if outcome == "Committed":
        answer = f"Committed iteration {last.get('iteration')} in {last.get('saveSeconds')}s"
    elif outcome == "Failed":
        answer = f"Failed: {last.get('message')}"
    else:
        answer = "Pending: the job has not answered yet"
    by = last.get("answeredBy")
    if by and by != last.get("requestId"):
        answer += f" (answered by {by})"
    pairs.append(("Save", answer))
    return pairs
