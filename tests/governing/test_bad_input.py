"""A spec edit the job cannot apply: the previous value stays, status says why, training goes on."""

from __future__ import annotations

from pathlib import Path

from cairn_agent.storage.listing import committed_iterations
from cairn_operator.testing import Sandbox

from tests.governing.conftest import plan_for
from tests.governing.steering import GovernedRun, same_on_every_rank
from tests.operator.conftest import checkpoint, condition, get_when

NAME = "bad-input"


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


def test_local_tier_without_a_local_directory_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.create(checkpoint(NAME, save={"interval": 4}, retention={"keepLast": 100}))
    root = tmp_path / "ckpt"
    plan = plan_for(sandbox, NAME, tmp_path, save_interval=10, pause_at=(4, 12), max_steps=16)
    with GovernedRun(plan) as run:
        run.wait_paused()
        # Node-local saves, but neither the spec nor the script names a node-local directory.
        sandbox.patch("checkpoints", NAME, {"spec": {"save": {"nonPersistentType": "local"}}})
        run.resume(see_generation=2)
        refused = _policy_applied(sandbox, "False", "FieldNotApplied")
        assert "spec.save.nonPersistentType" in str(refused["message"])
        assert "spec.storage.local.path" in str(refused["message"])
        applied = sandbox.get("checkpoints", NAME)["status"]["appliedPolicy"]
        assert applied["observedGeneration"] == 2
        assert [p["field"] for p in applied["problems"]] == ["spec.save.nonPersistentType"]
        assert "nonPersistentType" not in applied["values"]  # the script's (none) is kept
        assert applied["sources"]["nonPersistentType"] == "script"

        run.wait_paused()
        # The SRE fixes the spec as the message says: the edit applies, the condition clears.
        local = {"local": {"path": str(tmp_path / "local")}}
        sandbox.patch("checkpoints", NAME, {"spec": {"storage": local}})
        run.resume(see_generation=3)
        _policy_applied(sandbox, "True", "Applied")
        records = run.records()

    view = same_on_every_rank(records, "non_persistent_type", "saved")
    # The fixed spec applies at the second boundary after the pause at 12 (offered at 13).
    assert [kind for _, kind, _ in view] == [None] * 13 + ["local"] * 3
    # Training was never disturbed: every step ran, every save on the spec's interval.
    assert [step for step, _, did in view if did] == [4, 8, 12, 16]
    assert committed_iterations(root) == [4, 8, 12, 16]
    applied = sandbox.get("checkpoints", NAME)["status"]["appliedPolicy"]
    assert applied["observedGeneration"] == 3 and applied["problems"] == []
    assert applied["values"]["nonPersistentType"] == "local"
