"""An SRE edits ``spec.save.interval`` with ``kubectl patch`` mid-run: the job follows."""

from __future__ import annotations

from pathlib import Path

from cairn_agent.storage.listing import committed_iterations
from cairn_operator.testing import Sandbox

from tests.governing.conftest import plan_for
from tests.governing.steering import (
    GovernedRun,
    applied_generation,
    kubectl,
    same_on_every_rank,
)
from tests.operator.conftest import checkpoint, condition, get_when

NAME = "interval-edit"


def _policy_applied(sandbox: Sandbox, status: str, reason: str) -> dict[str, object]:
    obj = get_when(
        sandbox,
        NAME,
        lambda o: (
            (c := condition(o, "PolicyApplied")) and (c["status"], c["reason"]) == (status, reason)
        ),
        timeout=30,
        what=f"PolicyApplied {status}/{reason}",
    )
    found = condition(obj, "PolicyApplied")
    assert found is not None
    return found


def test_saves_follow_an_interval_edited_mid_run(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.create(checkpoint(NAME, save={"interval": 4}, retention={"keepLast": 50}))
    root = tmp_path / "ckpt"
    # The script says every 10 steps; the spec every 4, then (edited at step 8) every 6.
    plan = plan_for(sandbox, NAME, tmp_path, save_interval=10, pause_at=(8,), max_steps=24)
    with GovernedRun(plan) as run:
        # The spec governs from the first step: saves at 4 and 8, not the script's 10.
        run.wait_paused()
        assert committed_iterations(root) == [4, 8]
        assert applied_generation(sandbox, NAME) == 1
        _policy_applied(sandbox, "True", "Applied")

        kubectl(sandbox, "patch", "ckpt", NAME, "--type", "merge", "-p",
                '{"spec":{"save":{"interval":6}}}')  # fmt: skip
        # The ranks are paused, so no boundary picked the edit up: the job lags its spec,
        # and both the condition and `kubectl get ckpt` say so.
        pending = _policy_applied(sandbox, "False", "PolicyPending")
        assert "generation 1" in str(pending["message"])
        table = kubectl(sandbox, "get", "ckpt", NAME).splitlines()
        header, row = table[0].split(), table[1].split()
        assert (row[header.index("SPEC-GEN")], row[header.index("APPLIED-GEN")]) == ("2", "1")
        run.resume(see_generation=2)  # rank 0 saw the edit: the next boundary applies it
        records = run.records()

    view = same_on_every_rank(records, "interval", "saved")
    # Every rank switched at the same step: the edit reached rank 0 during the pause, was offered
    # at the first boundary after it (step 9) and applied at the next (step 10) — the
    # agreement's one-step lag, which lets it overlap the step instead of stalling it.
    assert [interval for _, interval, _ in view] == [4] * 9 + [6] * 15
    assert [step for step, _, did in view if did] == [4, 8, 12, 18, 24]
    assert committed_iterations(root) == [4, 8, 12, 18, 24]

    applied = sandbox.get("checkpoints", NAME)["status"]["appliedPolicy"]
    assert applied["observedGeneration"] == 2
    assert applied["values"]["saveInterval"] == 6
    assert applied["sources"]["saveInterval"] == "spec"
    assert applied["problems"] == []
    _policy_applied(sandbox, "True", "Applied")
