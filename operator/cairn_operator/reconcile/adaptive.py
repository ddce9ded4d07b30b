"""``status.adaptiveInterval``: the interval ``spec.save.policy: Adaptive`` publishes, and why.

What the operator reads (written by the agent, rank 0):

- ``status.saveStats.stepTimeSeconds``: wall time of one training step (saves excluded);
- ``status.saveStats.persistent.recentStallSeconds`` and ``...nonPersistent.recentStallSeconds``:
  how long recent saves of each tier blocked training (the whole save when synchronous, only
  the staging when the async worker writes), newest last;
- ``status.lastResume.time`` (when the job resumed) and its own ``status.restarts.lastRestartTime``.

A *failure* is a restart followed by a resume: the pair's distance is one recovery sample, and
however many pods a restart replaced, it counts once. The evidence for the MTBF accumulates in
``observation`` (since when, failures, downtime, recent recovery samples), which changes only
when a new failure is seen; the published intervals change at most once per
``recomputePeriodSeconds`` and only when they move by more than ``changeThreshold`` (or leave
the bounds), so that one watch event's write, echoed back, changes nothing and saves keep a
steady rhythm. Pure functions of (policy, status, previous value, now).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any, Final, Literal

from cairn_agent.resource import contract
from cairn_agent.resource.times import format_time, parse_time

from cairn_operator.reconcile import interval

Tier = Literal["persistent", "nonPersistent"]
TIERS: Final[tuple[Tier, ...]] = ("persistent", "nonPersistent")
MAX_RECOVERY_SAMPLES: Final = 8
STATE_ACTIVE: Final = "Active"
STATE_WAITING: Final = "WaitingForData"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdaptivePolicy:
    """``spec.save.adaptive`` (with ``spec.save.policy: Adaptive``)."""

    bounds: interval.Bounds
    """``minInterval`` .. ``maxInterval`` in steps."""
    expected_mtbf_s: float | None = None
    """``expectedMTBFSeconds``: prior MTBF for a job without failure history."""
    recompute_period_s: float = 600.0
    """``recomputePeriodSeconds``: the published interval changes at most this often."""
    change_threshold: float = 0.1
    """``changeThreshold``: a relative move smaller than this keeps the published interval."""

    def __post_init__(self) -> None:
        if self.recompute_period_s <= 0:
            raise ValueError(f"recompute_period_s={self.recompute_period_s} must be > 0")
        if not 0 <= self.change_threshold < 1:
            raise ValueError(f"change_threshold={self.change_threshold} must be in [0, 1)")


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def read_policy(save: Mapping[str, Any]) -> AdaptivePolicy | None:
    """``spec.save.adaptive`` (whatever ``spec.save.policy``); None if absent or its bounds are
    unusable."""
    adaptive = save.get("adaptive")
    if not isinstance(adaptive, Mapping):
        return None
    low, high = adaptive.get("minInterval"), adaptive.get("maxInterval")
    if not isinstance(low, int) or not isinstance(high, int) or not 1 <= low <= high:
        return None
    prior = _number(adaptive.get("expectedMTBFSeconds"))
    period = _number(adaptive.get("recomputePeriodSeconds"))
    threshold = _number(adaptive.get("changeThreshold"))
    return AdaptivePolicy(
        bounds=interval.Bounds(min_steps=low, max_steps=high),
        expected_mtbf_s=prior if prior and prior > 0 else None,
        recompute_period_s=period if period and period > 0 else 600.0,
        change_threshold=threshold if threshold is not None and 0 <= threshold < 1 else 0.1,
    )


# --- the evidence: failures and recoveries ------------------------------------------------------


def _start(status: Mapping[str, Any], now: dt.datetime) -> dt.datetime | None:
    """When observation begins: the job's resume, or now once it reports save statistics."""
    resumed = parse_time((status.get(contract.LAST_RESUME) or {}).get("time"))
    if resumed is not None:
        return min(resumed, now)
    return now if status.get(contract.SAVE_STATS) else None


