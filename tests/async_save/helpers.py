"""State dicts and an injectable I/O seam for the async-save tests (picklable, importable by workers)."""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Any

import torch
from cairn_agent.storage.durable import DurableIO
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor

ROWS, COLS = 64, 32


class FaultIO(DurableIO):
    """The worker's I/O seam with faults: slow or failing fsyncs inside matching staging dirs.

    Plain attributes only, so it pickles into the spawned worker.
    """

    def __init__(
        self, *, delay_s: float = 0.0, delay_match: str = "", fail_match: str = ""
    ) -> None:
        self.delay_s = delay_s
        self.delay_match = delay_match
        self.fail_match = fail_match

    def fsync_file(self, path: Path) -> None:
        if self.fail_match and self.fail_match in str(path):
            raise OSError(errno.ENOSPC, "No space left on device (injected)", str(path))
        if self.delay_match and self.delay_match in str(path):
            time.sleep(self.delay_s)
        super().fsync_file(path)


def state(rank: int, world_size: int, step: int) -> dict[str, Any]:
    """A megatron-core sharded state dict whose values depend on ``step`` (seeded)."""
    gen = torch.Generator().manual_seed(1000 * step + rank)
    local = torch.rand(ROWS, COLS, generator=gen)
    shared = torch.rand(7, generator=torch.Generator().manual_seed(step))
    return {
        "w": ShardedTensor.from_rank_offsets("w", local, (0, rank, world_size)),
        "b": ShardedTensor.from_rank_offsets("b", shared, replica_id=rank),
        "h": ShardedTensor.from_rank_offsets(
            "h", local.to(torch.bfloat16)[:3], (0, rank, world_size)
        ),
        "obj": ShardedObject(
            "obj", {"rank": rank, "step": step}, (world_size,), (rank,), replica_id=0
        ),
        "iteration": step,
        "note": f"saved at {step}",
    }


def empty_like(rank: int, world_size: int) -> dict[str, Any]:
    """The same structure with zeroed tensors and placeholder objects, to load into."""
    template = state(rank, world_size, 0)
    out: dict[str, Any] = {}
    for key, value in template.items():
        if isinstance(value, ShardedTensor):
            value.data = torch.zeros_like(value.data)
        elif isinstance(value, ShardedObject):
            value.data = None
        out[key] = value
    return out


def plain(sd: dict[str, Any]) -> dict[str, Any]:
    """Tensors cloned and objects as they are, from a sharded or a loaded state dict."""
    out: dict[str, Any] = {}
    for key, value in sd.items():
        data = value.data if isinstance(value, (ShardedTensor, ShardedObject)) else value
        out[key] = data.clone() if isinstance(data, torch.Tensor) else data
    return out


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Bit-exact equality of two ``plain`` dicts."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, torch.Tensor):
            if not (isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True
