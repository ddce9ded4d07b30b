"""``cairn gc <root>``: start-up leftovers GC plus the retention planner, offline.

The same planner the agent runs in-job and the operator reports in ``status.retention``, so
all three agree. Besides the policy flags, the tracker's target and the newest checkpoint that
passes verification are always kept, and nothing newer than the tracker is touched (it may be a
save still being published). Deletions are fenced by the restart generation: a ``--generation``
older than the root's fails before anything is removed. Every decision is printed.

``--delete-all`` removes every checkpoint, the tracker and Cairn's bookkeeping instead: the
operator's clean-up Job runs it when a Checkpoint with ``deletionPolicy: Delete`` is deleted.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn_agent.cli import formatting, purge
from cairn_agent.cli.inspect import leftover_report
from cairn_agent.errors import CheckpointCorruptError, CheckpointNotFoundError
from cairn_agent.storage import layout, listing
from cairn_agent.storage.gc import collect_leftovers
from cairn_agent.storage.generation import ensure_current, read_generation
from cairn_agent.storage.manifest import verify_checkpoint_dir
from cairn_agent.storage.retention import (
    RetentionPlan,
    RetentionPolicy,
    apply_retention,
    plan_retention,
)
from cairn_agent.storage.tracker import read_tracker

NAME = "gc"


def add_parser(subparsers: Any) -> None:
    """Register ``cairn gc``."""
    parser = subparsers.add_parser(
        NAME,
        help="remove leftovers and apply a retention policy to a checkpoint root",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, help="checkpoint root (CheckpointConfig.save)")
    parser.add_argument("--keep-last", type=int, metavar="N", help="keep the newest N")
    parser.add_argument(
        "--keep-every", type=int, metavar="K", help="also keep iterations divisible by K"
    )
    parser.add_argument(
        "--pin", type=int, nargs="+", default=[], metavar="I", help="never delete these"
    )
    parser.add_argument(
        "--protect",
        type=int,
        nargs="+",
        default=[],
        metavar="I",
        help="also keep these (e.g. the operator's resume point)",
    )
    parser.add_argument(
        "--generation",
        type=int,
        metavar="G",
        help="act as restart generation G (default: the root's current generation)",
    )
    parser.add_argument("--deep", action="store_true", help="verify with checksums, not sizes")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument(
        "--delete-all",
        action="store_true",
        help="delete every checkpoint and the tracker (deletionPolicy: Delete)",
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.set_defaults(func=run)


@dataclass(frozen=True, kw_only=True)
class GcOptions:
    """What one ``cairn gc`` run should do."""

    policy: RetentionPolicy
    """Retention policy (keep last / keep every / pinned)."""
    protect: frozenset[int]
    """Extra iterations kept whatever the policy says (e.g. the resume point)."""
    generation: int | None
    """Restart generation to act as; None means the root's current one."""
    deep: bool
    """Checksum files while looking for the newest verified checkpoint."""
    dry_run: bool
    """Only plan and print."""


def run(args: argparse.Namespace) -> int:
    if args.delete_all:
        outcome = purge.delete_all(args.root, generation=args.generation, dry_run=args.dry_run)
        print(formatting.to_json(outcome) if args.json else purge.render(outcome))
        return 0
    options = GcOptions(
        policy=RetentionPolicy(
            keep_last=args.keep_last, keep_every=args.keep_every, pinned=frozenset(args.pin)
        ),
        protect=frozenset(args.protect),
        generation=args.generation,
        deep=args.deep,
        dry_run=args.dry_run,
    )
    outcome = collect(args.root, options)
    print(formatting.to_json(outcome) if args.json else render(outcome))
    return 0


def collect(root: Path, options: GcOptions) -> dict[str, Any]:
    """Leftovers GC, then plan and (unless dry-run) apply retention; the outcome as data."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointNotFoundError(f"{root}: no such checkpoint root (not a directory)")
    generation = read_generation(root) if options.generation is None else options.generation
    # A stale writer touches nothing, leftovers included (apply_retention re-checks per deletion).
    ensure_current(root, generation)
    leftovers = _leftovers(root, options)
    plan, context = make_plan(root, options)
    deleted: list[int] = []
    if not options.dry_run:
        deleted = apply_retention(root, plan, generation=generation)
    return {
        "root": str(root),
        "dryRun": options.dry_run,
        "generation": generation,
        "leftovers": leftovers,
        **context,
        "keep": list(plan.keep),
        "delete": list(plan.delete),
        "reasons": {str(it): why for it, why in sorted(plan.reasons.items())},
        "deleted": deleted,
    }


def _leftovers(root: Path, options: GcOptions) -> list[str]:
    if options.dry_run:
        return [item["name"] for item in leftover_report(root)]
    # With an explicit generation, staging dirs of that generation may belong to a live
    # writer, so only older ones are removed.
    removed = collect_leftovers(root, below_generation=options.generation)
    return [path.name for path in removed]


def make_plan(root: Path, options: GcOptions) -> tuple[RetentionPlan, dict[str, Any]]:
    """The retention plan of ``root`` and what it was based on (tracker, newest verified)."""
    committed = listing.committed_iterations(root)
    # A garbage tracker raises here: without knowing its target nothing may be deleted.
    tracker = read_tracker(root)
    tracked = tracker.iteration if tracker is not None and not tracker.release else None
    newest_verified, corrupt = newest_verified_iteration(root, committed, deep=options.deep)
    protected = set(options.protect) | ({tracked} if tracked is not None else set())
    plan = plan_retention(
        committed,
        options.policy,
        protected=protected,
        newest_verified=newest_verified,
        max_iteration=tracked,
    )
    context = {"tracker": tracked, "newestVerified": newest_verified, "corrupt": corrupt}
    return plan, context


def newest_verified_iteration(
    root: Path, committed: list[int], *, deep: bool
) -> tuple[int | None, list[str]]:
    """The newest committed iteration that passes verification, and the failures above it."""
    failures: list[str] = []
    for iteration in sorted(committed, reverse=True):
        try:
            verify_checkpoint_dir(layout.iteration_dir(root, iteration), deep=deep)
        except CheckpointCorruptError as exc:
            failures.append(str(exc))
            continue
        return iteration, failures
    return None, failures


def render(outcome: dict[str, Any]) -> str:
    """Human-readable decisions, one line each."""
    verb = "would remove" if outcome["dryRun"] else "removed"
    lines = [f"{verb} leftover {name}" for name in outcome["leftovers"]]
    lines += [f"skipped corrupt checkpoint: {failure}" for failure in outcome["corrupt"]]
    for key, why in outcome["reasons"].items():
        action, _, reason = why.partition(": ")
        shown = layout.iteration_dir_name(int(key))
        if action == "delete" and outcome["dryRun"]:
            action = "would delete"
        lines.append(f"{action:<12} {shown}  ({reason})")
    lines.append(_summary(outcome))
    return "\n".join(lines)


def _summary(outcome: dict[str, Any]) -> str:
    if outcome["dryRun"]:
        return (
            f"dry run: would keep {len(outcome['keep'])}, delete {len(outcome['delete'])}, "
            f"remove {len(outcome['leftovers'])} leftover(s); nothing changed"
        )
    return (
        f"kept {len(outcome['keep'])}, deleted {len(outcome['deleted'])}, "
        f"removed {len(outcome['leftovers'])} leftover(s) (generation {outcome['generation']})"
    )
