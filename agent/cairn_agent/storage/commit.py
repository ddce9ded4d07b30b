"""The commit protocol, DESIGN.md §3 steps 1-4: what makes a checkpoint exist.

1. ``create_staging_dir``: ranks write into a hidden sibling of the final directory.
2. ``commit_staging_dir`` (coordinator, after every rank reported success): ``metadata.json``
   then ``cairn.manifest.json`` are written last, every file and the directory are fsync'ed, the
   directory is renamed into place and the parent fsync'ed.
3. ``publish``: after the fence check, root files (``latest_train_state.pt``) and then the
   tracker are replaced atomically. Only a published iteration is what Megatron resumes from.

A crash at any point leaves either the previous state or the new one: a staging directory is
invisible (hidden name, no ``metadata.json`` until the end) and start-up GC removes it.
Torch-free.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cairn_agent.errors import CommitError
from cairn_agent.storage import layout
from cairn_agent.storage.durable import (
    DEFAULT_IO,
    EXCHANGE_UNSUPPORTED,
    DurableIO,
    atomic_write_bytes,
    fsync_tree,
    new_nonce,
)
from cairn_agent.storage.generation import ensure_current, root_lock
from cairn_agent.storage.listing import is_committed
from cairn_agent.storage.manifest import Manifest, describe_bytes
from cairn_agent.storage.tracker import write_tracker

log = logging.getLogger(__name__)

_EMPTY: Mapping[str, bytes] = {}


def create_staging_dir(
    root: Path,
    iteration: int,
    generation: int,
    release: bool = False,
    io: DurableIO = DEFAULT_IO,
) -> Path:
    """Create the hidden staging directory a save of ``iteration`` writes into (coordinator).

    The root is fsync'ed so the staging entry exists before any rank writes a shard into it.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final_name = layout.iteration_dir_name(iteration, release)
    staging = root / layout.staging_dir_name(final_name, generation, new_nonce())
    staging.mkdir()
    io.fsync_dir(root)
    log.info("iteration %d: staging dir %s created (generation %d)", iteration, staging, generation)
    return staging


def _files_in(directory: Path) -> dict[str, int]:
    """Relative POSIX path -> size of every regular file under ``directory``."""
    sizes: dict[str, int] = {}
    for current, _dirs, names in os.walk(directory):
        for name in names:
            path = Path(current) / name
            sizes[path.relative_to(directory).as_posix()] = path.stat().st_size
    return sizes


def _check_manifest_covers(staging: Path, manifest: Manifest) -> None:
    """The manifest must describe exactly the files the ranks left in ``staging``."""
    on_disk = _files_in(staging)
    for own in (layout.METADATA_JSON, layout.MANIFEST_FILENAME):
        on_disk.pop(own, None)
    listed = {k: v.size for k, v in manifest.files.items() if k != layout.METADATA_JSON}
    missing = sorted(set(listed) - set(on_disk))
    unlisted = sorted(set(on_disk) - set(listed))
    wrong = sorted(k for k in set(listed) & set(on_disk) if listed[k] != on_disk[k])
    if missing or unlisted or wrong:
        raise CommitError(
            f"{staging}: manifest does not match the staged files (missing on disk: {missing}, "
            f"not in manifest: {unlisted}, size differs: {wrong}); the save is not committed"
        )


def _write_markers(
    staging: Path, manifest: Manifest, metadata_json: Mapping[str, Any], io: DurableIO
) -> None:
    # metadata.json is megatron-core's completeness marker and the manifest is Cairn's; both
    # are written after every shard exists. No temp+rename here: the staging dir is invisible
    # until its own rename, which is the atomic step.
    meta = json.dumps(dict(metadata_json), sort_keys=True).encode("utf-8")
    files = {**manifest.files, layout.METADATA_JSON: describe_bytes(meta)}
    final_manifest = dataclasses.replace(manifest, files=files)
    io.write_file(staging / layout.METADATA_JSON, meta)
    io.write_file(staging / layout.MANIFEST_FILENAME, final_manifest.to_json().encode("utf-8"))


