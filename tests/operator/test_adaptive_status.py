"""``status.adaptiveInterval`` as a pure function of policy, status, previous value and time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cairn_agent.resource.times import format_time
from cairn_operator.reconcile import adaptive
from cairn_operator.reconcile.adaptive import AdaptivePolicy, next_status, read_policy
from cairn_operator.reconcile.interval import Bounds
from cairn_operator.reconcile.spec import read_spec
from cairn_operator.reconcile.validation import validate
from cairn_operator.testing import pruned_checkpoint_fields, validate_checkpoint

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
POLICY = AdaptivePolicy(bounds=Bounds(min_steps=10, max_steps=100_000), expected_mtbf_s=86_400.0)


def at(seconds: float) -> dt.datetime:
    return START + dt.timedelta(seconds=seconds)


def agent_status(
    *, stalls: list[float] | None = None, local: list[float] | None = None, step: float = 5.0
) -> dict[str, Any]:
    stats: dict[str, Any] = {"stepTimeSeconds": step}
    if stalls is not None:
        stats["persistent"] = {"recentStallSeconds": stalls}
    if local is not None:
        stats["nonPersistent"] = {"recentStallSeconds": local}
    return {
        "saveStats": stats,
        "lastResume": {"iteration": 0, "source": "none", "time": format_time(START)},
    }


def restarted(status: dict[str, Any], restart_s: float, resume_s: float) -> dict[str, Any]:
    return {
        **status,
        "restarts": {"count": 1, "lastRestartTime": format_time(at(restart_s))},
        "lastResume": {"iteration": 100, "source": "persistent", "time": format_time(at(resume_s))},
    }


def test_fixed_policy_and_unusable_bounds_read_as_none() -> None:
    assert read_policy({"policy": "Fixed"}) is None
    assert (
        read_policy({"policy": "Adaptive", "adaptive": {"minInterval": 9, "maxInterval": 3}})
        is None
    )
    policy = read_policy({"policy": "Adaptive", "adaptive": {"minInterval": 5, "maxInterval": 50}})
    assert policy is not None
    assert (policy.recompute_period_s, policy.change_threshold) == (600.0, 0.1)


def test_validation_reports_unusable_and_ignored_adaptive_sections() -> None:
    base = {"storage": {"persistent": {"claimName": "p", "mountPath": "/c", "path": "/c/r"}}}
    broken = validate(read_spec({**base, "save": {"policy": "Adaptive"}}))
    assert any("spec.save.adaptive.minInterval" in e for e in broken.errors)
    ignored = validate(
        read_spec({**base, "save": {"adaptive": {"minInterval": 1, "maxInterval": 9}}})
    )
    assert not ignored.errors and any("no effect" in w for w in ignored.warnings)


def test_nothing_before_the_job_reports() -> None:
    assert next_status(POLICY, {}, None, now=START) is None


def test_waiting_for_save_cost_keeps_the_fallback_and_says_so() -> None:
    value = next_status(POLICY, agent_status(), None, now=at(60), fallback=1000)
    assert value is not None and value["state"] == "WaitingForData"
    assert "keeping spec.save.interval=1000" in value["message"]
    assert "status.saveStats.persistent" in value["message"]
    assert "persistent" not in value


def test_no_prior_and_no_failure_waits_for_the_first_failure() -> None:
    policy = AdaptivePolicy(bounds=Bounds(min_steps=10, max_steps=10_000))
    value = next_status(policy, agent_status(stalls=[30.0]), None, now=at(3600))
    assert value is not None and value["state"] == "WaitingForData"
    assert "expectedMTBFSeconds" in value["message"]
    assert "the training script's interval" in value["message"]


def test_prior_gives_an_interval_with_inputs_and_sources() -> None:
    value = next_status(
        POLICY, agent_status(stalls=[30, 31, 29, 400], local=[2.0]), None, now=at(60)
    )
    assert value is not None and value["state"] == "Active"
    persistent, local = value["persistent"], value["nonPersistent"]
    assert persistent["saveCostSeconds"] == {"value": 30.5, "source": "measured", "samples": 4}
    assert local["intervalSteps"] < persistent["intervalSteps"]
    inputs = value["inputs"]
    assert inputs["mtbfSeconds"]["source"] == "prior"
    assert inputs["recoverySeconds"] == {"value": 0.0, "source": "assumed", "samples": 0}
    assert inputs["stepTimeSeconds"]["value"] == 5.0
    assert 0 < persistent["expectedLossFraction"] < 0.05
    assert f"every {persistent['intervalSteps']} steps" in value["message"]


def test_a_restart_is_one_failure_with_its_recovery_time_and_counted_once() -> None:
    first = next_status(POLICY, agent_status(stalls=[30.0]), None, now=at(60))
    status = restarted(agent_status(stalls=[30.0]), restart_s=7200, resume_s=7500)
    after = next_status(POLICY, status, first, now=at(7600))
    assert after is not None
    assert after["observation"]["failures"] == 1
    assert after["observation"]["recentRecoverySeconds"] == [300.0]
    assert after["observation"]["downtimeSeconds"] == 300.0
    again = next_status(POLICY, status, after, now=at(7700))
    assert again is not None and again["observation"]["failures"] == 1


def test_a_restart_not_yet_resumed_is_not_counted() -> None:
    first = next_status(POLICY, agent_status(stalls=[30.0]), None, now=at(60))
    status = {**agent_status(stalls=[30.0]), "restarts": {"lastRestartTime": format_time(at(90))}}
    value = next_status(POLICY, status, first, now=at(120))
    assert value is not None and value["observation"]["failures"] == 0


def test_recomputes_at_most_once_per_period_and_echoes_settle() -> None:
    status = agent_status(stalls=[30.0])
    first = next_status(POLICY, status, None, now=at(60))
    echo = next_status(POLICY, status, first, now=at(61))
    assert echo == first  # the write's own watch event changes nothing
    cheaper = agent_status(stalls=[5.0])
    early = next_status(POLICY, cheaper, first, now=at(60 + 599))
    assert early == first
    due = next_status(POLICY, cheaper, first, now=at(60 + 600))
    assert (
        due is not None
        and due["persistent"]["intervalSteps"] < first["persistent"]["intervalSteps"]
    )


def test_restarts_shorten_and_a_quiet_run_lengthens_within_bounds() -> None:
    policy = AdaptivePolicy(bounds=Bounds(min_steps=50, max_steps=1500), expected_mtbf_s=86_400.0)
    status = agent_status(stalls=[30.0])
    value = next_status(policy, status, None, now=at(60))
    assert value is not None
    start_steps = value["persistent"]["intervalSteps"]
    clock = 60.0
    for _ in range(5):  # five failures an hour apart
        clock += 3600
        status = restarted(status, restart_s=clock, resume_s=clock + 120)
        value = next_status(policy, status, value, now=at(clock + 700))
    assert value is not None
    short = value["persistent"]["intervalSteps"]
    assert short < start_steps and value["observation"]["failures"] == 5
    value = next_status(policy, status, value, now=at(clock + 100 * 86_400))
    assert value is not None
    assert value["persistent"]["intervalSteps"] == 1500
    assert value["persistent"]["clampedTo"] == "maxInterval"


def test_a_restarted_agent_without_statistics_keeps_the_published_interval() -> None:
    first = next_status(POLICY, agent_status(stalls=[30.0]), None, now=at(60))
    assert first is not None
    empty = {"lastResume": agent_status()["lastResume"], "saveStats": {}}
    later = next_status(POLICY, empty, first, now=at(60 + 3600))
    assert later is not None and later["state"] == "Active"
    assert later["persistent"]["intervalSteps"] == first["persistent"]["intervalSteps"]
    assert later["inputs"]["stepTimeSeconds"]["value"] == 5.0


def test_narrowed_bounds_apply_without_waiting_for_the_period() -> None:
    first = next_status(POLICY, agent_status(stalls=[30.0]), None, now=at(60))
    assert first is not None and first["persistent"]["intervalSteps"] > 100
    narrow = AdaptivePolicy(bounds=Bounds(min_steps=10, max_steps=100), expected_mtbf_s=86_400.0)
    value = next_status(narrow, agent_status(stalls=[30.0]), first, now=at(61))
    assert value is not None and value["persistent"]["intervalSteps"] == 100


def test_keep_every_makes_the_interval_a_divisor() -> None:
    value = next_status(POLICY, agent_status(stalls=[30.0]), None, now=at(60), keep_every=10_000)
    assert value is not None and 10_000 % value["persistent"]["intervalSteps"] == 0


@pytest.mark.parametrize("with_failure", [False, True])
def test_published_value_fits_the_crd_schema(with_failure: bool) -> None:
    status = agent_status(stalls=[30.0, 31.0], local=[1.0])
    first = next_status(POLICY, status, None, now=at(60))
    value = first
    if with_failure:
        value = next_status(POLICY, restarted(status, 7200, 7320), first, now=at(7400))
    assert value is not None
    obj = {
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "Checkpoint",
        "metadata": {"name": "job"},
        "spec": {"storage": {"persistent": {"claimName": "p", "mountPath": "/c", "path": "/c/j"}}},
        "status": {**status, adaptive.contract.ADAPTIVE_INTERVAL: value},
    }
    assert validate_checkpoint(obj) == []
    assert pruned_checkpoint_fields(obj) == []
