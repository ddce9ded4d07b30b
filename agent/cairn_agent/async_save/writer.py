"""What the worker does for one save: this rank's DCP files, described and made durable.

DCP's own ``FileSystemWriter.write_data`` writes the rank's plan (the same files and tensor
bytes as megatron-core's torch_dist writer; only the zip records' CRC-32 is left out, see
``dcp_files``), reading the tensors from the shared staging arena, through
``engine.dcp_files``: every byte written also feeds the file's CRC32C while it is in
cache, so the manifest entry of each file costs no second read, and writeback starts as the
bytes arrive. The fsyncs of all files come in one overlapped batch at the end and go through
the injected ``DurableIO`` seam, which is also where tests slow down or break one rank's
writes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.distributed.checkpoint.planner import SavePlan, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import WriteResult

from cairn_agent.async_save.slots import SlotKey, slot_key
from cairn_agent.engine.dcp_files import ChecksumFileSystemWriter
from cairn_agent.storage.durable import DurableIO, fsync_files
from cairn_agent.storage.manifest import FileEntry, describe_bytes


@dataclass(frozen=True, kw_only=True)
class WriteJob:
    """One save as the worker sees it (picklable; tensors stay in the arena)."""

    job_id: int
    """Sequence number of the save in this queue."""
    iteration: int
    """Iteration being saved (for messages only)."""
    staging: Path
    """Staging directory shared by all ranks."""
    plan: SavePlan
    """This rank's final DCP plan."""
    arena_id: int
    """Which arena the tensor items are staged in; must be the one the worker mapped."""
    byte_items: dict[str, bytes] = field(default_factory=dict)
    """Serialised ShardedObjects by fqn."""
    extra_files: dict[str, bytes] = field(default_factory=dict)
    """Whole files to write beside the shards (rank 0: ``common.pt`` and iteration files)."""
    thread_count: int = 1
    """DCP write threads (= files per rank)."""
    io: DurableIO = field(default_factory=DurableIO)
    """The I/O seam for file writes and fsyncs."""


@dataclass(frozen=True)
class RankWriteOutcome:
    """What one rank's worker wrote: DCP write results and the manifest entry of each file."""

    write_results: list[WriteResult]
    files: dict[str, FileEntry]


class _StagedData:
    """The slice of the ``SavePlanner`` interface ``write_data`` uses: staged data per item."""

    def __init__(self, views: Mapping[SlotKey, torch.Tensor], byte_items: Mapping[str, bytes]):
        self._views = views
        self._bytes = byte_items

    def resolve_data(self, item: WriteItem) -> torch.Tensor | io.BytesIO:
        if item.type == WriteItemType.BYTE_IO:
            return io.BytesIO(self._bytes[item.index.fqn])
        return self._views[slot_key(item)]


def write_rank_files(job: WriteJob, views: Mapping[SlotKey, torch.Tensor]) -> RankWriteOutcome:
    """Write, describe and fsync this rank's files of ``job`` into ``job.staging``."""
    writer = ChecksumFileSystemWriter(
        job.staging, single_file_per_rank=True, thread_count=job.thread_count
    )
    results = writer.write_data(job.plan, _StagedData(views, job.byte_items)).wait()  # type: ignore[arg-type]
    files = writer.entries
    for name, data in job.extra_files.items():
        job.io.write_file(job.staging / name, data)
        files[name] = describe_bytes(data)
    # Durable before reporting success: finalize commits on the strength of this report.
    fsync_files((job.staging / name for name in sorted(files)), job.io)
    return RankWriteOutcome(list(results), files)
