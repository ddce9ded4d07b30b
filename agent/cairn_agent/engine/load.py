"""Load one iteration directory: verify it first, then read it with megatron-core.

Verification is the cheap one (``metadata.json`` present and naming ``torch_dist``; every file
the manifest lists present with its size, no unlisted shard). The coordinator runs it and tells
every rank, so a corrupt directory raises ``CheckpointCorruptError`` on every rank before any
rank enters the load's collectives. Checkpoints written by Megatron itself (no manifest) pass
on ``metadata.json`` alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cairn_agent.engine.collectives import on_coordinator
from cairn_agent.engine.dist import get_rank
from cairn_agent.engine.sharded import load_sharded
from cairn_agent.errors import CheckpointCorruptError
from cairn_agent.storage.manifest import verify_checkpoint_dir

log = logging.getLogger(__name__)


def load_checkpoint_dir(
    sharded_state_dict: dict[str, Any],
    directory: Path,
    *,
    strict: str = "assume_ok_unexpected",
    verify: bool = True,
) -> dict[str, Any]:
    """Load ``directory`` into the layout described by ``sharded_state_dict`` (collective).

    Returns the loaded state dict: tensors at the positions of the ``ShardedTensor``s (resharded
    to this rank's slices), objects at those of the ``ShardedObject``s, and the common part
    (``common.pt``) merged in. ``strict`` is a megatron-core ``StrictHandling`` value. Raises
    ``CheckpointCorruptError`` on every rank when ``verify`` finds the directory incomplete.
    """
    directory = Path(directory)
    if verify:
        verify_everywhere(directory)
    loaded = load_sharded(sharded_state_dict, directory, strict=strict)
    log.info("rank %d loaded %s", get_rank(), directory)
    return loaded


def verify_everywhere(directory: Path) -> None:
    """Coordinator verifies ``directory`` (without checksums); every rank raises if it failed."""
    try:
        on_coordinator(lambda: verify_checkpoint_dir(directory, deep=False))
    except CheckpointCorruptError as exc:
        log.error("rank %d: %s fails verification: %s", get_rank(), exc.path, exc.check)
        raise
