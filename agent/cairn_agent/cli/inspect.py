"""``cairn inspect <root>``: what a checkpoint root holds, for a human or (``--json``) a script.

It reports the tracker, every committed iteration (size, files, world size, generation, age),
iteration directories that were never committed, leftovers that start-up GC would remove and
the non-persistent checkpoints. It only reads: nothing under the root changes. A corrupt tracker
is reported, not raised, so the rest of the root stays inspectable; ``cairn verify`` is the
command that fails on corruption.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cairn_agent.cli import formatting
from cairn_agent.errors import CheckpointCorruptError, CheckpointNotFoundError
from cairn_agent.resource.times import format_time
from cairn_agent.storage import layout, listing
from cairn_agent.storage.generation import read_generation
from cairn_agent.storage.listing import CheckpointInfo
from cairn_agent.storage.tracker import read_tracker

NAME = "inspect"


def add_parser(subparsers: Any) -> None:
    """Register ``cairn inspect``."""
    parser = subparsers.add_parser(
        NAME,
        help="show the tracker, committed iterations and leftovers of a checkpoint root",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, help="checkpoint root (CheckpointConfig.save)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = inspect_root(args.root)
    print(formatting.to_json(report) if args.json else render(report))
    return 0


def inspect_root(root: Path, now: float | None = None) -> dict[str, Any]:
    """The full report of ``root`` as plain JSON-ready data."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointNotFoundError(f"{root}: no such checkpoint root (not a directory)")
    now = time.time() if now is None else now
    committed = listing.list_checkpoints(root)
    report: dict[str, Any] = {
        "root": str(root),
        "tracker": tracker_report(root),
        "generation": _generation(root),
        "committed": [checkpoint_report(info, now) for info in committed],
        "incomplete": incomplete_dirs(root, committed),
        "leftovers": leftover_report(root),
        "nonPersistent": _non_persistent(root, now),
    }
    report["totalBytes"] = sum(c["bytes"] or 0 for c in report["committed"])
    return report


def tracker_report(root: Path) -> dict[str, Any]:
    """``{"present", "iteration", "release", "error"}`` of the root's tracker file."""
    try:
        value = read_tracker(root)
    except CheckpointCorruptError as exc:
        return {"present": True, "iteration": None, "release": False, "error": str(exc)}
    if value is None:
        return {"present": False, "iteration": None, "release": False, "error": None}
    target = layout.iteration_dir(root, value.iteration, value.release)
    error = None if listing.is_committed(target) else f"{target.name} is not a committed checkpoint"
    return {"present": True, "iteration": value.iteration, "release": value.release, "error": error}


def _generation(root: Path) -> int | str:
    try:
        return read_generation(root)
    except CheckpointCorruptError as exc:
        return f"unreadable: {exc.check}"


def checkpoint_report(info: CheckpointInfo, now: float) -> dict[str, Any]:
    """One committed iteration; manifest fields are None for a Megatron-written checkpoint."""
    manifest = info.manifest
    committed_at = manifest.committed_at if manifest else None
    return {
        "iteration": info.iteration,
        "release": info.release,
        "path": str(info.path),
        "hasManifest": manifest is not None,
        "worldSize": manifest.world_size if manifest else None,
        "layout": dict(manifest.layout) if manifest else None,
        "generation": manifest.generation if manifest else None,
        "files": len(manifest.files) if manifest else _count_files(info.path),
        "bytes": manifest.total_bytes if manifest else _dir_bytes(info.path),
        "committedAt": format_time(committed_at) if committed_at else None,
        "ageSeconds": round(now - committed_at, 1) if committed_at else None,
        "digest": manifest.digest() if manifest else None,
    }


def _count_files(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file())


def _dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def incomplete_dirs(root: Path, committed: list[CheckpointInfo]) -> list[str]:
    """Iteration directories that exist but do not count as committed: a save that never
    finished, or a committed one whose manifest no longer parses."""
    done = {info.path.name for info in committed}
    return sorted(
        entry.name
        for entry in Path(root).iterdir()
        if entry.is_dir() and layout.is_iteration_dir_name(entry.name) and entry.name not in done
    )


