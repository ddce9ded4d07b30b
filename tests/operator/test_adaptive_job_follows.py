"""Policy Adaptive end to end with a real job: the interval the operator publishes is the one the
running job saves at, and it follows the changes (shorter after failures, longer after quiet)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cairn_operator.testing import Sandbox

from tests.operator.conftest import ShiftedClock, checkpoint, get_when
from tests.operator.test_adaptive_operator import SAVE, _adaptive, _pod, _steps

NAME = "adaptive-job"


class _Job:
    """A one-rank training job that asks ``save_due`` every step (its saves are not needed)."""

    def __init__(self, root: Path) -> None:
        from cairn_agent import checkpointing
        from cairn_agent.config import CheckpointConfig, ConfigContainer
        from cairn_agent.state.train import GlobalState

        self.checkpointing = checkpointing
        cfg = CheckpointConfig(save=str(root), load=str(root), save_interval=5000)
        self.state = GlobalState(ConfigContainer(checkpoint=cfg))
        self.model = torch.nn.Linear(2, 2)
        checkpointing.load_checkpoint(self.state, [self.model], None, None)

    def run_until(self, done: Callable[[int | None], bool], what: str) -> int | None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.state.train_state.step += 1
            self.checkpointing.save_due(self.state)
            interval = self.state.cfg.checkpoint.save_interval
            if done(interval):
                return interval
            time.sleep(0.01)
        from cairn_agent.state.run import run_of

        control = run_of(self.state).control
        snap = control._watch.snapshot() if control is not None and control._watch else None
        seen = (snap.status.get("adaptiveInterval") or {}).get("persistent") if snap else None
        raise AssertionError(
            f"the job did not follow: {what}; it saves every {interval}; watch saw {seen}"
        )


@pytest.fixture
def job(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Job]:
    from cairn_agent.engine.dist import single_process_group

    sandbox.create(checkpoint(NAME, save=SAVE))
    monkeypatch.setenv("CAIRN_CHECKPOINT", f"default/{NAME}")
    monkeypatch.setenv("KUBECONFIG", str(sandbox.kubeconfig))
    monkeypatch.setenv("CAIRN_STATUS_MIN_INTERVAL_S", "0.1")
    with single_process_group():
        yield _Job(tmp_path)


def _report(sandbox: Sandbox, **status: Any) -> None:
    sandbox.patch("checkpoints", NAME, {"status": status}, subresource="status")


def _resumed(sandbox: Sandbox, clock: ShiftedClock, iteration: int) -> None:
    from cairn_agent.resource.times import format_time

    _report(
        sandbox,
        lastResume={"iteration": iteration, "source": "persistent", "time": format_time(clock())},
    )


def _restart(sandbox: Sandbox, attempt: int) -> None:
    before = (sandbox.get("checkpoints", NAME).get("status") or {}).get("restarts") or {}
    sandbox.delete("pods", "adaptive-job-0")
    pod = _pod("adaptive-job-0", f"gen{attempt}")
    pod["metadata"]["labels"]["cairn.dev/checkpoint"] = NAME
    sandbox.create(pod)
    get_when(
        sandbox,
        NAME,
        lambda o: (o["status"].get("restarts") or {}).get("count", 0) > before.get("count", 0),
        what=f"restart {attempt} counted",
    )


@pytest.mark.usefixtures("operator")
def test_the_job_follows_the_adaptive_interval(
    sandbox: Sandbox, clock: ShiftedClock, job: _Job
) -> None:
    pod = _pod("adaptive-job-0", "gen0")
    pod["metadata"]["labels"]["cairn.dev/checkpoint"] = NAME
    sandbox.create(pod)
    _resumed(sandbox, clock, 0)
    assert job.run_until(lambda i: i == 1000, "the spec's interval before any publication")
    _report(
        sandbox,
        saveStats={
            "stepTimeSeconds": 5.0,
            "persistent": {"recentStallSeconds": [30.0, 29.0, 31.0]},
        },
    )
    active = get_when(sandbox, NAME, lambda o: _adaptive(o).get("state") == "Active")
    first = _steps(active)
    assert first is not None and first < 1000
    assert job.run_until(lambda i: i == first, f"the first published interval {first}")

    for attempt in range(1, 4):
        clock.advance(650)
        _restart(sandbox, attempt)
        clock.advance(120)
        _resumed(sandbox, clock, 1000 * attempt)
    shorter = get_when(
        sandbox,
        NAME,
        lambda o: (_steps(o) or first) < first * 0.7,
        what="an interval shortened by three failures",
    )
    short = _steps(shorter)
    assert job.run_until(lambda i: i == short, f"the shortened interval {short}")

    clock.advance(60 * 86_400)
    _report(sandbox, saveStats={"stepTimeSeconds": 5.1})
    get_when(sandbox, NAME, lambda o: _steps(o) == 1000, what="lengthened to maxInterval")
    assert job.run_until(lambda i: i == 1000, "the lengthened interval (maxInterval)")
    # ... and says so: status.appliedPolicy names the operator's interval as the source.
    reported = get_when(
        sandbox,
        NAME,
        lambda o: (
            ((o["status"].get("appliedPolicy") or {}).get("values") or {}).get("saveInterval")
            == 1000
        ),
        what="appliedPolicy reporting the lengthened interval",
    )
    assert reported["status"]["appliedPolicy"]["sources"]["saveInterval"] == "adaptive"
