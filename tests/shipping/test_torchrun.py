"""torchrun is the launcher a cluster Job runs: the example script under
``torchrun --nproc-per-node 2`` commits saves, is SIGKILLed mid-run (torchrun and every process
it started, as a pod kill does), and the relaunched job resumes through Cairn and ends with
parameters bit-identical to an uninterrupted run's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from cairn_agent.storage.listing import committed_iterations
from cairn_agent.storage.tracker import read_tracker

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train_megatron_style.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"
SAVE_EVERY = 10
DEADLINE_S = 300.0
FINGERPRINT = re.compile(r"done at step (\d+); parameters sha256 ([0-9a-f]+)")


def _command(root: Path, steps: int) -> list[str]:
    return [
        str(TORCHRUN),
        "--standalone",  # a free rendezvous port on this host: parallel runs never collide
        "--nproc-per-node",
        "2",
        str(EXAMPLE),
        "--save",
        str(root),
        "--steps",
        str(steps),
        "--save-interval",
        str(SAVE_EVERY),
        "--keep",
        "2",
    ]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("CAIRN_CHECKPOINT", None)  # no cluster reporting from a test run
    return env


def _run_to_end(root: Path, steps: int) -> tuple[int, str, str]:
    """Launch, wait; ``(final step, parameter fingerprint, stdout)``."""
    done = subprocess.run(
        _command(root, steps),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    match = FINGERPRINT.search(done.stdout)
    assert match, done.stdout
    return int(match.group(1)), match.group(2), done.stdout


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL torchrun and all it started (its workers run in their own sessions, so a
    process-group kill would miss them; a pod kill takes them all)."""
    parent = psutil.Process(proc.pid)
    tree = [parent, *parent.children(recursive=True)]
    for member in tree:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)  # reaps torchrun itself (psutil would take its exit status)
    _, alive = psutil.wait_procs(tree[1:], timeout=30)
    assert not alive, f"still running after SIGKILL: {alive}"


def _wait_for_commit(root: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        tracker = read_tracker(root) if root.exists() else None
        if tracker is not None and tracker.iteration >= 2 * SAVE_EVERY:
            return
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    raise AssertionError(f"no committed save within {DEADLINE_S}s:\n{log.read_text()}")


@pytest.mark.timeout(900)
def test_torchrun_job_killed_mid_run_resumes_bit_exactly(tmp_path: Path) -> None:
    root = tmp_path / "run"
    log = tmp_path / "killed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _command(root, 1_000_000), stdout=out, stderr=subprocess.STDOUT, env=_env()
        )
        try:
            _wait_for_commit(root, proc, log)
        finally:
            _kill_tree(proc)
    assert proc.returncode == -9  # killed, not finished
    killed_at = read_tracker(root)
    assert killed_at is not None and killed_at.iteration in committed_iterations(root)

    target = killed_at.iteration + 2 * SAVE_EVERY + 3  # past the kill, not on a save step
    resumed_step, resumed, stdout = _run_to_end(root, target)
    assert f"resuming from iteration {killed_at.iteration}" in stdout
    reference_step, reference, _ = _run_to_end(tmp_path / "reference", target)
    assert resumed_step == reference_step == target
    assert resumed == reference
