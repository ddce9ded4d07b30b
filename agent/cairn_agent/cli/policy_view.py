"""The ``Applied policy`` section of ``kubectl cairn describe``: what the running job applies.

Every effective value with where it came from (the spec, the training script, the operator's
adaptive interval), whether the job lags its spec, what it could not apply, and its answer to
the newest save request. Pure and torch-free.
"""

from __future__ import annotations

from typing import Any

from cairn_agent.resource import contract

_ROWS = (
    ("saveInterval", "save interval (steps)"),
    ("nonPersistentInterval", "non-persistent interval"),
    ("nonPersistentType", "non-persistent tier"),
    ("asyncEnabled", "async saves"),
    ("asyncPersistent", "persistent async worker"),
    ("replicationFactor", "replication factor"),
    ("replicationJump", "replication jump"),
    ("keepLast", "keep last"),
    ("keepEvery", "keep every"),
    ("pinned", "pinned"),
    ("retentionDryRun", "retention dry run"),
    ("verifyDeep", "deep verification"),
    ("saveStallSeconds", "save stall limit (s)"),
)


def section(obj: dict[str, Any]) -> str:
    """The section; says so when no running job has reported yet."""
    status = obj.get("status") or {}
    applied = status.get(contract.APPLIED_POLICY)
    generation = (obj.get("metadata") or {}).get("generation")
    if not isinstance(applied, dict):
        return "Applied policy:\n  no running job has reported the policy it applies"
    observed = applied.get("observedGeneration")
    lag = "" if observed == generation else f"  (LAGGING: the spec is at generation {generation})"
    lines = [f"Applied policy (spec generation {observed}){lag}:"]
    lines += _value_lines(applied)
    for problem in applied.get("problems") or []:
        lines.append(f"  NOT APPLIED {problem.get('field')}: {problem.get('message')}")
    lines += _request_lines(status.get(contract.LAST_SAVE_REQUEST))
    return "\n".join(lines)


def _value_lines(applied: dict[str, Any]) -> list[str]:
    values = applied.get("values") or {}
    sources = applied.get("sources") or {}
    width = max(len(title) for _, title in _ROWS) + 2
    lines = []
    for key, title in _ROWS:
        if key not in values:
            continue
        source = sources.get(key)
        origin = f"  (from {source})" if source else ""
        lines.append(f"  {(title + ':').ljust(width)}{_text(values[key])}{origin}")
    return lines


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _request_lines(answer: Any) -> list[str]:
    if not isinstance(answer, dict):
        return []
    text = (
        f"  last save request {answer.get('requestId')} ({answer.get('reason') or 'no reason'}): "
        f"{answer.get('outcome')}"
    )
    if answer.get("outcome") == "Committed":
        text += f", iteration {answer.get('iteration')} in {answer.get('saveSeconds')}s"
    elif answer.get("message"):
        text += f": {answer.get('message')}"
    return [text]
