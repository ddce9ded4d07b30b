"""``CheckpointType``: the kinds of checkpoint the seed API saves and loads."""

from __future__ import annotations

from enum import Enum, auto


class CheckpointType(Enum):
    """Types of checkpoints to save."""

    LOCAL = auto()
    """Node-local non-persistent checkpoint (nvidia-resiliency-ext layout)."""
    GLOBAL = auto()
    """Shared-storage ``torch_dist`` checkpoint (persistent or global non-persistent)."""
    FSDP_DTENSOR = auto()
    """Plain torch DCP ``fsdp_dtensor`` checkpoint (recognised, not written by Cairn)."""
