"""Adaptive save interval against fixed ones, on synthetic runs with failures.

Each scenario is a training run of ``HORIZON_DAYS`` of wall time with steps of ``STEP_S``
seconds, synchronous saves that stall training for a save cost ``Ts``, failures drawn from an
exponential distribution of running time with mean ``MTBF``, and a recovery (restart seen ->
training again) of about ``RECOVERY_S`` after each. A failure loses the work since the last
completed save (a save interrupted by the failure does not count). Goodput is the training time
kept divided by the wall time.

Policies compared on the same failure traces (``SEEDS`` per scenario, seeded RNG):

- ``adaptive_prior`` / ``adaptive_no_prior``: ``spec.save.policy: Adaptive``, run through the
  operator's own ``cairn_operator.reconcile.adaptive.next_status`` (estimators, bounds,
  recomputation period, hysteresis), fed at every save and every resume with what the agent and
  the operator would report: noisy stall measurements (lognormal 20 % jitter, 5 % of saves
  reported 10x slower), the step time, restart and resume times. One starts from a fleet-wide
  prior MTBF of 24 h (wrong by up to 24x here), the other without one (it keeps the fallback
  interval of 1,000 steps until the first failure);
- ``hindsight_fixed``: the best single fixed interval for the scenario, found afterwards by a
  grid search over the same traces (an upper bound no real fixed choice reaches);
- ``every_1000_steps`` and ``every_30_min``: common fixed choices;
- ``model_true_inputs``: the model's interval computed from the true MTBF, save cost and
  recovery (what the adaptive policy converges to).

Writes ``bench/results/interval.json`` with ``adaptive_over_hindsight_goodput``: the minimum over
every scenario and both adaptive variants of adaptive goodput / hindsight goodput (goal >= 0.98).
Run: ``python -m bench.interval_sim`` (tens of seconds).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from cairn_agent.resource.times import format_time
from cairn_operator.reconcile import adaptive, interval

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "interval.json"

STEP_S = 4.0
HORIZON_DAYS = 30
RECOVERY_S = 300.0
MTBF_HOURS = (1, 3, 6, 12, 24, 48)
SAVE_COSTS_S = (5.0, 30.0, 120.0, 300.0)
SEEDS = 4
PRIOR_MTBF_S = 24 * 3600.0
FALLBACK_STEPS = 1000
BOUNDS = interval.Bounds(min_steps=10, max_steps=50_000)
GRID = np.unique(np.round(np.geomspace(10, 50_000, 400)).astype(int))
GOAL = 0.98
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trace:
    """One run's failures: running time before each failure and the recovery after it."""

    uptimes: np.ndarray
    """Seconds of running between (re)starts and failures; the last one ends at the horizon."""
    recoveries: np.ndarray
    """Seconds from each failure to training again (one fewer than ``uptimes``)."""
    seed: int
    """The seed the run's measurements are drawn with."""