def leftover_report(root: Path) -> list[dict[str, str]]:
    """Hidden entries start-up GC removes (or restores), with what each one is."""
    return [{"kind": kind, "name": path.name} for kind, path in listing.list_leftovers(root)]


def _non_persistent(root: Path, now: float) -> dict[str, Any]:
    directory = layout.non_persistent_dir(root)
    infos = listing.list_checkpoints(directory)
    return {
        "path": str(directory),
        "exists": directory.is_dir(),
        "committed": [checkpoint_report(info, now) for info in infos],
    }


def render(report: dict[str, Any]) -> str:
    """The human-readable form of ``inspect_root``'s report."""
    lines = [f"Checkpoint root: {report['root']}", _tracker_line(report["tracker"])]
    lines.append(f"Generation:      {report['generation']}")
    committed = report["committed"]
    total = formatting.human_bytes(report["totalBytes"])
    lines.append(f"Committed:       {len(committed)} checkpoint(s), {total}")
    if committed:
        lines += ["", _iteration_table(committed, report["tracker"])]
    lines += _incomplete_lines(report["incomplete"])
    lines += _leftover_lines(report["leftovers"])
    lines += _non_persistent_lines(report["nonPersistent"])
    return "\n".join(lines)


def _tracker_line(tracker: dict[str, Any]) -> str:
    if not tracker["present"]:
        return "Tracker:         none (resume picks the newest committed checkpoint)"
    value = "release" if tracker["release"] else tracker["iteration"]
    shown = f"-> {value}" if value is not None else "unreadable"
    problem = f"  [PROBLEM: {tracker['error']}]" if tracker["error"] else ""
    return f"Tracker:         {layout.TRACKER_FILENAME} {shown}{problem}"


def _iteration_table(committed: list[dict[str, Any]], tracker: dict[str, Any]) -> str:
    rows = [
        (
            layout.iteration_dir_name(c["iteration"], c["release"]),
            c["worldSize"] or "-",
            c["generation"] if c["generation"] is not None else "-",
            c["files"],
            formatting.human_bytes(c["bytes"]),
            c["committedAt"] or "-",
            formatting.human_age(c["ageSeconds"]),
            _note(c, tracker),
        )
        for c in committed
    ]
    headers = ("iteration", "world", "gen", "files", "size", "committed", "age", "note")
    return formatting.render_table(headers, rows)


def _note(checkpoint: dict[str, Any], tracker: dict[str, Any]) -> str:
    notes = []
    same = (checkpoint["iteration"], checkpoint["release"]) == (
        tracker["iteration"],
        tracker["release"],
    )
    if tracker["present"] and same:
        notes.append("tracker")
    if not checkpoint["hasManifest"]:
        notes.append("no manifest (written by Megatron)")
    return ", ".join(notes)


def _incomplete_lines(names: list[str]) -> list[str]:
    if not names:
        return []
    return [
        "",
        "Not committed (no valid metadata.json, or an unreadable manifest; `cairn verify` "
        "says which): " + ", ".join(names),
    ]


def _leftover_lines(leftovers: list[dict[str, str]]) -> list[str]:
    if not leftovers:
        return ["", "Leftovers:       none"]
    lines = ["", f"Leftovers:       {len(leftovers)} (removed by `cairn gc` / start-up GC)"]
    lines += [f"  {item['kind']:<9} {item['name']}" for item in leftovers]
    return lines


def _non_persistent_lines(section: dict[str, Any]) -> list[str]:
    if not section["exists"]:
        return [f"Non-persistent:  none ({section['path']} does not exist)"]
    iterations = [str(c["iteration"]) for c in section["committed"]]
    shown = ", ".join(iterations) if iterations else "no committed checkpoints"
    return [f"Non-persistent:  {section['path']}: {shown}"]
