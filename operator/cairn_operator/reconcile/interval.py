"""The save interval that loses the least training time, from the job's own measurements.

The model (arXiv 2410.18124): a save period of ``Tc`` seconds is ``N`` training steps followed by
a save that stalls training for ``Ts``; failures arrive at rate ``1/MTBF`` of running time; each
costs the recovery ``Tr`` plus, on average, half a period of work redone. Availability (the
fraction of wall time spent on work that is kept) is then

    A(Tc) = (1 - Ts/Tc) / (1 + (Tc/2 + Tr) / MTBF)

and its maximum is at ``Tc* = Ts + sqrt(2·(MTBF + Tr)·Ts + Ts²)``. With ``Tr = 0`` and
``Ts ≪ MTBF`` that is Young/Daly's ``sqrt(2·Ts·MTBF)``. The expected fraction of time lost is
``1 - A``. The period converts to steps as ``N = (Tc - Ts) / step time``.

Estimators turn what the agent and the operator observed into the model's inputs, each with
where it came from (``Source``): the save cost is the median stall of recent saves (robust to
the odd slow save), the recovery time the median of restart-seen-to-resumed samples, and the
MTBF a conjugate blend of an optional prior with the observed run time and failures. Pure and
torch-free: the operator and ``bench/interval_sim.py`` call the same functions.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable
from typing import Literal

Source = Literal["measured", "prior", "measured+prior", "assumed", "missing"]
"""Where an input's value comes from; ``missing`` means there is no value."""

