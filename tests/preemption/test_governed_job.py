"""A real governed job answers the operator's preemption request with a committed save."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cairn_agent.resource import contract
from cairn_operator.run import RunningOperator
from cairn_operator.testing import Sandbox

from tests.operator.conftest import checkpoint, get_when
from tests.preemption.conftest import node, training_pod

JOB = Path(__file__).with_name("_governed_job.py")
REPO = Path(__file__).resolve().parents[2]


def test_cordon_makes_the_running_job_save(
    sandbox: Sandbox, operator: RunningOperator, tmp_path: Path
) -> None:
    sandbox.create(checkpoint("live"))
    sandbox.create(node("worker-9"))
    sandbox.create(training_pod("live-0", "live", "worker-9", grace=60))
    root, stop = tmp_path / "ckpt", tmp_path / "stop"
    env = {
        **os.environ,
        "CAIRN_CHECKPOINT": "default/live",
        "KUBECONFIG": str(sandbox.kubeconfig),
        "CAIRN_STATUS_MIN_INTERVAL_S": "0.2",
        "PYTHONPATH": str(REPO),
    }
    job = subprocess.Popen(
        [sys.executable, str(JOB), str(root), str(stop)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # The job runs and reports (its policy applied) before the node is cordoned.
        get_when(
            sandbox,
            "live",
            lambda o: (o.get("status") or {}).get(contract.APPLIED_POLICY),
            timeout=120,
            what="the job to apply its policy",
        )
        sandbox.patch("nodes", "worker-9", {"spec": {"unschedulable": True}}, namespace=None)

        def saved(obj: dict[str, Any]) -> bool:
            return ((obj.get("status") or {}).get(contract.LAST_PREEMPTION) or {}).get(
                "outcome"
            ) == "Committed"

        obj = get_when(sandbox, "live", saved, timeout=120, what="the preemption's save")
    finally:
        stop.touch()
        out, _ = job.communicate(timeout=120)
    assert job.returncode == 0, out
    last = obj["status"][contract.LAST_PREEMPTION]
    assert last["reason"] == "NodeCordoned" and last["requestId"].startswith("preempt-node-")
    iteration = last["iteration"]
    assert iteration > 0 and (root / f"iter_{iteration:07d}").is_dir()
    assert (root / "latest_checkpointed_iteration.txt").read_text().strip() == str(iteration)
