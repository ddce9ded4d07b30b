"""``cairn gc --delete-all``: remove a checkpoint root's data for ``deletionPolicy: Delete``.

Order matters for a crash half-way: the tracker goes first (under the root lock, after the
generation fence check), so an interrupted purge never leaves a tracker pointing at a deleted
directory; then every iteration directory is renamed aside and removed through the retention
path (which re-checks the fence), then the non-persistent checkpoints and the leftovers, and
the generation file last, so a later job reusing the path does not inherit a stale fence.
The root directory itself is kept: it is usually a volume mount.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cairn_agent.storage import layout, listing
from cairn_agent.storage.durable import DEFAULT_IO, DurableIO, new_nonce
from cairn_agent.storage.gc import collect_leftovers
from cairn_agent.storage.generation import ensure_current, read_generation, root_lock
from cairn_agent.storage.retention import delete_iterations

log = logging.getLogger(__name__)

_REASON = "--delete-all (the Checkpoint was deleted with deletionPolicy Delete)"


def delete_all(
    root: Path, *, generation: int | None, dry_run: bool, io: DurableIO = DEFAULT_IO
) -> dict[str, Any]:
    """Delete every checkpoint, the tracker and Cairn's files under ``root``; report what."""
    root = Path(root)
    outcome: dict[str, Any] = {"root": str(root), "dryRun": dry_run, "deleted": [], "files": []}
    if not root.is_dir():
        outcome["generation"] = generation
        return outcome  # nothing to delete is success: the Job may run twice
    generation = read_generation(root) if generation is None else generation
    outcome["generation"] = generation
    ensure_current(root, generation)
    outcome["deleted"] = _all_dirs(root)
    outcome["files"] = [str(p.relative_to(root)) for p in _bookkeeping(root) if p.exists()]
    if not dry_run:
        _purge(root, generation, io)
    return outcome


def _all_dirs(root: Path) -> list[str]:
    found = [info.path for info in listing.list_checkpoints(root)]
    found += [info.path for info in listing.list_checkpoints(layout.non_persistent_dir(root))]
    return [str(path.relative_to(root)) for path in found]


def _root_files(root: Path) -> list[Path]:
    return [layout.tracker_path(root), layout.latest_train_state_path(root)]


def _bookkeeping(root: Path) -> list[Path]:
    dirs = (root, layout.non_persistent_dir(root))
    return [path for directory in dirs for path in _root_files(directory)]


def _purge(root: Path, generation: int, io: DurableIO) -> None:
    # Non-persistent first: the root's generation file is the fence of both and goes last.
    for directory in (layout.non_persistent_dir(root), root):
        if directory.is_dir():
            _purge_dir(directory, generation, io)
    log.info("delete-all: removed every checkpoint under %s (generation %d)", root, generation)


def _purge_dir(directory: Path, generation: int, io: DurableIO) -> None:
    _remove_tracker(directory, generation, io)
    _remove_checkpoints(directory, generation, io)
    collect_leftovers(directory, io)
    with root_lock(directory):
        ensure_current(directory, generation)
        io.remove_tree(layout.generation_path(directory))
        io.fsync_dir(directory)


def _remove_tracker(directory: Path, generation: int, io: DurableIO) -> None:
    with root_lock(directory):
        ensure_current(directory, generation)
        # The tracker before the train state it describes: a reader never sees a tracker
        # without its checkpoint.
        for path in _root_files(directory):
            io.remove_tree(path)
        io.fsync_dir(directory)
    log.info("delete-all: removed the tracker of %s", directory)


def _remove_checkpoints(directory: Path, generation: int, io: DurableIO) -> None:
    infos = listing.list_checkpoints(directory)
    iterations = tuple(info.iteration for info in infos if not info.release)
    delete_iterations(directory, iterations, generation=generation, io=io, why=lambda _: _REASON)
    if any(info.release for info in infos):
        _remove_release(directory, io)


def _remove_release(directory: Path, io: DurableIO) -> None:
    release = directory / layout.RELEASE_NAME
    trash = directory / layout.trash_dir_name(layout.RELEASE_NAME, new_nonce())
    io.rename(release, trash)
    io.fsync_dir(directory)
    io.remove_tree(trash)


def render(outcome: dict[str, Any]) -> str:
    """One line per deleted directory and file, and a summary."""
    verb = "would delete" if outcome["dryRun"] else "deleted"
    lines = [f"{verb} {name}" for name in outcome["deleted"] + outcome["files"]]
    if not outcome["deleted"] and not outcome["files"]:
        lines.append(f"nothing to delete under {outcome['root']}")
    lines.append(
        f"delete-all{' (dry run)' if outcome['dryRun'] else ''}: {len(outcome['deleted'])} "
        f"checkpoint(s) under {outcome['root']} (generation {_generation(outcome)})"
    )
    return "\n".join(lines)


def _generation(outcome: dict[str, Any]) -> str:
    return "-" if outcome["generation"] is None else str(outcome["generation"])
