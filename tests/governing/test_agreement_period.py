"""On steps so short that agreeing every step would show, the ranks agree every K steps.

K is chosen by rank 0 from the measured cost of one agreement and the step time (at most 0.5%
of step time, and at most a second between agreements) and travels inside the agreement, so
every rank skips the same boundaries: an edit still applies on every rank at the same step.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cairn_operator.testing import Sandbox

from tests.governing.conftest import plan_for
from tests.governing.steering import GovernedRun, same_on_every_rank
from tests.operator.conftest import checkpoint

NAME = "agreement-period"


def test_tiny_steps_agree_every_k_steps_and_still_switch_together(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.create(checkpoint(NAME, save={"interval": 50}))
    plan = plan_for(
        sandbox,
        NAME,
        tmp_path,
        save_interval=50,
        pause_at=(100,),
        max_steps=400,
        step_sleep_s=0.001,
    )
    env = {k: v for k, v in plan.env.items() if k != "CAIRN_AGREE_EVERY_STEPS"}
    plan = dataclasses.replace(plan, env=env)
    with GovernedRun(plan) as run:
        run.wait_paused()
        sandbox.patch("checkpoints", NAME, {"spec": {"save": {"interval": 70}}})
        run.resume(see_generation=2)
        records = run.records()

    view = same_on_every_rank(records, "interval")  # every rank, every step, alike
    intervals = [interval for _, interval in view]
    switch = intervals.index(70)
    assert intervals[:switch] == [50] * switch and intervals[switch:] == [70] * (400 - switch)
    # Not at the next boundary: on ~1 ms steps the agreement runs every K > 1 steps ...
    assert switch > 101
    # ... but within a second of steps of the pause (K steps take at most a second).
    durations = [r.boundary_at for r in records[0]]
    assert durations[switch] - durations[100] < 2.0