PRIOR_WEIGHT_FAILURES = 1.0
"""How many failures' worth of evidence the MTBF prior counts for.

The failure rate gets a Gamma prior equivalent to having seen this many failures in
``PRIOR_WEIGHT_FAILURES · prior`` seconds; the estimate is the inverse of the posterior mean rate,
``(k·prior + run time) / (k + failures)``. One failure's worth is the weakest prior that still
gives an estimate before the first failure; every observed failure then weighs as much as it.
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Estimate:
    """One input of the model and its provenance."""

    value: float | None
    """Seconds; None when ``source`` is ``missing``."""
    source: Source
    """Where the value comes from."""
    samples: int = 0
    """How many observations the value rests on (saves, recoveries, failures)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bounds:
    """The range the interval may take, in steps (``spec.save.adaptive``)."""

    min_steps: int
    """Never save more often than every this many steps."""
    max_steps: int
    """Never save less often than every this many steps."""

    def __post_init__(self) -> None:
        if self.min_steps < 1:
            raise ValueError(f"min_steps={self.min_steps} must be >= 1")
        if self.max_steps < self.min_steps:
            raise ValueError(
                f"max_steps={self.max_steps} is below min_steps={self.min_steps}; raise it"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TierInputs:
    """The model's inputs for one storage tier, in seconds (all positive except recovery)."""

    save_cost_s: float
    """Training time one save of this tier blocks (the stall, not the background write)."""
    step_s: float
    """Wall time of one training step."""
    mtbf_s: float
    """Mean running time between failures."""
    recovery_s: float
    """Time from a failure to training again (>= 0)."""

    def __post_init__(self) -> None:
        for name in ("save_cost_s", "step_s", "mtbf_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0 seconds")
        if not self.recovery_s >= 0:
            raise ValueError(f"recovery_s={self.recovery_s} must be >= 0 seconds")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Choice:
    """The interval chosen for one tier."""

    interval_steps: int
    """Save every this many steps (within the bounds)."""
    optimal_steps: float
    """The model's optimum before rounding and clamping."""
    expected_loss: float
    """Expected fraction of wall time lost at ``interval_steps`` (saves plus rework/recovery)."""
    clamped: Literal["min", "max"] | None
    """Which bound the optimum was clamped to, if any."""


def optimal_period_s(*, save_cost_s: float, mtbf_s: float, recovery_s: float) -> float:
    """``Tc* = Ts + sqrt(2·(MTBF + Tr)·Ts + Ts²)``: seconds from one save's start to the next."""
    ts = save_cost_s
    return ts + math.sqrt(2.0 * (mtbf_s + recovery_s) * ts + ts * ts)


def availability(*, period_s: float, save_cost_s: float, mtbf_s: float, recovery_s: float) -> float:
    """Fraction of wall time spent on work that is kept, at a save period of ``period_s``."""
    useful = max(0.0, 1.0 - save_cost_s / period_s)
    return useful / (1.0 + (period_s / 2.0 + recovery_s) / mtbf_s)


def expected_loss(inputs: TierInputs, interval_steps: float) -> float:
    """Expected fraction of wall time lost when saving every ``interval_steps`` steps."""
    period = interval_steps * inputs.step_s + inputs.save_cost_s
    return 1.0 - availability(
        period_s=period,
        save_cost_s=inputs.save_cost_s,
        mtbf_s=inputs.mtbf_s,
        recovery_s=inputs.recovery_s,
    )


def optimal_steps(inputs: TierInputs) -> float:
    """The model's optimal interval in (fractional) steps."""
    period = optimal_period_s(
        save_cost_s=inputs.save_cost_s, mtbf_s=inputs.mtbf_s, recovery_s=inputs.recovery_s
    )
    return (period - inputs.save_cost_s) / inputs.step_s


def _divisors_within(number: int, bounds: Bounds) -> list[int]:
    small = [d for d in range(1, math.isqrt(number) + 1) if number % d == 0]
    every = set(small) | {number // d for d in small}
    return sorted(d for d in every if bounds.min_steps <= d <= bounds.max_steps)


def _candidates(optimum: float, bounds: Bounds, divisor_of: int | None) -> list[int]:
    if divisor_of is not None:
        divisors = _divisors_within(divisor_of, bounds)
        if divisors:
            return divisors
    # The loss is convex in the period: the best integer is one of the two around the optimum.
    low = min(max(math.floor(optimum), bounds.min_steps), bounds.max_steps)
    return sorted({low, min(low + 1, bounds.max_steps)})


def choose(inputs: TierInputs, bounds: Bounds, *, divisor_of: int | None = None) -> Choice:
    """The interval within ``bounds`` that loses the least time.

    ``divisor_of`` (``spec.retention.keepEvery``) restricts the choice to its divisors, so every
    milestone the retention policy keeps is a step that gets saved; when none lies within the
    bounds the restriction is dropped.
    """
    optimum = optimal_steps(inputs)
    best = min(_candidates(optimum, bounds, divisor_of), key=lambda n: expected_loss(inputs, n))
    clamped: Literal["min", "max"] | None = None
    if optimum < bounds.min_steps:
        clamped = "min"
    elif optimum > bounds.max_steps:
        clamped = "max"
    return Choice(
        interval_steps=best,
        optimal_steps=optimum,
        expected_loss=expected_loss(inputs, best),
        clamped=clamped,
    )


def _clean(samples: Iterable[object]) -> list[float]:
    return [
        float(s)
        for s in samples
        if isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s) and s >= 0
    ]


def median(samples: Iterable[object]) -> float | None:
    """The p50 of the finite, non-negative numbers among ``samples``; None if there are none."""
    clean = _clean(samples)
    return statistics.median(clean) if clean else None


def estimate_save_cost(stalls: Iterable[object]) -> Estimate:
    """The median training stall of recent saves of one tier; missing before the first save."""
    clean = [s for s in _clean(stalls) if s > 0]
    if not clean:
        return Estimate(value=None, source="missing")
    return Estimate(value=statistics.median(clean), source="measured", samples=len(clean))


def estimate_recovery(samples: Iterable[object]) -> Estimate:
    """The median of restart-seen-to-resumed samples; 0 (assumed) before the first recovery."""
    clean = _clean(samples)
    if not clean:
        return Estimate(value=0.0, source="assumed")
    return Estimate(value=statistics.median(clean), source="measured", samples=len(clean))


def estimate_step_time(reported: object) -> Estimate:
    """The step time the agent reported, if it is a positive number."""
    clean = _clean([reported])
    if not clean or clean[0] <= 0:
        return Estimate(value=None, source="missing")
    return Estimate(value=clean[0], source="measured", samples=1)


def estimate_mtbf(*, run_s: float, failures: int, prior_s: float | None) -> Estimate:
    """Mean time between failures from ``failures`` in ``run_s`` seconds of running.

    With a prior: ``(k·prior + run) / (k + failures)`` (see ``PRIOR_WEIGHT_FAILURES``), so a
    quiet run lengthens the estimate and each failure shortens it. Without one: ``run /
    failures``, and missing before the first failure (a run that has not failed yet bounds the
    MTBF only from below, and a job that just started would otherwise save at ``minInterval``).
    """
    run = max(0.0, run_s)
    failures = max(0, failures)
    if prior_s is not None and prior_s > 0:
        k = PRIOR_WEIGHT_FAILURES
        source: Source = "measured+prior" if failures else "prior"
        return Estimate(value=(k * prior_s + run) / (k + failures), source=source, samples=failures)
    if failures == 0 or run <= 0:
        return Estimate(value=None, source="missing")
    return Estimate(value=run / failures, source="measured", samples=failures)


def moved_enough(published: int | None, proposed: int, threshold: float) -> bool:
    """Whether ``proposed`` differs from ``published`` by more than the relative ``threshold``."""
    if published is None or published <= 0:
        return True
    return abs(proposed - published) / published > threshold


def hold_or_move(published: int | None, choice: Choice, bounds: Bounds, threshold: float) -> int:
    """Hysteresis: keep the published interval unless the new one moved more than ``threshold``
    or the published one no longer lies within the bounds."""
    if published is None or not bounds.min_steps <= published <= bounds.max_steps:
        return choice.interval_steps
    if moved_enough(published, choice.interval_steps, threshold):
        return choice.interval_steps
    return published
