"""Every on-disk name Cairn reads or writes, in one place (DESIGN.md §3).

Retention, load and tools parse names only through this module. The layout is exactly
Megatron-LM / Megatron-Bridge ``torch_dist`` output plus one Cairn file per iteration
(``cairn.manifest.json``) and Cairn's own hidden bookkeeping (staging dirs, generation file).
"""

from __future__ import annotations

import re
from pathlib import Path

# --- root level -------------------------------------------------------------------------------
TRACKER_PREFIX = "latest"
TRACKER_FILENAME = "latest_checkpointed_iteration.txt"
LATEST_TRAIN_STATE_FILENAME = f"{TRACKER_PREFIX}_train_state.pt"
RELEASE_NAME = "release"
NON_PERSISTENT_SUBDIR = "non_persistent"
DATALOADER_SUBDIR = "energon"
GENERATION_FILENAME = ".cairn.generation"

# --- iteration directory ----------------------------------------------------------------------
ITERATION_DIR_FORMAT = "iter_{:07d}"
METADATA_JSON = "metadata.json"
COMMON_PT = "common.pt"
DCP_METADATA = ".metadata"
TRAIN_STATE_FILENAME = "train_state.pt"
RUN_CONFIG_FILENAME = "run_config.yaml"
MANIFEST_FILENAME = "cairn.manifest.json"
DISTCP_SUFFIX = ".distcp"
DATALOADER_FILE_FORMAT = "train_dataloader_dprank{:03d}.pt"

# What megatron-core writes into metadata.json for a torch_dist checkpoint.
TORCH_DIST_METADATA = {
    "sharded_backend": "torch_dist",
    "sharded_backend_version": 1,
    "common_backend": "torch",
    "common_backend_version": 1,
}

# --- staging (uncommitted) directories --------------------------------------------------------
# A save writes into a hidden sibling of its final directory; only a rename makes it visible.
# The name carries the iteration and the writer's restart generation so that start-up GC and
# tools can tell whose leftover it is.
STAGING_PREFIX = ".cairn-staging."
_STAGING_RE = re.compile(
    r"^\.cairn-staging\.(?P<final>iter_\d{7}|release)\.g(?P<gen>\d+)\.(?P<nonce>[0-9a-f]+)$"
)
_ITER_RE = re.compile(r"^iter_(\d{7,})$")


def iteration_dir_name(iteration: int, release: bool = False) -> str:
    """``iter_0000100`` for iteration 100, or ``release``."""
    if release:
        return RELEASE_NAME
    if iteration < 0:
        raise ValueError(f"iteration must be non-negative, got {iteration}")
    return ITERATION_DIR_FORMAT.format(iteration)


def iteration_dir(root: str | Path, iteration: int, release: bool = False) -> Path:
    """Path of the iteration directory under a checkpoint root."""
    return Path(root) / iteration_dir_name(iteration, release)


def parse_iteration_dir_name(name: str) -> int | None:
    """The iteration of an ``iter_NNNNNNN`` name, or None for any other name."""
    match = _ITER_RE.match(name)
    return int(match.group(1)) if match else None


def tracker_path(root: str | Path) -> Path:
    return Path(root) / TRACKER_FILENAME


def latest_train_state_path(root: str | Path) -> Path:
    return Path(root) / LATEST_TRAIN_STATE_FILENAME


def generation_path(root: str | Path) -> Path:
    return Path(root) / GENERATION_FILENAME


def non_persistent_dir(save_root: str | Path, configured: str | Path | None = None) -> Path:
    """Where global non-persistent checkpoints go: the configured dir or ``<save>/non_persistent``."""
    return Path(configured) if configured else Path(save_root) / NON_PERSISTENT_SUBDIR


def staging_dir_name(final_name: str, generation: int, nonce: str) -> str:
    """Hidden sibling name a save writes into before its commit rename."""
    return f"{STAGING_PREFIX}{final_name}.g{generation}.{nonce}"


def parse_staging_dir_name(name: str) -> tuple[str, int] | None:
    """``(final_name, generation)`` of a staging directory name, or None."""
    match = _STAGING_RE.match(name)
    return (match.group("final"), int(match.group("gen"))) if match else None


def distcp_file_name(rank: int, index: int) -> str:
    """Shard file name megatron-core's torch_dist strategy uses: ``__<rank>_<i>.distcp``."""
    return f"__{rank}_{index}{DISTCP_SUFFIX}"


def dataloader_state_path(dataloader_root: str | Path, iteration: int, dp_rank: int) -> Path:
    return iteration_dir(dataloader_root, iteration) / DATALOADER_FILE_FORMAT.format(dp_rank)


# --- Cairn's other hidden bookkeeping names ---------------------------------------------------
# Every name below starts with "." so Megatron's ``iter_*`` globs and Cairn's listing never see
# it; start-up GC recognises each kind only through the parsers here.
ATOMIC_TMP_PREFIX = ".cairn-tmp."
TRASH_PREFIX = ".cairn-trash."
REPLACED_PREFIX = ".cairn-replaced."
_ATOMIC_TMP_RE = re.compile(r"^\.cairn-tmp\.(?P<final>.+)\.(?P<nonce>[0-9a-f]+)$")
_TRASH_RE = re.compile(r"^\.cairn-trash\.(?P<final>iter_\d{7,}|release)\.(?P<nonce>[0-9a-f]+)$")
_REPLACED_RE = re.compile(
    r"^\.cairn-replaced\.(?P<final>iter_\d{7,}|release)\.(?P<nonce>[0-9a-f]+)$"
)


def atomic_tmp_name(final_name: str, nonce: str) -> str:
    """Hidden sibling an atomic write fills and fsyncs before ``os.replace`` onto ``final_name``."""
    return f"{ATOMIC_TMP_PREFIX}{final_name}.{nonce}"


def parse_atomic_tmp_name(name: str) -> str | None:
    """The final name an atomic-write temp file was meant to replace, or None."""
    match = _ATOMIC_TMP_RE.match(name)
    return match.group("final") if match else None


def trash_dir_name(final_name: str, nonce: str) -> str:
    """Hidden name a directory is renamed to before it is deleted (so it is never half-visible)."""
    return f"{TRASH_PREFIX}{final_name}.{nonce}"


def parse_trash_dir_name(name: str) -> str | None:
    """The iteration dir name a trash directory used to have, or None."""
    match = _TRASH_RE.match(name)
    return match.group("final") if match else None


def replaced_dir_name(final_name: str, nonce: str) -> str:
    """Hidden name a committed dir is moved to while a re-save of the same iteration lands."""
    return f"{REPLACED_PREFIX}{final_name}.{nonce}"


def parse_replaced_dir_name(name: str) -> str | None:
    """The iteration dir name a replaced (moved-aside) directory used to have, or None."""
    match = _REPLACED_RE.match(name)
    return match.group("final") if match else None


def is_iteration_dir_name(name: str) -> bool:
    """True for ``iter_NNNNNNN`` and ``release``."""
    return name == RELEASE_NAME or parse_iteration_dir_name(name) is not None
