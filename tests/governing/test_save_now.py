"""``kubectl cairn save-now``: the running job saves the step it was asked at, and says so."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from cairn_agent.storage.listing import committed_iterations
from cairn_operator.testing import Sandbox

from tests.governing.conftest import plan_for
from tests.governing.steering import GovernedRun, same_on_every_rank
from tests.operator.conftest import checkpoint, get_when

NAME = "save-now"


def _save_now(sandbox: Sandbox, reason: str, *wait: str) -> subprocess.Popen[str]:
    """``kubectl cairn save-now NAME`` (the krew-style plugin on PATH), started."""
    env = dict(os.environ, KUBECONFIG=str(sandbox.kubeconfig))
    return subprocess.Popen(
        ["kubectl", "cairn", "save-now", NAME, "--reason", reason, *wait],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finished(command: subprocess.Popen[str]) -> str:
    out, err = command.communicate(timeout=90)
    assert command.returncode == 0, f"kubectl cairn save-now failed: {out}{err}"
    return out


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
        asked = _finished(_save_now(sandbox, "node maintenance"))
        first = re.search(r"save requested \((\S+)\)", asked)
        assert first is not None, asked
        run.resume(see_generation=2)  # offered at step 4, answered at step 5
        run.wait_paused()
        answer = sandbox.get("checkpoints", NAME)["status"]["lastSaveRequest"]
        assert answer["requestId"] == first[1] and answer["outcome"] == "Committed", answer

        # The second time the SRE waits for the answer, as a drain script would.
        waiting = _save_now(sandbox, "second request", "--wait", "60")
        get_when(sandbox, NAME, lambda o: o["metadata"]["generation"] == 3, what="the request")
        run.resume(see_generation=3)  # offered at step 14, answered at step 15
        assert "iteration 15 committed" in _finished(waiting)
        records = run.records()

    view = same_on_every_rank(records, "cluster_saved", "saved")
    assert [step for step, by_cluster, _ in view if by_cluster] == [5, 15]
    assert [step for step, _, by_loop in view if by_loop] == [10, 20]
    # Committed before the boundary returned: on disk when the step that asked for it ended.
    assert 5 in records[0][4].on_disk and 15 in records[0][14].on_disk
    assert committed_iterations(root) == [5, 10, 15, 20]

    answer = sandbox.get("checkpoints", NAME)["status"]["lastSaveRequest"]
    assert {k: answer[k] for k in ("reason", "requestedIteration", "iteration", "outcome")} == {
        "reason": "second request",
        "requestedIteration": 15,
        "iteration": 15,
        "outcome": "Committed",
    }
    assert answer["committedAt"] and answer["saveSeconds"] >= 0
