"""Policy Adaptive end to end in the sandbox: the operator publishes ``status.adaptiveInterval``
from what the agent reports and the restarts it sees, shortens it as failures come, lengthens it
over a quiet run (within the bounds), and ``kubectl cairn describe`` shows why."""

from __future__ import annotations

import re
import time
from typing import Any

from cairn_agent.cli import kubectl_views
from cairn_agent.resource.adaptive import published_intervals
from cairn_agent.resource.times import format_time
from cairn_operator.run import RunningOperator
from cairn_operator.testing import Sandbox
from prometheus_client import generate_latest

from tests.operator.conftest import (
    ShiftedClock,
    assert_schema_clean,
    checkpoint,
    get_when,
    wait_events,
    wait_for,
)

NAME = "adaptive"
SAVE = {
    "policy": "Adaptive",
    "interval": 1000,
    "nonPersistentInterval": 200,
    "adaptive": {
        "minInterval": 20,
        "maxInterval": 1000,
        "expectedMTBFSeconds": 86_400,
        "recomputePeriodSeconds": 600,
    },
}


def _agent_reports(sandbox: Sandbox, clock: ShiftedClock, **status: Any) -> None:
    """What the training job's agent writes (its own status keys, through the status subresource)."""
    sandbox.patch("checkpoints", NAME, {"status": status}, subresource="status")


def _resumed(sandbox: Sandbox, clock: ShiftedClock, iteration: int) -> None:
    _agent_reports(
        sandbox,
        clock,
        lastResume={"iteration": iteration, "source": "persistent", "time": format_time(clock())},
    )


def _adaptive(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("status") or {}).get("adaptiveInterval") or {})


def _steps(obj: dict[str, Any], tier: str = "persistent") -> int | None:
    return (_adaptive(obj).get(tier) or {}).get("intervalSteps")


def _pod(name: str, uid_hint: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"cairn.dev/checkpoint": NAME, "hint": uid_hint},
        },
        "spec": {"containers": [{"name": "trainer", "image": "trainer:1"}]},
    }


def _restart(sandbox: Sandbox, attempt: int) -> None:
    """Replace the trainer pod, as a JobSet restart would, and wait for the operator to count it."""
    before = (sandbox.get("checkpoints", NAME).get("status") or {}).get("restarts") or {}
    sandbox.delete("pods", "trainer-0")
    sandbox.create(_pod("trainer-0", f"gen{attempt}"))
    get_when(
        sandbox,
        NAME,
        lambda o: (o["status"].get("restarts") or {}).get("count", 0) > before.get("count", 0),
        what=f"restart {attempt} counted",
    )


