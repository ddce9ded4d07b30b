"""Which directories under a checkpoint root are committed checkpoints, and which are leftovers.

Committed means what megatron-core checks (``metadata.json`` exists and parses, written last)
plus, when Cairn's manifest is present, that it parses. This is the cheap check used for
listing; ``manifest.verify_checkpoint_dir`` is the full one. Names are parsed only through
``layout``. Torch-free.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cairn_agent.errors import CheckpointCorruptError
from cairn_agent.storage import layout
from cairn_agent.storage.manifest import Manifest, manifest_path, read_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointInfo:
    """A committed checkpoint directory."""

    iteration: int
    """Its iteration (from the name; for ``release`` from the manifest, else 0)."""
    path: Path
    """The iteration directory."""
    release: bool
    """True for the ``release`` directory."""
    manifest: Manifest | None
    """Cairn's manifest, or None for a checkpoint written by Megatron itself."""


def _metadata_json_parses(directory: Path) -> bool:
    try:
        obj = json.loads((directory / layout.METADATA_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict)


def _manifest_or_none(directory: Path) -> Manifest | None:
    """The manifest if present; raises ``CheckpointCorruptError`` if present but garbage."""
    if not manifest_path(directory).exists():
        return None
    return read_manifest(directory)


def is_committed(directory: Path) -> bool:
    """True when ``metadata.json`` exists and parses (and the manifest parses if present)."""
    directory = Path(directory)
    if not directory.is_dir() or not _metadata_json_parses(directory):
        return False
    try:
        _manifest_or_none(directory)
    except CheckpointCorruptError:
        return False
    return True


def _info(entry: Path) -> CheckpointInfo | None:
    iteration = layout.parse_iteration_dir_name(entry.name)
    release = entry.name == layout.RELEASE_NAME
    if (iteration is None and not release) or not is_committed(entry):
        return None
    manifest = _manifest_or_none(entry)
    if iteration is None:
        iteration = manifest.iteration if manifest is not None else 0
    return CheckpointInfo(iteration=iteration, path=entry, release=release, manifest=manifest)


def list_checkpoints(root: Path) -> list[CheckpointInfo]:
    """Committed ``iter_*`` (and ``release``) directories under ``root``, oldest first.

    Staging, trash and temp entries are hidden names and never match; an iteration directory
    without a valid ``metadata.json`` (a half-written Megatron save) is skipped.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    infos = []
    for entry in root.iterdir():
        try:
            info = _info(entry)
        except CheckpointCorruptError as exc:
            # The directory changed between the two reads; not committed for this listing.
            log.warning("skipping %s: %s", entry, exc)
            continue
        if info is not None:
            infos.append(info)
    return sorted(infos, key=lambda info: (info.release, info.iteration))


def committed_iterations(root: Path) -> list[int]:
    """Iterations of the committed ``iter_*`` directories (no ``release``), ascending."""
    return [info.iteration for info in list_checkpoints(root) if not info.release]


def list_staging_dirs(root: Path) -> list[Path]:
    """Hidden staging directories of saves that were never committed (or are in flight)."""
    return _hidden(root, lambda name: layout.parse_staging_dir_name(name) is not None)


def list_trash_dirs(root: Path) -> list[Path]:
    """Directories renamed aside for deletion whose removal did not finish."""
    return _hidden(root, lambda name: layout.parse_trash_dir_name(name) is not None)


def list_replaced_dirs(root: Path) -> list[Path]:
    """Committed directories moved aside while a re-save of the same iteration landed."""
    return _hidden(root, lambda name: layout.parse_replaced_dir_name(name) is not None)


def list_atomic_tmp_files(root: Path) -> list[Path]:
    """Temp files of atomic writes that never reached their ``os.replace``."""
    return _hidden(root, lambda name: layout.parse_atomic_tmp_name(name) is not None)


LeftoverKind = Literal["staging", "trash", "replaced", "tmp"]


def list_leftovers(root: Path) -> list[tuple[LeftoverKind, Path]]:
    """Every hidden entry start-up GC removes (or restores), with its kind, kind by kind."""
    kinds: tuple[tuple[LeftoverKind, list[Path]], ...] = (
        ("staging", list_staging_dirs(root)),
        ("trash", list_trash_dirs(root)),
        ("replaced", list_replaced_dirs(root)),
        ("tmp", list_atomic_tmp_files(root)),
    )
    return [(kind, path) for kind, paths in kinds for path in paths]


def _hidden(root: Path, match: Callable[[str], bool]) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(entry for entry in root.iterdir() if match(entry.name))
