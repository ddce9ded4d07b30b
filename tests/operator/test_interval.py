"""The adaptive save interval's model, estimators and hysteresis (pure functions, no I/O)."""

from __future__ import annotations

import math

import pytest
from cairn_operator.reconcile import interval
from cairn_operator.reconcile.interval import Bounds, TierInputs

WIDE = Bounds(min_steps=1, max_steps=10**9)


def _inputs(**overrides: float) -> TierInputs:
    values = {"save_cost_s": 30.0, "step_s": 5.0, "mtbf_s": 86_400.0, "recovery_s": 300.0}
    values.update(overrides)
    return TierInputs(**values)


# --- the formula --------------------------------------------------------------------------------
def test_optimal_period_matches_the_closed_form_on_known_values() -> None:
    # Ts = 30 s, MTBF = 24 h, Tr = 5 min: 30 + sqrt(2 * 86700 * 30 + 900) = 2310.99 s.
    period = interval.optimal_period_s(save_cost_s=30, mtbf_s=86_400, recovery_s=300)
    assert period == pytest.approx(30 + math.sqrt(2 * 86_700 * 30 + 900))
    assert period == pytest.approx(2310.99, abs=0.01)
    assert interval.optimal_steps(_inputs()) == pytest.approx((period - 30) / 5)


def test_young_daly_limit_without_recovery_and_with_cheap_saves() -> None:
    save_cost, mtbf = 1.0, 1e7
    period = interval.optimal_period_s(save_cost_s=save_cost, mtbf_s=mtbf, recovery_s=0)
    assert period == pytest.approx(math.sqrt(2 * save_cost * mtbf), rel=1e-3)


def test_recovery_time_lengthens_the_interval() -> None:
    without = interval.optimal_steps(_inputs(recovery_s=0))
    with_recovery = interval.optimal_steps(_inputs(recovery_s=3600))
    assert with_recovery > without


def test_the_optimum_maximises_availability() -> None:
    inputs = _inputs()
    best = interval.optimal_steps(inputs)
    at_best = interval.expected_loss(inputs, best)
    for factor in (0.5, 0.8, 0.95, 1.05, 1.25, 2.0):
        assert interval.expected_loss(inputs, best * factor) > at_best
    # Loss = 1 - (1 - Ts/Tc) / (1 + (Tc/2 + Tr)/MTBF), here about 2.9 %.
    period = best * 5 + 30
    expected = 1 - (1 - 30 / period) / (1 + (period / 2 + 300) / 86_400)
    assert at_best == pytest.approx(expected) and 0.02 < at_best < 0.04


def test_cheaper_saves_give_a_shorter_interval() -> None:
    persistent = interval.choose(_inputs(save_cost_s=60), WIDE)
    local = interval.choose(_inputs(save_cost_s=2), WIDE)
    assert local.interval_steps < persistent.interval_steps
    assert local.expected_loss < persistent.expected_loss


def test_choice_is_clamped_to_the_bounds_and_says_so() -> None:
    bounds = Bounds(min_steps=100, max_steps=400)
    high = interval.choose(_inputs(mtbf_s=10**8), bounds)
    low = interval.choose(_inputs(mtbf_s=600, save_cost_s=0.5), bounds)
    inside = interval.choose(_inputs(), Bounds(min_steps=100, max_steps=1000))
    assert (high.interval_steps, high.clamped) == (400, "max")
    assert (low.interval_steps, low.clamped) == (100, "min")
    assert inside.clamped is None and abs(inside.interval_steps - inside.optimal_steps) < 1


def test_choice_snaps_to_divisors_of_keep_every() -> None:
    choice = interval.choose(_inputs(), Bounds(min_steps=10, max_steps=5000), divisor_of=10_000)
    assert 10_000 % choice.interval_steps == 0
    assert choice.interval_steps == 500  # the divisor with the least loss near the optimum 456
    no_divisor = interval.choose(_inputs(), Bounds(min_steps=300, max_steps=399), divisor_of=1000)
    assert no_divisor.interval_steps == 399  # no divisor of 1000 in range: restriction dropped


