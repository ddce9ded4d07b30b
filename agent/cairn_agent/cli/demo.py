"""``cairn demo``: the whole Cairn story on this machine, as a list of named steps.

A local Kubernetes API server (the sandbox, with the Checkpoint CRD) and the Cairn operator run
in this process; ``kubectl`` and a 2-rank gloo training job run as real subprocesses against them.
The job checkpoints and reports to its Checkpoint; then its newest checkpoint is corrupted on
disk, and the restarted job refuses it and falls back while the operator moves the resume point
back; training goes on and follows the SRE's live edit of the policy; the node under the job is
drained, the job saves the step it reached and the restarted job resumes from it; retention
cleans up. Each step prints what it shows and fails loudly
when it does not see what it expects. The checkpoint root is kept afterwards (its path is
printed) so ``cairn inspect|verify|gc`` can be run on it.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cairn_agent.cli import demo_drain, demo_live
from cairn_agent.cli import gc as gc_command
from cairn_agent.cli import inspect as inspect_command
from cairn_agent.cli import verify as verify_command
from cairn_agent.cli.demo_cluster import (
    DemoCluster,
    TrainingJob,
    checkpoint_manifest,
    finish_training,
    start_training,
    wait_for,
    wait_until_resumed,
)
from cairn_agent.resource import contract
from cairn_agent.storage import layout
from cairn_agent.storage.retention import GcOptions, RetentionPolicy
from cairn_agent.storage.retention.arguments import to_arguments

NAME = "demo"
CHECKPOINT = "demo"
KEEP_LAST = 2
SAVE_INTERVAL = 10
FIRST_RUN_STEPS = 30
SECOND_RUN_STEPS = 50
HOLD_FILE = "release-the-restarted-job"


@dataclass(kw_only=True)
class DemoContext:
    """What the steps share."""

    root: Path
    """Checkpoint root the demo writes into."""
    world_size: int
    """Number of gloo ranks of the training job."""
    out: TextIO = field(default_factory=lambda: sys.stdout)
    """Where steps print."""
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    """Closes what the steps started (API server, operator, a held training job)."""
    cluster: DemoCluster | None = None
    """The API server and operator, once started."""
    corrupted: int | None = None
    """The iteration whose shard the demo corrupted."""
    restarted: TrainingJob | None = None
    """The restarted training job, held after resuming until the demo has shown the cluster."""

    def kube(self) -> DemoCluster:
        if self.cluster is None:
            raise RuntimeError("the cluster step did not run; run the steps in order")
        return self.cluster


@dataclass(frozen=True)
class Step:
    """One named step of the demo."""

    title: str
    """Printed as the step's heading."""
    run: Callable[[DemoContext], None]
    """Does the work and prints what it shows."""