def test_adaptive_interval_follows_failures_and_quiet_runs(
    sandbox: Sandbox, operator: RunningOperator, clock: ShiftedClock
) -> None:
    sandbox.create(checkpoint(NAME, save=SAVE))
    sandbox.create(_pod("trainer-0", "gen0"))
    _resumed(sandbox, clock, 0)
    waiting = get_when(sandbox, NAME, lambda o: _adaptive(o).get("state") == "WaitingForData")
    assert "keeping spec.save.interval=1000" in _adaptive(waiting)["message"]

    _agent_reports(
        sandbox,
        clock,
        saveStats={
            "stepTimeSeconds": 5.0,
            "persistent": {"recentStallSeconds": [30.0, 29.0, 31.0, 600.0]},
            "nonPersistent": {"recentStallSeconds": [2.0, 2.5]},
        },
    )
    active = get_when(sandbox, NAME, lambda o: _adaptive(o).get("state") == "Active")
    first = _steps(active)
    assert first is not None and 20 <= first < 1000  # the prior alone: about 456 steps
    assert _steps(active, "nonPersistent") < first  # the cheap tier saves more often
    assert _adaptive(active)["inputs"]["mtbfSeconds"]["source"] == "prior"
    assert wait_events(sandbox, NAME, "SaveIntervalChanged")
    assert_schema_clean(active)
    # What the job applies as its effective intervals (the agent's side of the contract).
    applied = published_intervals(active["spec"], active["status"])
    assert (applied.persistent, applied.non_persistent) == (
        first,
        _steps(active, "nonPersistent"),
    )

    for attempt in range(1, 4):  # three failures, each after a recomputation period
        clock.advance(650)
        _restart(sandbox, attempt)
        clock.advance(120)  # the recovery: restart seen -> resumed
        _resumed(sandbox, clock, 1000 * attempt)
    shorter = get_when(
        sandbox,
        NAME,
        lambda o: _adaptive(o)["observation"]["failures"] == 3 and _steps(o) < first * 0.7,
        what="an interval shortened by three failures",
    )
    assert _adaptive(shorter)["inputs"]["mtbfSeconds"]["source"] == "measured+prior"
    recovery = _adaptive(shorter)["inputs"]["recoverySeconds"]
    assert recovery["source"] == "measured" and 120 <= recovery["value"] < 130
    assert_schema_clean(shorter)

    clock.advance(60 * 86_400)  # two months without a failure
    _agent_reports(sandbox, clock, saveStats={"stepTimeSeconds": 5.1})
    longer = get_when(
        sandbox, NAME, lambda o: _steps(o) == 1000, what="the interval lengthened to maxInterval"
    )
    assert _adaptive(longer)["persistent"]["clampedTo"] == "maxInterval"
    # The restarted agent's empty stall lists keep the last measured save cost.
    assert _adaptive(longer)["persistent"]["saveCostSeconds"]["value"] == 30.5

    text = kubectl_views.describe(longer, time.time() + 60 * 86_400)
    assert "Save interval (policy Adaptive, 20..1000 steps" in text
    assert "Persistent:" in text and "every 1000 steps" in text and "clamped to maxInterval" in text
    assert "save cost 30.5s (measured, p50 of 4)" in text
    assert "MTBF:" in text and "3 failure(s)" in text and "measured+prior" in text
    assert "Recovery:       120.0s (measured, p50 of 3)" in text
    # 5.0 or 5.1: a reconcile between the clock's jump and the new report may have published
    # first, and the recompute period then holds the inputs it saw (both are measured values).
    assert re.search(r"Step time:\s+5\.[01]s \(measured", text), text
    assert "expected loss" in text
    assert "policy Adaptive (20..1000 steps), starting from every 1000 steps" in text

    scraped = _scrape(operator)
    assert (
        f'cairn_checkpoint_adaptive_interval_steps{{{LABELS},tier="persistent"}} 1000.0' in scraped
    )
    assert f"cairn_checkpoint_mtbf_seconds{{{LABELS}}} " in scraped
    assert f'cairn_checkpoint_save_cost_seconds{{{LABELS},tier="nonPersistent"}} 2.25' in scraped
    loss = _adaptive(longer)["persistent"]["expectedLossFraction"]
    assert (
        f'cairn_checkpoint_expected_loss_fraction{{{LABELS},tier="persistent"}} {loss}' in scraped
    )

    # Wider bounds apply at once (a spec edit), and the clamp note leaves the stored status.
    sandbox.patch("checkpoints", NAME, {"spec": {"save": {"adaptive": {"maxInterval": 3000}}}})
    widened = get_when(sandbox, NAME, lambda o: _steps(o) > 1000, what="the wider bounds")
    assert "clampedTo" not in _adaptive(widened)["persistent"]
    assert _adaptive(widened)["specGeneration"] == widened["metadata"]["generation"]
    assert_schema_clean(widened)

    sandbox.patch("checkpoints", NAME, {"spec": {"save": {"policy": "Fixed"}}})
    fixed = get_when(sandbox, NAME, lambda o: not _adaptive(o), what="status removed under Fixed")
    assert published_intervals(fixed["spec"], fixed["status"]).persistent is None
    assert "Save interval (policy Adaptive" not in kubectl_views.describe(fixed, time.time())
    wait_for(
        lambda: "cairn_checkpoint_adaptive_interval_steps{" not in _scrape(operator),
        what="the adaptive series dropped",
    )


LABELS = f'name="{NAME}",namespace="default"'


def _scrape(operator: RunningOperator) -> str:
    """The text ``/metrics`` serves."""
    return generate_latest(operator.context.metrics.registry).decode()


def test_describe_says_what_the_adaptive_policy_waits_for() -> None:
    obj = checkpoint("waiting", save=SAVE)
    obj["metadata"]["generation"] = 1
    assert "not computed yet" in kubectl_views.describe(obj, time.time())
    obj["status"] = {
        "adaptiveInterval": {
            "state": "WaitingForData",
            "message": "keeping spec.save.interval=1000 until there is a first failure",
            "inputs": {"mtbfSeconds": {"source": "missing", "samples": 0}},
        }
    }
    text = kubectl_views.describe(obj, time.time())
    assert "WaitingForData: keeping spec.save.interval=1000 until there is a first failure" in text
    assert "MTBF:           unknown (missing)" in text
    assert "Persistent:     -" in text
