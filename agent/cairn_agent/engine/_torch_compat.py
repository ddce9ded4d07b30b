"""Every reach into torch's private API, in one place (pinned: torch==2.13.0).

Each name below is private in torch; the comment says why no public API serves. Re-check them
when the torch pin moves (the engine and async tests exercise every one).
"""

from __future__ import annotations

# The zip reader behind ``torch.load``: where a storage's record lies inside a ``torch.save``
# blob, so that a load can read those bytes straight into the destination tensor instead of
# through a temporary one (``engine.direct_read``). torch exposes no public equivalent.
from torch._C import PyTorchFileReader

# DCP's FileSystemWriter names each rank's shard files from a ``_StoragePrefix`` in the plan's
# ``storage_data`` ("__<rank>_"). The async worker writes those files itself (outside
# ``dcp.save``), so the coordinator's plan must carry the same prefix object for DCP's
# ``.metadata`` and readers to agree; DCP exposes no public constructor for it.
from torch.distributed.checkpoint.filesystem import _StoragePrefix as StoragePrefix

# A DTensor's local shard shape and its offset in the global tensor, as DCP computes them for
# its own planner. megatron-core's ShardedTensor needs exactly those numbers; torch has no
# public function that returns them (DTensor.__create_chunk_list__ is private too).
from torch.distributed.tensor._utils import (
    compute_local_shape_and_global_offset as local_shape_and_global_offset,
)

__all__ = ["PyTorchFileReader", "StoragePrefix", "local_shape_and_global_offset"]