def add_parser(subparsers: Any) -> None:
    """Register ``cairn demo``."""
    parser = subparsers.add_parser(
        NAME,
        help="the whole story locally: API server, operator, training, corruption, fallback",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dir", type=Path, help="checkpoint root to use (default: a new temporary directory)"
    )
    parser.add_argument("--world-size", type=int, default=2, help="number of gloo ranks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The demo's cluster is the test kit, an optional extra: without it, fail in one line
    # (SandboxNotInstalledError) before any step runs.
    import cairn_operator.testing  # noqa: F401

    if args.world_size < 1:
        raise ValueError(f"--world-size={args.world_size} must be >= 1")
    root = args.dir if args.dir is not None else Path(tempfile.mkdtemp(prefix="cairn-demo-"))
    if root.exists() and any(root.iterdir()):
        raise ValueError(
            f"--dir {root} is not empty; the demo starts from an empty checkpoint root"
        )
    context = DemoContext(root=root.resolve(), world_size=args.world_size)
    run_steps(STEPS, context)
    return 0


def run_steps(steps: tuple[Step, ...], context: DemoContext) -> None:
    """Run ``steps`` in order, each under a numbered heading; stop what they started at the end."""
    context.root.mkdir(parents=True, exist_ok=True)
    with context.stack:
        for number, step in enumerate(steps, start=1):
            heading = f"[{number}/{len(steps)}] {step.title}"
            print(f"\n{heading}\n{'-' * len(heading)}", file=context.out, flush=True)
            step.run(context)
    print(_closing(context.root), file=context.out, flush=True)


def _closing(root: Path) -> str:
    return (
        f"\nDemo done. The checkpoint root is kept at {root}; try:\n"
        f"  cairn inspect {root}\n"
        f"  cairn verify {root} --deep\n"
        f"  cairn gc {root} --keep-last 1 --dry-run\n"
    )


def say(context: DemoContext, message: str) -> None:
    print(f"==> {message}", file=context.out, flush=True)


def _resume_point(context: DemoContext) -> Mapping[str, Any]:
    point = context.kube().status(CHECKPOINT).get(contract.RESUME_FROM)
    return point if isinstance(point, Mapping) else {}


def _wait_resume_point(context: DemoContext, iteration: int, reasons: tuple[str, ...]) -> str:
    """Wait until the operator publishes ``iteration`` as the resume point; its reason."""

    def probe() -> str | None:
        point = _resume_point(context)
        ok = point.get("iteration") == iteration and point.get("reason") in reasons
        return str(point["reason"]) if ok else None

    what = f"status.resumeFrom = iteration {iteration} ({' or '.join(reasons)})"
    try:
        return wait_for(what, probe)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; last seen: {dict(_resume_point(context))}") from None


def _training_args(context: DemoContext, steps: int) -> list[str]:
    return [
        "--save", str(context.root), "--steps", str(steps),
        "--save-interval", str(SAVE_INTERVAL), "--keep", str(KEEP_LAST),
        "--world-size", str(context.world_size),
    ]  # fmt: skip


def _expect_line(lines: list[str], text: str) -> None:
    if not any(text in line for line in lines):
        raise RuntimeError(f"the training job did not print {text!r}; it printed {lines}")


# --- the steps --------------------------------------------------------------------------------
def start_cluster(context: DemoContext) -> None:
    """API server + operator; a Checkpoint for the demo's root; the operator validates it."""
    if shutil.which("kubectl") is None:
        raise RuntimeError("kubectl is not on PATH; the demo shows the cluster through it")
    cluster = context.stack.enter_context(DemoCluster(context.out))
    context.cluster = cluster
    say(context, f"Kubernetes API sandbox at {cluster.url}; the operator runs in this process")
    cluster.create(checkpoint_manifest(CHECKPOINT, context.root, keep_last=KEEP_LAST))
    say(context, f"created Checkpoint {CHECKPOINT} (storage {context.root}, keepLast {KEEP_LAST})")

    def valid() -> str | None:
        status = cluster.status(CHECKPOINT)
        for condition in status.get("conditions") or ():
            if condition.get("type") == "Valid" and condition.get("status") == "True":
                return f"Valid ({condition.get('message')}), phase {status.get('phase')}"
        return None

    judged = wait_for("the operator to accept the spec (condition Valid=True)", valid)
    say(context, f"the operator judged it: {judged}; no checkpoint yet")
    cluster.kubectl("get", "ckpt")


def train_first_run(context: DemoContext) -> None:
    """Generation 0 trains and saves; the agent reports; the operator picks the resume point."""
    cluster = context.kube()
    job = start_training(
        cluster, _training_args(context, FIRST_RUN_STEPS), generation=0, checkpoint=CHECKPOINT
    )
    _expect_line(finish_training(cluster, job), "starting at step 0")
    reason = _wait_resume_point(context, FIRST_RUN_STEPS, ("LatestVerified",))
    say(context, f"the operator published resumeFrom: iteration {FIRST_RUN_STEPS} ({reason})")
    cluster.kubectl("get", "ckpt")
    cluster.kubectl("cairn", "describe", CHECKPOINT)


def corrupt_newest(context: DemoContext) -> None:
    """Flip bytes in the newest checkpoint's largest shard; ``cairn verify --deep`` catches it."""
    newest = int(layout.tracker_path(context.root).read_text().strip())
    directory = layout.iteration_dir(context.root, newest)
    shard = max(directory.glob(f"*{layout.DISTCP_SUFFIX}"), key=lambda p: p.stat().st_size)
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    shard.write_bytes(bytes(data))
    context.corrupted = newest
    say(context, f"flipped 16 bytes in the middle of {shard.relative_to(context.root)}")
    command = ["cairn", "verify", str(context.root), "--deep"]
    print(f"$ {' '.join(command)}", file=context.out)
    done = subprocess.run(
        command, capture_output=True, text=True, env=context.kube().env(), timeout=120, check=False
    )
    print(done.stdout.rstrip() + "\n" + done.stderr.rstrip(), file=context.out)
    if done.returncode != 2 or shard.name not in done.stdout + done.stderr:
        raise RuntimeError(f"cairn verify --deep exited {done.returncode} without naming {shard}")
    say(context, f"cairn verify exited {done.returncode}: iteration {newest} is corrupt")


def restart_and_fall_back(context: DemoContext) -> None:
    """Generation 1 refuses the corrupt checkpoint; the operator moves resumeFrom back."""
    cluster, bad = context.kube(), _corrupted(context)
    hold = cluster.scratch / HOLD_FILE
    argv = [*_training_args(context, SECOND_RUN_STEPS), "--hold", str(hold)]
    job = start_training(cluster, argv, generation=1, checkpoint=CHECKPOINT)
    context.restarted = job
    wait_until_resumed(hold, job)
    lines = job.show_new_lines(context.out)
    _expect_line(lines, "falling back to")
    _expect_line(lines, f"resumed from iteration {bad - SAVE_INTERVAL}")
    say(context, "the restarted job resumed and is held while we look at the cluster:")
    previous = bad - SAVE_INTERVAL
    reason = _wait_resume_point(context, previous, ("FallbackFromCorrupt",))
    say(context, f"resumeFrom moved back to iteration {previous} ({reason})")
    events = wait_for("a ResumeFallback Event", lambda: cluster.events("ResumeFallback") or None)
    cluster.kubectl("get", "ckpt")
    cluster.kubectl(
        "get",
        "events",
        "--field-selector",
        "reason=ResumeFallback",
        "-o",
        "custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name",
    )
    say(context, f"Event message: {_brief(str(events[-1].get('message')))}")
    reported = cluster.status(CHECKPOINT).get(contract.CORRUPT_ITERATIONS) or []
    if bad not in [entry.get("iteration") for entry in reported]:
        raise RuntimeError(f"iteration {bad} is not in status.corruptIterations: {reported}")
    say(context, f"status.corruptIterations lists iteration {bad}")
    hold.touch()


def continue_training(context: DemoContext) -> None:
    """The job trains on from the fallback and saves good checkpoints past the corrupt one."""
    cluster = context.kube()
    if context.restarted is None:
        raise RuntimeError("the restart step did not run; run the steps in order")
    say(context, "released the restarted job")
    finish_training(cluster, context.restarted)
    reason = _wait_resume_point(context, SECOND_RUN_STEPS, ("LatestVerified",))
    say(context, f"the operator published resumeFrom: iteration {SECOND_RUN_STEPS} ({reason})")
    cluster.kubectl("get", "ckpt")
    last = cluster.status(CHECKPOINT).get(contract.LAST_RESUME) or {}
    say(
        context,
        f"status.lastResume: iteration {last.get('iteration')}, "
        f"generation {last.get('generation')} (reported by the restarted job)",
    )


def steer_the_running_job(context: DemoContext) -> None:
    """The SRE edits save interval and retention with kubectl patch; the running job follows."""
    argv = _training_args(context, demo_live.LIVE_STEPS)
    saved = demo_live.steer_live(context.kube(), CHECKPOINT, argv, lambda m: say(context, m))
    say(
        context,
        f"saves of generation 2: {saved} (every {SAVE_INTERVAL}, then every "
        f"{demo_live.NEW_INTERVAL} once the job applied the edit)",
    )


def drain_the_node(context: DemoContext) -> None:
    """The node under the job is drained; the job saves the step it reached; the restart resumes."""
    outcome = demo_drain.drain(
        context.kube(),
        CHECKPOINT,
        lambda steps: _training_args(context, steps),
        lambda m: say(context, m),
    )
    say(
        context,
        f"the drain cost no step: saved at iteration {outcome.drain_saved} when the node was "
        f"cordoned, at {outcome.stopped_at} on SIGTERM; the restart resumed from "
        f"{outcome.resumed_from}",
    )


def inspect_and_plan(context: DemoContext) -> None:
    """``cairn inspect``, ``cairn verify --deep`` (all good again), ``cairn gc --dry-run``."""
    print(f"$ cairn inspect {context.root}", file=context.out)
    print(inspect_command.render(inspect_command.inspect_root(context.root)), file=context.out)
    findings = verify_command.verify_root(context.root, deep=True)
    print(f"$ cairn verify {context.root} --deep", file=context.out)
    print(verify_command.render(findings, deep=True), file=context.out)
    corrupt = [f.detail for f in findings if f.status != "ok"]
    if corrupt:
        raise RuntimeError(f"the demo's checkpoint root failed verification: {corrupt}")
    keep_last = demo_live.NEW_KEEP_LAST
    options = GcOptions(policy=RetentionPolicy(keep_last=keep_last), dry_run=True)
    print(f"$ cairn {' '.join(to_arguments(str(context.root), options))}", file=context.out)
    plan = gc_command.collect(context.root, options)
    print(gc_command.render(plan), file=context.out)
    # Which checkpoints outlive keepLast depends on the runs before (the agent protects the one a
    # run resumed from while that run lasts): say what this root shows rather than a fixed story.
    if plan["delete"]:
        say(
            context,
            f"the job kept iteration(s) {plan['delete']} beyond keepLast {keep_last}: the agent "
            "protects the checkpoint a run resumed from while that run lasts",
        )
    else:
        say(context, f"the job's own retention already left only the newest {keep_last}")


def _brief(text: str) -> str:
    """A message's first line, and its last when it spans several (tracebacks)."""
    lines = text.strip().splitlines() or [""]
    return lines[0] if len(lines) == 1 else f"{lines[0]} [...] {lines[-1]}"


def _corrupted(context: DemoContext) -> int:
    if context.corrupted is None:
        raise RuntimeError("the corruption step did not run; run the steps in order")
    return context.corrupted


STEPS: tuple[Step, ...] = (
    Step("Start a local API server and the operator; create Checkpoint 'demo'", start_cluster),
    Step("Train on 2 gloo ranks; the agent reports, the operator picks a resume point",
         train_first_run),
    Step("Disaster: corrupt the newest checkpoint on disk (cairn verify --deep)", corrupt_newest),
    Step("Restart: the agent refuses the corrupt checkpoint, the operator falls back",
         restart_and_fall_back),
    Step("Training goes on and saves good checkpoints past the corrupt one", continue_training),
    Step("The SRE edits the policy with kubectl patch; the running job follows, no restart",
         steer_the_running_job),
    Step("The node under the job is drained: the job saves the step it reached, the restart "
         "resumes from it", drain_the_node),
    Step("Inspect, verify and plan retention (cairn inspect / verify / gc --dry-run)",
         inspect_and_plan),
)  # fmt: skip
