"""``cairn demo``: Cairn end to end on this machine, as a list of named steps.

Each step prints what it shows. The checkpoint root is kept afterwards (its path is printed) so
the commands of the tour (``cairn inspect|verify|gc``) can be run on it. Only the save/load step
imports torch, and only when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cairn_agent.cli import gc as gc_command
from cairn_agent.cli import inspect as inspect_command
from cairn_agent.cli import verify as verify_command
from cairn_agent.storage.retention import RetentionPolicy

NAME = "demo"


@dataclass(kw_only=True)
class DemoContext:
    """What the steps share."""

    root: Path
    """Checkpoint root the demo writes into."""
    world_size: int
    """Number of gloo ranks of the save/load round trip."""
    out: TextIO = field(default_factory=lambda: sys.stdout)
    """Where steps print."""


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
        help="save and load a sharded state on 2 CPU ranks, then inspect, verify and plan GC",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dir", type=Path, help="checkpoint root to use (default: a new temporary directory)"
    )
    parser.add_argument("--world-size", type=int, default=2, help="number of gloo ranks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.world_size < 1:
        raise ValueError(f"--world-size={args.world_size} must be >= 1")
    root = args.dir if args.dir is not None else Path(tempfile.mkdtemp(prefix="cairn-demo-"))
    context = DemoContext(root=root, world_size=args.world_size)
    run_steps(STEPS, context)
    return 0


def run_steps(steps: tuple[Step, ...], context: DemoContext) -> None:
    """Run ``steps`` in order, each under a numbered heading."""
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


def save_and_load(context: DemoContext) -> None:
    """A real sharded save and resume on ``world_size`` gloo ranks (imports torch)."""
    from cairn_agent.engine.demo import roundtrip_demo

    # The ranks are fresh interpreters that inherit the environment: keep megatron-core's
    # "Apex/Transformer Engine not installed" warnings from burying the demo's output.
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    summary = roundtrip_demo(context.root, world_size=context.world_size)
    print(summary, file=context.out)


def show_inspect(context: DemoContext) -> None:
    """What ``cairn inspect`` shows for the root the demo wrote."""
    report = inspect_command.inspect_root(context.root)
    print(inspect_command.render(report), file=context.out)


def show_verify(context: DemoContext) -> None:
    """``cairn verify --deep``; the demo fails loudly if its own checkpoint does not verify."""
    findings = verify_command.verify_root(context.root, deep=True)
    print(verify_command.render(findings, deep=True), file=context.out)
    corrupt = [f.detail for f in findings if f.status == "corrupt"]
    if corrupt:
        raise RuntimeError(f"the demo's checkpoint failed verification: {corrupt}")


def show_gc_plan(context: DemoContext) -> None:
    """What ``cairn gc --keep-last 1 --dry-run`` would do (nothing is deleted)."""
    options = gc_command.GcOptions(
        policy=RetentionPolicy(keep_last=1),
        protect=frozenset(),
        generation=None,
        deep=False,
        dry_run=True,
    )
    print(gc_command.render(gc_command.collect(context.root, options)), file=context.out)


STEPS: tuple[Step, ...] = (
    Step("Save a sharded state on 2 CPU ranks, load it back (gloo)", save_and_load),
    Step("Inspect the checkpoint root (cairn inspect)", show_inspect),
    Step("Verify every file against its manifest (cairn verify --deep)", show_verify),
    Step("Plan retention without deleting (cairn gc --keep-last 1 --dry-run)", show_gc_plan),
)
