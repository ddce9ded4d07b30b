"""Runnable examples are documentation: run them as a user would and check what they promise."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cairn_agent.storage import layout
from cairn_agent.storage.listing import committed_iterations
from cairn_agent.storage.tracker import read_tracker

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train_megatron_style.py"


def _train(root: Path, *argv: str) -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("CAIRN_CHECKPOINT", None)  # no cluster reporting from a test run
    command = [sys.executable, str(EXAMPLE), "--save", str(root), *argv]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=900, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# Spawns gloo ranks (torch + megatron-core imports): slow on a loaded machine.
@pytest.mark.timeout(900)
def test_training_example_saves_every_interval_then_resumes_and_keeps_the_newest(
    tmp_path: Path,
) -> None:
    if importlib.util.find_spec("cairn_agent.checkpointing") is None:
        pytest.skip("cairn_agent.checkpointing (the seed-API facade) is not written yet")
    root = tmp_path / "run"

    first = _train(root, "--steps", "20", "--save-interval", "10", "--keep", "2")
    assert "no checkpoint yet: starting at step 0" in first
    assert committed_iterations(root) == [10, 20]
    assert read_tracker(root).iteration == 20  # type: ignore[union-attr]

    second = _train(root, "--steps", "30", "--save-interval", "10", "--keep", "2")
    assert "resuming from iteration 20" in second
    assert "step 30" in second
    assert committed_iterations(root) == [20, 30]  # most_recent_k=2 dropped iteration 10
    assert read_tracker(root).iteration == 30  # type: ignore[union-attr]
    verify = subprocess.run(
        ["cairn", "verify", str(root), "--deep"], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert (layout.iteration_dir(root, 30) / layout.COMMON_PT).is_file()
