"""The API server is away for 30 s mid-run: training keeps its pace, status catches up after."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from cairn_agent.storage.listing import committed_iterations
from cairn_operator.testing import Sandbox

from tests.governing._loop import Plan
from tests.governing.steering import GovernedRun, same_on_every_rank
from tests.operator.conftest import checkpoint

NAME = "outage"
OUTAGE_S = 30.0


def _reported(sandbox: Sandbox) -> set[int]:
    status = sandbox.get("checkpoints", NAME).get("status") or {}
    return {entry["iteration"] for entry in status.get("savedIterations") or []}


def _restart(port: int, before: dict[str, Any]) -> Sandbox:
    """A new API server on the same address with the same object (what etcd kept)."""
    second = Sandbox(port=port)
    second.start()
    second.create(checkpoint(NAME, **before["spec"]))
    second.patch("checkpoints", NAME, {"status": before["status"]}, subresource="status")
    return second


def test_training_keeps_its_pace_while_the_api_server_is_away(tmp_path: Path) -> None:
    first = Sandbox()
    first.start()
    second: Sandbox | None = None
    port = int(first.url.rsplit(":", 1)[1])
    try:
        first.create(checkpoint(NAME, save={"interval": 10}, retention={"keepLast": 100}))
        # The pod's kubeconfig outlives both servers (the sandbox's own is deleted on stop).
        kubeconfig = first.write_kubeconfig(tmp_path / "kubeconfig")
        env = {
            "CAIRN_CHECKPOINT": f"default/{NAME}",
            "KUBECONFIG": str(kubeconfig),
            "CAIRN_STATUS_MIN_INTERVAL_S": "0.2",
        }
        root = tmp_path / "ckpt"
        plan = Plan(
            root=str(root), env=env, gates=str(tmp_path / "gates"), save_interval=50,
            step_sleep_s=0.2, max_steps=1000,
        )  # fmt: skip
        with GovernedRun(plan) as run:
            run.wait_for(lambda: 10 in _reported(first), "the first save reported")
            before = first.get("checkpoints", NAME)
            first.stop()
            away_from, before_outage = time.time(), set(committed_iterations(root))
            run.wait_for(lambda: time.time() - away_from >= OUTAGE_S, "the outage to pass")
            during = set(committed_iterations(root)) - before_outage
            back_at = time.time()
            second = _restart(port, before)
            assert len(during) >= 3, f"training made only {sorted(during)} saves in {OUTAGE_S}s"
            run.wait_for(lambda: during <= _reported(second), "the outage's saves in status", 60)
            records = run.stop()  # rank 0 flushed its last reports before returning
            status = second.get("checkpoints", NAME)["status"]
    finally:
        first.stop()
        if second is not None:
            second.stop()

    view = same_on_every_rank(records, "interval", "saved")
    saved = [step for step, _, did in view if did]
    assert saved == [step for step, _, _ in view if step % 10 == 0]
    assert committed_iterations(root) == saved
    # Status converged: every save, the ones made while the server was away included.
    assert status["latestCommittedIteration"] == saved[-1]
    assert sorted(e["iteration"] for e in status["savedIterations"]) == saved
    assert status["appliedPolicy"]["values"]["saveInterval"] == 10
    # Nothing waited on the API server: no step took anywhere near the outage, and training
    # kept (at least half) the pace it had before it, on a busy machine.
    rank0 = records[0]
    away = [r for r in rank0 if away_from <= r.started and r.started + r.seconds <= back_at]
    ahead = [r.seconds for r in rank0 if r.started + r.seconds < away_from]
    assert max(r.seconds for r in rank0) < 5.0
    assert len(away) >= 0.5 * (back_at - away_from) / statistics.median(ahead)
