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
from pathlib import Path
from typing import Any

from cairn_agent.cli import formatting, purge
from cairn_agent.errors import CheckpointNotFoundError
from cairn_agent.storage import layout
from cairn_agent.storage.gc import collect_leftovers
from cairn_agent.storage.generation import ensure_current, read_generation
from cairn_agent.storage.retention import GcOptions, RetentionPlan, apply_retention, plan_on_disk
from cairn_agent.storage.retention import arguments as gc_arguments

NAME = gc_arguments.COMMAND


def add_parser(subparsers: Any) -> None:
    """Register ``cairn gc``."""
    parser = subparsers.add_parser(
        NAME,
        help="remove leftovers and apply a retention policy to a checkpoint root",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, help="checkpoint root (CheckpointConfig.save)")
    gc_arguments.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.delete_all:
        outcome = purge.delete_all(args.root, generation=args.generation, dry_run=args.dry_run)
        print(formatting.to_json(outcome) if args.json else purge.render(outcome))
        return 0
    outcome = collect(args.root, gc_arguments.from_namespace(args))
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
    removed = [] if options.dry_run else _remove_leftovers(root, options)
    # A garbage tracker raises here: without knowing its target nothing may be deleted.
    disk = plan_on_disk(root, options.policy, protected=options.protect, deep=options.deep)
    deleted: list[int] = []
    if not options.dry_run:
        deleted = apply_retention(root, disk.plan, generation=generation)
    return {
        "root": str(root),
        "dryRun": options.dry_run,
        "generation": generation,
        "leftovers": [name for _, name in disk.leftovers] if options.dry_run else removed,
        "tracker": disk.tracker,
        "newestVerified": disk.newest_verified,
        "corrupt": list(disk.corrupt),
        "keep": list(disk.plan.keep),
        "delete": list(disk.plan.delete),
        "decisions": _decisions(disk.plan),
        "deleted": deleted,
    }


def _decisions(plan: RetentionPlan) -> dict[str, dict[str, Any]]:
    """Iteration -> its action, its reasons (``Reason`` values) and their rendering."""
    return {
        str(d.iteration): {
            "action": d.action,
            "reasons": [str(r) for r in d.reasons],
            "why": plan.explain(d.iteration),
        }
        for d in plan.decisions
    }


def _remove_leftovers(root: Path, options: GcOptions) -> list[str]:
    # With an explicit generation, staging dirs of that generation may belong to a live
    # writer, so only older ones are removed.
    removed = collect_leftovers(root, below_generation=options.generation)
    return [path.name for path in removed]


def render(outcome: dict[str, Any]) -> str:
    """Human-readable decisions, one line each."""
    verb = "would remove" if outcome["dryRun"] else "removed"
    lines = [f"{verb} leftover {name}" for name in outcome["leftovers"]]
    lines += [f"skipped corrupt checkpoint: {failure}" for failure in outcome["corrupt"]]
    for key, decision in outcome["decisions"].items():
        action = decision["action"]
        shown = layout.iteration_dir_name(int(key))
        if action == "delete" and outcome["dryRun"]:
            action = "would delete"
        lines.append(f"{action:<12} {shown}  ({decision['why']})")
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