@pytest.mark.parametrize(
    ("field", "value"),
    [("save_cost_s", 0), ("step_s", -1), ("mtbf_s", 0), ("recovery_s", -5)],
)
def test_inputs_refuse_impossible_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        _inputs(**{field: value})


def test_bounds_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="max_steps=5 is below min_steps=10"):
        Bounds(min_steps=10, max_steps=5)


# --- estimators ---------------------------------------------------------------------------------
def test_save_cost_is_the_median_so_an_outlier_does_not_move_it() -> None:
    est = interval.estimate_save_cost([10.0, 11.0, 12.0, 9.5, 900.0])
    assert (est.value, est.source, est.samples) == (11.0, "measured", 5)


def test_save_cost_ignores_garbage_and_is_missing_without_saves() -> None:
    assert interval.estimate_save_cost([]).source == "missing"
    est = interval.estimate_save_cost([float("nan"), -1, "x", True, 4.0])
    assert (est.value, est.samples) == (4.0, 1)


def test_recovery_is_assumed_zero_without_restarts_and_robust_with_them() -> None:
    none = interval.estimate_recovery([])
    assert (none.value, none.source) == (0.0, "assumed")
    some = interval.estimate_recovery([120, 130, 3600])
    assert (some.value, some.source, some.samples) == (130, "measured", 3)


def test_mtbf_without_history_or_prior_is_missing() -> None:
    est = interval.estimate_mtbf(run_s=50_000, failures=0, prior_s=None)
    assert (est.value, est.source) == (None, "missing")


def test_mtbf_with_only_a_prior_grows_with_a_quiet_run() -> None:
    fresh = interval.estimate_mtbf(run_s=0, failures=0, prior_s=36_000)
    later = interval.estimate_mtbf(run_s=72_000, failures=0, prior_s=36_000)
    assert (fresh.value, fresh.source) == (36_000, "prior")
    assert later.value == 108_000  # (1 * 36000 + 72000) / (1 + 0)


def test_mtbf_after_one_restart_blends_prior_and_observation() -> None:
    est = interval.estimate_mtbf(run_s=7200, failures=1, prior_s=36_000)
    assert (est.value, est.source, est.samples) == ((36_000 + 7200) / 2, "measured+prior", 1)
    alone = interval.estimate_mtbf(run_s=7200, failures=1, prior_s=None)
    assert (alone.value, alone.source) == (7200, "measured")


def test_mtbf_converges_to_the_observed_rate_as_failures_accumulate() -> None:
    est = interval.estimate_mtbf(run_s=3600 * 1000, failures=1000, prior_s=86_400)
    assert est.value == pytest.approx(3600, rel=0.03)


def test_step_time_must_be_positive() -> None:
    assert interval.estimate_step_time(0).source == "missing"
    assert interval.estimate_step_time(None).source == "missing"
    assert interval.estimate_step_time(4.5).value == 4.5


# --- hysteresis ---------------------------------------------------------------------------------
def _choice(steps: int) -> interval.Choice:
    return interval.Choice(
        interval_steps=steps, optimal_steps=steps, expected_loss=0.01, clamped=None
    )


def test_small_moves_keep_the_published_interval() -> None:
    bounds = Bounds(min_steps=10, max_steps=10_000)
    assert interval.hold_or_move(1000, _choice(1090), bounds, 0.1) == 1000
    assert interval.hold_or_move(1000, _choice(920), bounds, 0.1) == 1000
    assert interval.hold_or_move(1000, _choice(1150), bounds, 0.1) == 1150
    assert interval.hold_or_move(1000, _choice(850), bounds, 0.1) == 850
    assert interval.hold_or_move(None, _choice(850), bounds, 0.1) == 850


def test_a_published_interval_outside_new_bounds_moves_regardless() -> None:
    bounds = Bounds(min_steps=10, max_steps=1000)
    assert interval.hold_or_move(1050, _choice(1000), bounds, 0.5) == 1000
