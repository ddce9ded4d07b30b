"""``spec.saveNow``: the running job saves the step it was asked at, and says so in status."""

from __future__ import annotations

import json
from pathlib import Path

from cairn_agent.storage.listing import committed_iterations
from cairn_operator.testing import Sandbox

from tests.governing.conftest import plan_for
from tests.governing.steering import GovernedRun, kubectl, same_on_every_rank
from tests.operator.conftest import checkpoint

NAME = "save-now"


def _ask(sandbox: Sandbox, request_id: str, reason: str) -> None:
    # What `kubectl cairn save-now NAME` amounts to: a new requestId in spec.saveNow.
    patch = {"spec": {"saveNow": {"requestId": request_id, "reason": reason}}}
    kubectl(sandbox, "patch", "ckpt", NAME, "--type", "merge", "-p", json.dumps(patch))


def test_save_now_commits_a_save_at_the_step_it_was_answered(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.create(checkpoint(NAME, save={"interval": 10}, retention={"keepLast": 100}))
    root = tmp_path / "ckpt"
    plan = plan_for(
        sandbox, NAME, tmp_path, save_interval=10, pause_at=(3, 13), max_steps=20, list_root=True
    )
    with GovernedRun(plan) as run:
        run.wait_paused()
        _ask(sandbox, "drain-1", "node maintenance")
        run.resume(see_generation=2)  # answered at the next boundary: step 4
        run.wait_paused()
        answer = sandbox.get("checkpoints", NAME)["status"]["lastSaveRequest"]
        assert answer["requestId"] == "drain-1" and answer["outcome"] == "Committed", answer
        _ask(sandbox, "drain-2", "second request")
        run.resume(see_generation=3)  # step 14
        records = run.records()

    view = same_on_every_rank(records, "cluster_saved", "saved")
    assert [step for step, by_cluster, _ in view if by_cluster] == [4, 14]
    assert [step for step, _, by_loop in view if by_loop] == [10, 20]
    # Committed before the boundary returned: on disk when the step that asked for it ended.
    assert 4 in records[0][3].on_disk and 14 in records[0][13].on_disk
    assert committed_iterations(root) == [4, 10, 14, 20]

    answer = sandbox.get("checkpoints", NAME)["status"]["lastSaveRequest"]
    assert {k: answer[k] for k in ("requestId", "reason", "requestedIteration", "iteration")} == {
        "requestId": "drain-2",
        "reason": "second request",
        "requestedIteration": 14,
        "iteration": 14,
    }
    assert answer["outcome"] == "Committed" and answer["committedAt"]
    assert answer["saveSeconds"] >= 0