def make_trace(mtbf_s: float, seed: int) -> Trace:
    """Failures until the horizon, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    horizon = HORIZON_DAYS * 86_400.0
    uptimes: list[float] = []
    recoveries: list[float] = []
    clock = 0.0
    while True:
        gap = float(rng.exponential(mtbf_s))
        if clock + gap >= horizon:
            uptimes.append(horizon - clock)
            return Trace(uptimes=np.array(uptimes), recoveries=np.array(recoveries), seed=seed)
        recovery = float(RECOVERY_S * rng.lognormal(0.0, 0.3))
        uptimes.append(gap)
        recoveries.append(min(recovery, horizon - clock - gap))
        clock += gap + recovery
        if clock >= horizon:
            uptimes.append(0.0)
            return Trace(uptimes=np.array(uptimes), recoveries=np.array(recoveries), seed=seed)


def fixed_goodput(trace: Trace, steps: np.ndarray, save_cost_s: float) -> np.ndarray:
    """Goodput of each fixed interval in ``steps`` (vectorised over intervals and failures)."""
    work = steps.astype(float)[None, :] * STEP_S
    period = work + save_cost_s
    gaps = trace.uptimes[:, None]
    kept = np.floor(gaps / period) * work
    # The run ends at the horizon: work in the last, unfinished period is kept, not lost.
    last = trace.uptimes[-1]
    kept[-1] += np.minimum(np.mod(last, period[0]), work[0])
    goodput: np.ndarray = kept.sum(axis=0) / (HORIZON_DAYS * 86_400.0)
    return goodput


def _stall_sample(rng: np.random.Generator, save_cost_s: float) -> float:
    slow = 10.0 if rng.random() < 0.05 else 1.0
    return round(float(save_cost_s * rng.lognormal(0.0, 0.2) * slow), 3)


class AdaptiveRun:
    """The operator's adaptive policy, fed the reports a run would produce."""

    def __init__(self, save_cost_s: float, prior_s: float | None, seed: int) -> None:
        self.policy = adaptive.AdaptivePolicy(bounds=BOUNDS, expected_mtbf_s=prior_s)
        self.save_cost_s = save_cost_s
        self.rng = np.random.default_rng(seed + 10_000)
        self.stalls: list[float] = []
        self.status: dict[str, Any] = {}
        self.published: dict[str, Any] | None = None

    def _update(self, now_s: float) -> int:
        self.status["saveStats"] = {
            "stepTimeSeconds": round(STEP_S * float(self.rng.normal(1.0, 0.02)), 3),
            "persistent": {"recentStallSeconds": self.stalls[-16:]},
        }
        value = adaptive.next_status(
            self.policy,
            self.status,
            self.published,
            now=START + dt.timedelta(seconds=now_s),
            fallback=FALLBACK_STEPS,
        )
        self.published = value if value is not None else self.published
        steps = ((self.published or {}).get("persistent") or {}).get("intervalSteps")
        return int(steps) if steps else FALLBACK_STEPS

    def resumed(self, restart_s: float | None, resume_s: float) -> int:
        """A (re)start: the interval to use from ``resume_s``."""
        if restart_s is not None:
            self.status["restarts"] = {"lastRestartTime": _at(restart_s)}
        self.status["lastResume"] = {"iteration": 0, "time": _at(resume_s)}
        return self._update(resume_s)

    def saved(self, now_s: float) -> int:
        """A save completed at ``now_s``: the interval to use for the next one."""
        self.stalls.append(_stall_sample(self.rng, self.save_cost_s))
        return self._update(now_s)


def _at(seconds: float) -> str:
    return format_time(START + dt.timedelta(seconds=seconds))


def adaptive_goodput(trace: Trace, save_cost_s: float, prior_s: float | None) -> float:
    """Goodput of the adaptive policy on one trace."""
    run = AdaptiveRun(save_cost_s, prior_s, trace.seed)
    clock, kept = 0.0, 0.0
    steps = run.resumed(None, 0.0)
    for index, uptime in enumerate(trace.uptimes):
        end = clock + float(uptime)
        last_gap = index == len(trace.uptimes) - 1
        while clock + steps * STEP_S + save_cost_s <= end:
            clock += steps * STEP_S + save_cost_s
            kept += steps * STEP_S
            steps = run.saved(clock)
        if last_gap:
            kept += min(end - clock, steps * STEP_S)
            break
        recovery = float(trace.recoveries[index])
        clock = end + recovery
        steps = run.resumed(end, clock)
    return kept / (HORIZON_DAYS * 86_400.0)


def _model_steps(mtbf_s: float, save_cost_s: float) -> int:
    inputs = interval.TierInputs(
        save_cost_s=save_cost_s, step_s=STEP_S, mtbf_s=mtbf_s, recovery_s=RECOVERY_S
    )
    return interval.choose(inputs, BOUNDS).interval_steps


