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


def _drain_iterations(section: str) -> tuple[int, int]:
    """The iteration saved when the node was cordoned and the step the job stopped at."""
    drained = re.search(
        r"status\.lastPreemption: NodeCordoned .* iteration (\d+) saved in", section
    )
    stopped = re.search(r"\[rank 0\] stopped at step (\d+) on SIGTERM", section)
    assert drained is not None and stopped is not None, section
    return int(drained.group(1)), int(stopped.group(1))


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
    # The corrupt iteration 30 was saved again by the restarted job, then retired by retention;
    # so was 50, protected only while generation 2 (which resumed from it) ran.
    assert not layout.iteration_dir(root, 30).exists()
    assert not layout.iteration_dir(root, 50).exists()
    # The drain step ends the story: generation 3 saved when its node was cordoned and when it
    # got SIGTERM (and, if it reached a boundary in between, when the pod deletion asked again);
    # generation 4 resumed from the SIGTERM step (and may answer the pod deletion's request once
    # more: the SIGTERM answer replaced it in status.lastSaveRequest). At most three saves follow
    # the cordon's, so keepLast 4 keeps both drain saves; the tracker names the newest.
    drained, stopped = _drain_iterations(_section(stdout, 7))
    kept = sorted(int(p.name.split("_")[1]) for p in root.glob("iter_*"))
    assert len(kept) == 4 and {drained, stopped} <= set(kept)
    assert layout.tracker_path(root).read_text().strip() == str(kept[-1])


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


@pytest.mark.timeout(900)
def test_a_drained_node_costs_no_step(demo: tuple[str, Path]) -> None:
    stdout, _ = demo
    drain = _section(stdout, 7)
    assert "$ kubectl cordon demo-node-1" in drain
    # The operator asked at once, naming the cordoned node; the job answered with a commit.
    assert re.search(r"spec\.saveNow = \{\"requestId\": \"preempt-node-demo-node-1-", drain)
    assert '"reason": "NodeCordoned: node/demo-node-1' in drain
    drained, stopped = _drain_iterations(drain)
    assert drained > 119  # past generation 2's last save: the steps since then were saved
    assert re.search(rf"iteration {drained} saved in [0-9.]+s \(Committed\)", drain)
    assert "status.lastSaveRequest answered preempt-node-demo-node-1-" in drain
    # LATEST and RESUME-FROM of the table shown right after the drain save.
    assert ["demo", str(drained), str(drained), "Ready"] == _ckpt_rows(drain)[0][:4]
    # Then the pod is deleted and the job, SIGTERMed, stops at the step it reached, committed.
    assert "$ kubectl delete pod demo-train-0 --wait=false" in drain
    assert f"stopped at step {stopped} on SIGTERM: checkpoint committed (exit 143)" in drain
    assert stopped >= drained
    assert f"the job exited 143 at step {stopped}, its checkpoint committed" in drain
    assert f"answered by sigterm-3-{stopped}, iteration {stopped} (Committed)" in drain
    assert ["demo", str(stopped), str(stopped), "Ready"] == _ckpt_rows(drain)[1][:4]
    # The restarted job (generation 4) resumes from exactly that step.
    assert "CAIRN_GENERATION=4" in drain
    assert f"[rank 0] resumed from iteration {stopped}" in drain