def commit_staging_dir(
    staging: Path,
    final: Path,
    *,
    manifest: Manifest,
    metadata_json: Mapping[str, Any] = layout.TORCH_DIST_METADATA,
    io: DurableIO = DEFAULT_IO,
) -> None:
    """Make the staged save visible as ``final`` (coordinator, after every rank succeeded).

    ``manifest.files`` must describe every staged file except ``metadata.json`` and the
    manifest; its ``metadata.json`` entry is added here. Raises ``CommitError`` (with the
    previous checkpoint, if any, untouched) when the staged files do not match or I/O fails.
    """
    staging, final = Path(staging), Path(final)
    _check_commit_paths(staging, final)
    _check_manifest_covers(staging, manifest)
    try:
        _write_markers(staging, manifest, metadata_json, io)
        # Every byte must be durable before the rename makes the directory visible.
        fsync_tree(staging, io)
        # A writer of an older restart generation (a zombie still flushing) must never add or
        # replace a directory once a newer generation has claimed the root (DESIGN.md §3
        # step 7), so the fence is checked right before the rename. The lock is not held
        # across the rename itself: a writer frozen there must not block the new generation's
        # claim forever. The remaining check-to-rename window is one syscall wide.
        with root_lock(final.parent):
            ensure_current(final.parent, manifest.generation)
        _rename_into_place(staging, final, io)
    except OSError as exc:
        raise CommitError(f"commit of {staging} as {final} failed: {exc}") from exc
    log.info("iteration %d: committed %s", manifest.iteration, final)


def _check_commit_paths(staging: Path, final: Path) -> None:
    if layout.parse_staging_dir_name(staging.name) is None or not staging.is_dir():
        raise CommitError(f"{staging} is not an existing Cairn staging directory")
    if staging.parent.resolve() != final.parent.resolve():
        # rename(2) is only atomic within one directory tree of one filesystem.
        raise CommitError(f"{staging} and {final} must be siblings for an atomic rename")


def _rename_into_place(staging: Path, final: Path, io: DurableIO) -> None:
    """rename staging -> final; a previous ``final`` is swapped out atomically, removed last."""
    if final.exists() and _exchange_into_place(staging, final, io):
        return
    _move_aside_and_rename(staging, final, io)


def _exchange_into_place(staging: Path, final: Path, io: DurableIO) -> bool:
    """Swap a re-saved iteration in with one atomic exchange; False where unsupported.

    With an exchange there is no moment at which ``final`` is missing, so a tracker (ours or
    Megatron-Bridge's ``latest_train_state.pt``) naming this iteration never dangles, even if
    the process dies right here. The old copy ends up under the staging name, which start-up
    GC removes if we die before removing it ourselves.
    """
    try:
        io.exchange(staging, final)
    except OSError as exc:
        if exc.errno not in EXCHANGE_UNSUPPORTED:
            raise
        return False
    io.fsync_dir(final.parent)
    _remove_replaced(staging, io)
    return True


def _move_aside_and_rename(staging: Path, final: Path, io: DurableIO) -> None:
    parent = final.parent
    aside = parent / layout.replaced_dir_name(final.name, new_nonce()) if final.exists() else None
    if aside is not None:
        # Never delete the old copy before the new one is in place: if we crash between the
        # two renames, start-up GC moves ``aside`` back (see gc.collect_leftovers).
        io.rename(final, aside)
    try:
        io.rename(staging, final)
    except OSError:
        if aside is not None:
            io.rename(aside, final)
        raise
    io.fsync_dir(parent)
    if aside is not None:
        _remove_replaced(aside, io)


def _remove_replaced(aside: Path, io: DurableIO) -> None:
    try:
        io.remove_tree(aside)
    except OSError as exc:
        # Tolerated: the new checkpoint is committed; start-up GC removes the old copy.
        log.warning("could not remove replaced checkpoint %s: %s", aside, exc)


def publish(
    root: Path,
    iteration: int,
    *,
    generation: int,
    release: bool = False,
    root_files: Mapping[str, bytes] = _EMPTY,
    io: DurableIO = DEFAULT_IO,
) -> None:
    """Point the root at a committed iteration: root files first, the tracker last (step 4).

    Raises ``StaleGenerationError`` (nothing written) when a newer restart generation owns
    ``root``, and ``CommitError`` when the iteration directory is not committed.
    """
    root = Path(root)
    for name in root_files:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"root file name {name!r} must be a plain, visible file name")
    target = layout.iteration_dir(root, iteration, release)
    if not root.is_dir():
        raise CommitError(f"refusing to publish into {root}: the checkpoint root does not exist")
    with root_lock(root):
        ensure_current(root, generation)
        if not is_committed(target):
            raise CommitError(f"refusing to publish {target}: it is not a committed checkpoint")
        for name, data in root_files.items():
            atomic_write_bytes(root / name, data, io)
        # The tracker is what Megatron and Cairn resume from, so it moves only after every
        # other root file is durable.
        write_tracker(root, iteration, release, io)
    log.info("iteration %d: published as latest of %s (generation %d)", iteration, root, generation)


def abort_staging_dir(staging: Path, io: DurableIO = DEFAULT_IO) -> None:
    """Remove a failed save's staging directory; a missing one is fine."""
    staging = Path(staging)
    if layout.parse_staging_dir_name(staging.name) is None:
        raise ValueError(f"{staging} is not a Cairn staging directory; refusing to remove it")
    if staging.exists():
        io.remove_tree(staging)
        log.info("aborted save: removed staging dir %s", staging)
