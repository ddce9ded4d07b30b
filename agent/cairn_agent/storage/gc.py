"""Start-up garbage collection of a checkpoint root's leftovers (DESIGN.md §3 step 6).

Leftovers are the hidden entries a crash can leave behind: staging directories of saves that
never committed, trash directories of interrupted deletions, temp files of atomic writes, and
committed directories moved aside by a re-save. None of them is ever a committed checkpoint,
with one exception handled here: a moved-aside directory whose final name is gone (the crash
fell between the two renames of a re-save) is moved back instead of removed. Torch-free.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cairn_agent.storage import layout
from cairn_agent.storage.durable import DEFAULT_IO, DurableIO
from cairn_agent.storage.listing import (
    is_committed,
    list_atomic_tmp_files,
    list_replaced_dirs,
    list_staging_dirs,
    list_trash_dirs,
)

log = logging.getLogger(__name__)


def collect_leftovers(
    root: Path, io: DurableIO = DEFAULT_IO, *, below_generation: int | None = None
) -> list[Path]:
    """Remove every leftover under ``root``, log each, and return the removed paths.

    Call it before the first save of a (re)started job. ``below_generation`` restricts staging
    removal to older restart generations, for callers that may run beside a live writer.
    Temp files inside iteration directories (an interrupted ``write_manifest``) are removed too.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    _restore_replaced(root, io)
    removed: list[Path] = []
    for path in _leftovers(root, below_generation):
        io.remove_tree(path)
        log.info("gc: removed leftover %s", path)
        removed.append(path)
    if removed:
        io.fsync_dir(root)
    return removed


def _leftovers(root: Path, below_generation: int | None) -> list[Path]:
    staging = [p for p in list_staging_dirs(root) if _is_old(p, below_generation)]
    found = staging + list_trash_dirs(root) + list_replaced_dirs(root)
    found += list_atomic_tmp_files(root)
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and layout.is_iteration_dir_name(entry.name):
            found += list_atomic_tmp_files(entry)
    return found


def _is_old(staging: Path, below_generation: int | None) -> bool:
    parsed = layout.parse_staging_dir_name(staging.name)
    return below_generation is None or (parsed is not None and parsed[1] < below_generation)


def _restore_replaced(root: Path, io: DurableIO) -> None:
    """Move a committed directory set aside by an interrupted re-save back to its name."""
    for aside in list_replaced_dirs(root):
        final_name = layout.parse_replaced_dir_name(aside.name)
        if final_name is None:
            continue
        final = root / final_name
        if final.exists() or not is_committed(aside):
            continue
        io.rename(aside, final)
        io.fsync_dir(root)
        log.warning("gc: restored %s to %s (a re-save was interrupted mid-commit)", aside, final)
