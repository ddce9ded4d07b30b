"""``cairn demo`` (what ``make demo`` runs): every step runs and the checkpoint it leaves verifies."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cairn_agent.cli.demo import STEPS
from cairn_agent.cli.verify import verify_root


# Spawns gloo ranks (torch + megatron-core imports): slow on a loaded machine.
@pytest.mark.timeout(900)
def test_demo_runs_every_step_and_leaves_a_verifiable_root(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "CAIRN_CHECKPOINT"}
    done = subprocess.run(
        ["cairn", "demo", "--dir", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    for number, step in enumerate(STEPS, start=1):
        assert f"[{number}/{len(STEPS)}] {step.title}" in done.stdout
    assert f"cairn inspect {root}" in done.stdout
    findings = verify_root(root, deep=True)
    assert [f.status for f in findings] == ["ok"] * len(findings) and len(findings) >= 2