def scenario(mtbf_h: float, save_cost_s: float) -> dict[str, Any]:
    """Every policy on ``SEEDS`` traces of one (MTBF, save cost); mean goodputs."""
    mtbf_s = mtbf_h * 3600.0
    traces = [
        make_trace(mtbf_s, seed=1000 * int(mtbf_h) + int(save_cost_s) + s) for s in range(SEEDS)
    ]
    grid = np.mean([fixed_goodput(t, GRID, save_cost_s) for t in traces], axis=0)
    best = int(np.argmax(grid))
    fixed = {
        "every_1000_steps": 1000,
        "every_30_min": round(1800 / STEP_S),
        "model_true_inputs": _model_steps(mtbf_s, save_cost_s),
    }
    goodput = {
        "hindsight_fixed": float(grid[best]),
        "adaptive_prior": _mean(adaptive_goodput(t, save_cost_s, PRIOR_MTBF_S) for t in traces),
        "adaptive_no_prior": _mean(adaptive_goodput(t, save_cost_s, None) for t in traces),
        **{
            name: _mean(float(fixed_goodput(t, np.array([n]), save_cost_s)[0]) for t in traces)
            for name, n in fixed.items()
        },
    }
    return {
        "mtbf_hours": mtbf_h,
        "save_cost_s": save_cost_s,
        "failures_per_run": _mean(len(t.recoveries) for t in traces),
        "hindsight_interval_steps": int(GRID[best]),
        "model_interval_steps": fixed["model_true_inputs"],
        "goodput": {k: round(v, 5) for k, v in goodput.items()},
        "over_hindsight": {
            k: round(v / goodput["hindsight_fixed"], 4)
            for k, v in goodput.items()
            if k != "hindsight_fixed"
        },
    }


def _mean(values: Any) -> float:
    items = [float(v) for v in values]
    return math.fsum(items) / len(items)


def main() -> dict[str, Any]:
    """Run every scenario; write and return the results."""
    start = time.perf_counter()
    table = [scenario(m, c) for m in MTBF_HOURS for c in SAVE_COSTS_S]
    modes = ("adaptive_prior", "adaptive_no_prior")
    by_mtbf = {
        str(m): {
            mode: min(r["over_hindsight"][mode] for r in table if r["mtbf_hours"] == m)
            for mode in modes
        }
        for m in MTBF_HOURS
    }
    headline = min(min(v.values()) for v in by_mtbf.values())
    result = {
        "adaptive_over_hindsight_goodput": headline,
        "goal": GOAL,
        "goal_met": headline >= GOAL,
        "min_over_save_costs_by_mtbf_hours": by_mtbf,
        "config": {
            "step_s": STEP_S,
            "horizon_days": HORIZON_DAYS,
            "recovery_s": RECOVERY_S,
            "seeds_per_scenario": SEEDS,
            "prior_mtbf_s": PRIOR_MTBF_S,
            "fallback_interval_steps": FALLBACK_STEPS,
            "bounds_steps": [BOUNDS.min_steps, BOUNDS.max_steps],
            "recompute_period_s": adaptive.AdaptivePolicy(bounds=BOUNDS).recompute_period_s,
            "change_threshold": adaptive.AdaptivePolicy(bounds=BOUNDS).change_threshold,
        },
        "table": table,
        "elapsed_s": round(time.perf_counter() - start, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    _print_table(result)
    return result


def _print_table(result: dict[str, Any]) -> None:
    print(
        f"{'MTBF':>5} {'Ts':>5} {'hindsight':>10} {'adapt+prior':>11} {'adapt':>7} "
        f"{'1000 steps':>10} {'30 min':>7} {'model':>7}"
    )
    for row in result["table"]:
        g = row["goodput"]
        print(
            f"{row['mtbf_hours']:>4}h {row['save_cost_s']:>4.0f}s {g['hindsight_fixed']:>10.4f} "
            f"{g['adaptive_prior']:>11.4f} {g['adaptive_no_prior']:>7.4f} "
            f"{g['every_1000_steps']:>10.4f} {g['every_30_min']:>7.4f} {g['model_true_inputs']:>7.4f}"
        )
    print(
        f"adaptive_over_hindsight_goodput = {result['adaptive_over_hindsight_goodput']} "
        f"(goal >= {GOAL}); {result['elapsed_s']} s"
    )


if __name__ == "__main__":
    main()
