"""``spec.asyncWorker.enabled`` toggled both ways mid-run: every save commits, none is lost."""

from __future__ import annotations

from pathlib import Path

from cairn_agent.storage.listing import committed_iterations, list_staging_dirs
from cairn_operator.testing import Sandbox

from tests.governing.conftest import plan_for
from tests.governing.steering import GovernedRun, same_on_every_rank
from tests.operator.conftest import checkpoint

NAME = "async-toggle"


def _enable(sandbox: Sandbox, on: bool) -> None:
    sandbox.patch("checkpoints", NAME, {"spec": {"asyncWorker": {"enabled": on}}})


def test_async_saves_toggled_on_and_off_mid_run(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.create(checkpoint(NAME, save={"interval": 3}, retention={"keepLast": 100}))
    root = tmp_path / "ckpt"
    # Megatron-Bridge's loop (maybe_finalize_async_save every step), the script's async off;
    # paused after the sync save of step 6 and after the async save of step 18.
    plan = plan_for(
        sandbox,
        NAME,
        tmp_path,
        save_interval=3,
        loop="bridge",
        pause_at=(6, 18),
        max_steps=25,
        list_root=True,
    )
    with GovernedRun(plan) as run:
        run.wait_paused()
        _enable(sandbox, True)
        run.resume(see_generation=2)
        run.wait_paused()
        _enable(sandbox, False)  # the save of step 18 is still in flight
        run.resume(see_generation=3)
        records = run.records()

    view = same_on_every_rank(records, "async_save", "saved", "in_flight")
    # Each edit applies at the second boundary after the pause (offered at the first): async
    # from step 8 to 19, sync again from 20, on every rank alike.
    assert [is_async for _, is_async, _, _ in view] == [False] * 7 + [True] * 12 + [False] * 6
    saves = [(step, in_flight) for step, _, did, in_flight in view if did]
    # Async exactly while the spec says so: such a save is still in flight when save returns.
    assert saves == [(3, False), (6, False), (9, True), (12, True), (15, True), (18, True),
                     (21, False), (24, False)]  # fmt: skip
    # Turning async off drained the save in flight: 18, in flight at its own step, is committed
    # at the latest at the boundary that applied the switch (step 20).
    on_disk = [r.on_disk for r in records[0]]
    assert 18 not in on_disk[17] and 18 in on_disk[19]
    assert committed_iterations(root) == [3, 6, 9, 12, 15, 18, 21, 24]
    assert list_staging_dirs(root) == []

    status = sandbox.get("checkpoints", NAME)["status"]
    assert status["appliedPolicy"]["observedGeneration"] == 3
    assert status["appliedPolicy"]["values"]["asyncEnabled"] is False
    reported = sorted(entry["iteration"] for entry in status["savedIterations"])
    assert reported == [3, 6, 9, 12, 15, 18, 21, 24]
