"""The ``Save interval`` section of ``kubectl cairn describe`` (``spec.save.policy: Adaptive``).

Shows what the operator published in ``status.adaptiveInterval``: the interval per tier, the
expected fraction of time lost, and each input with where it came from. Pure and torch-free.
"""

from __future__ import annotations

from typing import Any

from cairn_agent.cli import formatting
from cairn_agent.resource import contract

_TIER_TITLES = (("persistent", "Persistent"), ("nonPersistent", "Non-persistent"))


def policy_text(save: dict[str, Any]) -> str:
    """``policy Adaptive (100..5000 steps)`` for the spec summary; empty for Fixed."""
    if save.get("policy") != "Adaptive":
        return ""
    adaptive = save.get("adaptive") or {}
    return f"policy Adaptive ({adaptive.get('minInterval')}..{adaptive.get('maxInterval')} steps)"


def section(obj: dict[str, Any], now: float) -> str:
    """The section, or empty when the policy is Fixed."""
    save = (obj.get("spec") or {}).get("save") or {}
    if save.get("policy") != "Adaptive":
        return ""
    adaptive = save.get("adaptive") or {}
    title = (
        f"Save interval (policy Adaptive, {adaptive.get('minInterval')}.."
        f"{adaptive.get('maxInterval')} steps, re-computed at most every "
        f"{adaptive.get('recomputePeriodSeconds', 600)}s when it moves over "
        f"{float(adaptive.get('changeThreshold', 0.1)):.0%}):"
    )
    published = (obj.get("status") or {}).get(contract.ADAPTIVE_INTERVAL)
    if not published:
        return f"{title}\n  not computed yet: the job has not reported to the operator"
    return f"{title}\n" + _indent(_body(published, now))


def _body(published: dict[str, Any], now: float) -> str:
    computed = published.get("computedAt")
    age = formatting.human_age(
        formatting.age_of_unix(formatting.parse_rfc3339(computed), now) if computed else None
    )
    pairs: list[tuple[str, str]] = [
        ("State", f"{published.get('state')}: {published.get('message')}"),
        ("Computed", f"{computed} ({age} ago)" if computed else "-"),
    ]
    pairs += [(title, _tier(published.get(key))) for key, title in _TIER_TITLES]
    inputs = published.get("inputs") or {}
    pairs += [
        ("Step time", _estimate(inputs.get("stepTimeSeconds"), "s")),
        ("Recovery", _estimate(inputs.get("recoverySeconds"), "s", "p50 of")),
        ("MTBF", _mtbf(inputs.get("mtbfSeconds"))),
    ]
    width = max(len(k) for k, _ in pairs) + 2
    return "\n".join(f"{(k + ':').ljust(width)}{v}" for k, v in pairs)


def _tier(tier: dict[str, Any] | None) -> str:
    if not tier:
        return "-"
    clamped = f", clamped to {tier['clampedTo']}" if tier.get("clampedTo") else ""
    return (
        f"every {tier.get('intervalSteps')} steps (~{_duration(tier.get('intervalSeconds'))}; "
        f"optimum {tier.get('optimalSteps')}{clamped}), expected loss "
        f"{_percent(tier.get('expectedLossFraction'))}; save cost "
        f"{_estimate(tier.get('saveCostSeconds'), 's', 'p50 of')}"
    )


def _estimate(est: dict[str, Any] | None, unit: str, what: str = "from") -> str:
    if not est or est.get("value") is None:
        return f"unknown ({(est or {}).get('source', 'missing')})"
    samples = f", {what} {est['samples']}" if est.get("samples") else ""
    return f"{est['value']}{unit} ({est.get('source')}{samples})"


def _mtbf(est: dict[str, Any] | None) -> str:
    if not est or est.get("value") is None:
        return f"unknown ({(est or {}).get('source', 'missing')})"
    return (
        f"{_duration(est['value'])} ({est.get('source')}: {est.get('failures', 0)} failure(s) in "
        f"{_duration(est.get('runSeconds'))} of running)"
    )


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _percent(fraction: Any) -> str:
    return f"{fraction:.2%}" if isinstance(fraction, int | float) else "-"


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())