def _new_failure(obs: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[str, float] | None:
    """(restart time, recovery seconds) of a restart→resume pair not yet counted."""
    restart_raw = (status.get(contract.RESTARTS) or {}).get("lastRestartTime")
    restarted = parse_time(restart_raw)
    resumed = parse_time((status.get(contract.LAST_RESUME) or {}).get("time"))
    since = parse_time(obs.get("since"))
    counted = parse_time(obs.get("lastRestartTime"))
    # Timestamps have second precision: a resume in the same second as the restart may as well
    # precede it (a crash right after resuming), so only a later resume completes the pair.
    if restarted is None or resumed is None or since is None or resumed <= restarted:
        return None
    if restarted <= since or (counted is not None and restarted <= counted):
        return None
    return format_time(restarted), (resumed - restarted).total_seconds()


def observe(
    previous: Mapping[str, Any] | None, status: Mapping[str, Any], now: dt.datetime
) -> dict[str, Any] | None:
    """The observation after this event (None until the job has reported anything)."""
    if previous and parse_time(previous.get("since")):
        obs = dict(previous)
    else:
        start = _start(status, now)
        if start is None:
            return None
        obs = {"since": format_time(start), "failures": 0, "downtimeSeconds": 0}
    found = _new_failure(obs, status)
    if found is not None:
        restart, recovery = found
        samples = [*(obs.get("recentRecoverySeconds") or []), round(recovery, 1)]
        obs["failures"] = int(obs.get("failures", 0)) + 1
        obs["downtimeSeconds"] = round(float(obs.get("downtimeSeconds", 0)) + recovery, 1)
        obs["recentRecoverySeconds"] = samples[-MAX_RECOVERY_SAMPLES:]
        obs["lastRestartTime"] = restart
    return obs


def run_seconds(obs: Mapping[str, Any], now: dt.datetime) -> float:
    """Running time observed: wall time since ``since`` less the downtime of recoveries."""
    since = parse_time(obs.get("since")) or now
    return max(0.0, (now - since).total_seconds() - float(obs.get("downtimeSeconds", 0)))


# --- the computation ------------------------------------------------------------------------------


def _estimate_dict(est: interval.Estimate, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"source": est.source, "samples": est.samples, **extra}
    if est.value is not None:
        out["value"] = round(est.value, 3)
    return out


def _sticky(est: interval.Estimate, previous: Mapping[str, Any] | None) -> interval.Estimate:
    """A missing measurement keeps the value published before (a restarted agent reports empty
    statistics until its first save; the job should not fall back to the script's interval)."""
    if est.value is not None or not previous or _number(previous.get("value")) is None:
        return est
    return interval.Estimate(
        value=_number(previous.get("value")),
        source=previous.get("source", "measured"),
        samples=int(previous.get("samples", 0)),
    )


def _inputs(
    policy: AdaptivePolicy,
    status: Mapping[str, Any],
    obs: Mapping[str, Any],
    previous: Mapping[str, Any],
    now: dt.datetime,
) -> dict[str, interval.Estimate]:
    stats = status.get(contract.SAVE_STATS) or {}
    old = previous.get("inputs") or {}
    return {
        "stepTimeSeconds": _sticky(
            interval.estimate_step_time(stats.get("stepTimeSeconds")), old.get("stepTimeSeconds")
        ),
        "recoverySeconds": interval.estimate_recovery(obs.get("recentRecoverySeconds") or ()),
        "mtbfSeconds": interval.estimate_mtbf(
            run_s=run_seconds(obs, now),
            failures=int(obs.get("failures", 0)),
            prior_s=policy.expected_mtbf_s,
        ),
    }


def _tier(
    tier: Tier,
    policy: AdaptivePolicy,
    status: Mapping[str, Any],
    inputs: Mapping[str, interval.Estimate],
    previous: Mapping[str, Any],
    keep_every: int | None,
) -> dict[str, Any] | None:
    old = previous.get(tier) or {}
    stalls = ((status.get(contract.SAVE_STATS) or {}).get(tier) or {}).get("recentStallSeconds")
    cost = _sticky(interval.estimate_save_cost(stalls or ()), old.get("saveCostSeconds"))
    step, mtbf = inputs["stepTimeSeconds"].value, inputs["mtbfSeconds"].value
    if cost.value is None or step is None or mtbf is None:
        return None
    model = interval.TierInputs(
        save_cost_s=cost.value,
        step_s=step,
        mtbf_s=mtbf,
        recovery_s=inputs["recoverySeconds"].value or 0.0,
    )
    choice = interval.choose(model, policy.bounds, divisor_of=keep_every)
    published = _int_or_none(old.get("intervalSteps"))
    steps = interval.hold_or_move(published, choice, policy.bounds, policy.change_threshold)
    out: dict[str, Any] = {
        "intervalSteps": steps,
        "optimalSteps": round(choice.optimal_steps, 1),
        "intervalSeconds": round(steps * step + cost.value, 1),
        "expectedLossFraction": round(interval.expected_loss(model, steps), 5),
        "saveCostSeconds": _estimate_dict(cost),
    }
    if choice.clamped:
        out["clampedTo"] = "minInterval" if choice.clamped == "min" else "maxInterval"
    return out


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _missing(inputs: Mapping[str, interval.Estimate], status: Mapping[str, Any]) -> list[str]:
    stalls = ((status.get(contract.SAVE_STATS) or {}).get("persistent") or {}).get(
        "recentStallSeconds"
    )
    missing = []
    if interval.estimate_save_cost(stalls or ()).value is None:
        missing.append("a persistent save's stall (status.saveStats.persistent)")
    if inputs["stepTimeSeconds"].value is None:
        missing.append("the step time (status.saveStats.stepTimeSeconds)")
    if inputs["mtbfSeconds"].value is None:
        missing.append("a first failure, or a prior in spec.save.adaptive.expectedMTBFSeconds")
    return missing


def _waiting_message(missing: list[str], fallback: int | None) -> str:
    keep = f"spec.save.interval={fallback}" if fallback else "the training script's interval"
    return f"keeping {keep} until there is {'; '.join(missing)}"


def compute(
    policy: AdaptivePolicy,
    status: Mapping[str, Any],
    obs: Mapping[str, Any],
    previous: Mapping[str, Any],
    *,
    now: dt.datetime,
    keep_every: int | None,
    fallback: int | None,
) -> dict[str, Any]:
    """A fresh ``status.adaptiveInterval`` from the current evidence (hysteresis applied)."""
    inputs = _inputs(policy, status, obs, previous, now)
    tiers = {t: _tier(t, policy, status, inputs, previous, keep_every) for t in TIERS}
    result: dict[str, Any] = {
        "computedAt": format_time(now),
        "inputs": {
            name: _estimate_dict(est, **_extra(name, obs, now)) for name, est in inputs.items()
        },
        "observation": dict(obs),
    }
    result.update({t: v for t, v in tiers.items() if v is not None})
    if tiers["persistent"] is None:
        result["state"] = STATE_WAITING
        result["message"] = _waiting_message(_missing(inputs, status), fallback)
    else:
        result["state"] = STATE_ACTIVE
        result["message"] = _active_message(result)
    return result


def _extra(name: str, obs: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    if name != "mtbfSeconds":
        return {}
    return {"runSeconds": round(run_seconds(obs, now)), "failures": int(obs.get("failures", 0))}


def _active_message(result: Mapping[str, Any]) -> str:
    persistent = result["persistent"]
    text = (
        f"persistent saves every {persistent['intervalSteps']} steps "
        f"(expected loss {persistent['expectedLossFraction']:.2%})"
    )
    local = result.get("nonPersistent")
    if local:
        text += f"; non-persistent every {local['intervalSteps']} steps"
    return text


def _due(
    policy: AdaptivePolicy, previous: Mapping[str, Any], now: dt.datetime, generation: int | None
) -> bool:
    """A period has passed since the last computation, the spec changed (new bounds apply at
    once), or a published interval left the bounds."""
    computed = parse_time(previous.get("computedAt"))
    if computed is None or (now - computed).total_seconds() >= policy.recompute_period_s:
        return True
    if previous.get("specGeneration") != generation:
        return True
    low, high = policy.bounds.min_steps, policy.bounds.max_steps
    published = [_int_or_none((previous.get(t) or {}).get("intervalSteps")) for t in TIERS]
    return any(steps is not None and not low <= steps <= high for steps in published)


def next_status(
    policy: AdaptivePolicy,
    status: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    *,
    now: dt.datetime,
    keep_every: int | None = None,
    fallback: int | None = None,
    generation: int | None = None,
) -> dict[str, Any] | None:
    """``status.adaptiveInterval`` after this event; None before the job reported anything.

    ``keep_every`` restricts intervals to its divisors (retention milestones get saved);
    ``fallback`` is ``spec.save.interval``, named in the message while data is missing;
    ``generation`` is the Checkpoint's ``metadata.generation`` (a spec edit recomputes at once).
    """
    prev = previous or {}
    obs = observe(prev.get("observation"), status, now)
    if obs is None:
        return None
    due = not prev or _due(policy, prev, now, generation)
    if not due and prev.get("state") == STATE_ACTIVE:
        return {**prev, "observation": obs}
    fresh = compute(policy, status, obs, prev, now=now, keep_every=keep_every, fallback=fallback)
    if generation is not None:
        fresh["specGeneration"] = generation
    # Leaving WaitingForData publishes at once; otherwise at most once per period.
    if due or fresh["state"] == STATE_ACTIVE:
        return fresh
    return {**prev, "observation": obs}
