"""``cairn demo`` (what ``make demo`` runs): the whole story on one machine.

One run of the real command (API sandbox + operator in its process, kubectl and a 2-rank gloo
training job as subprocesses). The demo polls the cluster with deadlines and fails on anything it
does not see; here the story's outcomes are checked in what it printed (kubectl's own tables
included) and on the checkpoint root it leaves behind.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from cairn_agent.cli.demo import STEPS
from cairn_agent.cli.verify import verify_root
from cairn_agent.storage import layout


def _section(stdout: str, number: int) -> str:
    """What step ``number`` printed (from its heading to the next one)."""
    start = stdout.index(f"[{number}/{len(STEPS)}] ")
    end = stdout.find(f"[{number + 1}/{len(STEPS)}] ", start)
    return stdout[start : end if end >= 0 else len(stdout)]


def _ckpt_rows(section: str) -> list[list[str]]:
    """Rows of ``kubectl get ckpt`` tables for the Checkpoint ``demo`` in ``section``."""
    return [line.split() for line in section.splitlines() if re.match(r"\s+demo\s", line)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("demo") / "root"
    env = {k: v for k, v in os.environ.items() if k not in ("CAIRN_CHECKPOINT", "KUBECONFIG")}
    done = subprocess.run(
        ["cairn", "demo", "--dir", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, root


# Spawns 2 training jobs of 2 gloo ranks (torch + megatron-core imports): slow on a loaded machine.
@pytest.mark.timeout(900)
def test_every_step_runs_and_the_root_verifies_after_retention(demo: tuple[str, Path]) -> None:
    stdout, root = demo
    for number, step in enumerate(STEPS, start=1):
        assert f"[{number}/{len(STEPS)}] {step.title}" in stdout
    assert f"cairn inspect {root}" in stdout
    findings = verify_root(root, deep=True)
    assert [f.status for f in findings] == ["ok"] * len(findings)
    # Generation 2 ran to 120 saving every 7 once the SRE's edit applied: 119 is the newest.
    assert layout.tracker_path(root).read_text().strip() == "119"
    # The corrupt iteration 30 was saved again by the restarted job, then retired by retention;
    # generation 2's resume point (50) is protected while it runs; keepLast 4 keeps the rest.
    assert not layout.iteration_dir(root, 30).exists()
    kept = sorted(int(p.name.split("_")[1]) for p in root.glob("iter_*"))
    assert kept == [50, 98, 105, 112, 119]


@pytest.mark.timeout(900)
def test_the_cluster_follows_the_training_job(demo: tuple[str, Path]) -> None:
    stdout, _ = demo
    # LATEST and RESUME-FROM empty before training, then both 30 after the first run.
    assert _ckpt_rows(_section(stdout, 1))[0][1] == "Pending"
    assert ["demo", "30", "30", "Ready"] == _ckpt_rows(_section(stdout, 2))[0][:4]
    assert "Resume point:     iteration 30 (persistent): LatestVerified" in _section(stdout, 2)


@pytest.mark.timeout(900)
def test_corruption_is_caught_and_the_restart_falls_back_to_the_previous_checkpoint(
    demo: tuple[str, Path],
) -> None:
    stdout, _ = demo
    disaster = _section(stdout, 3)
    assert "CORRUPT    iter_0000030" in disaster and "__0_0.distcp" in disaster
    assert "cairn verify exited 2" in disaster
    restart = _section(stdout, 4)
    assert "IS NOT LOADABLE" in restart and "falling back to" in restart
    assert "[rank 0] resumed from iteration 20" in restart
    assert "resumeFrom moved back to iteration 20 (FallbackFromCorrupt)" in restart
    assert ["demo", "30", "20"] == _ckpt_rows(restart)[0][:3]  # LATEST 30, RESUME-FROM 20
    assert re.search(r"Warning\s+ResumeFallback\s+demo", restart)
    assert "status.corruptIterations lists iteration 30" in restart
    onwards = _section(stdout, 5)
    assert "saved [30, 40, 50]" in onwards
    assert ["demo", "50", "50", "Ready"] == _ckpt_rows(onwards)[0][:4]
    assert "status.lastResume: iteration 20, generation 1" in onwards


@pytest.mark.timeout(900)
def test_the_running_job_follows_the_sre_s_kubectl_patch(demo: tuple[str, Path]) -> None:
    stdout, _ = demo
    live = _section(stdout, 6)
    assert "save every 10 steps (from script), keepLast 2" in live
    assert "kubectl patch ckpt demo --type merge" in live
    assert "save every 7 steps (from spec), keepLast 4; no restart" in live
    spec_gen, applied_gen = _ckpt_rows(live)[0][5:7]
    assert spec_gen == applied_gen == "2"  # SPEC-GEN and APPLIED-GEN columns agree
    saved = re.search(r"saved \[([0-9, ]+)\]", live)
    assert saved is not None
    steps = [int(x) for x in saved.group(1).split(",")]
    # The old cadence first (every 10, from 60), then every 7 from the boundary that applied it.
    switch = next(i for i, step in enumerate(steps) if step % 10)
    assert steps[0] == 60 and all(step % 10 == 0 for step in steps[:switch])
    assert steps[-1] == 119 and all(step % 7 == 0 for step in steps[switch:])
