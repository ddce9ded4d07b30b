"""One rank's part of a ``torch_dist`` checkpoint write, and megatron-core's load.

The write produces exactly what megatron-core 0.16.1's ``dist_checkpointing.save`` with the
``torch_dist`` strategy produces (spec §1.3): DCP shard files ``__<rank>_<i>.distcp`` holding
the main replica of every ``ShardedTensor`` and every ``ShardedObject`` (as a byte item keyed
``<key>/shard_<offset>_<shape>``), the DCP ``.metadata`` and rank 0's ``common.pt``. It reuses
megatron-core's translation pieces (state-dict preprocessing, key mapping, the save planner)
but drives torch's own synchronous ``FileSystemWriter``: megatron-core's writer and finalize
path call ``torch.cuda`` unconditionally and cannot run on CPU. ``metadata.json`` is not
written here; the commit protocol writes it last (``storage.commit``).

Failure model: :func:`write_sharded` either returns on every rank or raises ``CommitError`` on
every rank. Each phase ends with an agreement (``collectives.run_agreed``), so a rank that fails
never leaves the others waiting in the next collective.
"""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core.dist_checkpointing import load as mcore_load
from megatron.core.dist_checkpointing.dict_utils import extract_matching_values
from megatron.core.dist_checkpointing.serialization import load_common_state_dict
from megatron.core.dist_checkpointing.state_dict_utils import save_preprocess
from megatron.core.dist_checkpointing.strategies.torch import (
    MCoreSavePlanner,
    _replace_state_dict_keys_with_sharded_keys,
    mcore_to_pyt_state_dict,
)
from megatron.core.dist_checkpointing.validation import (
    determine_global_metadata,
    validate_sharding_integrity,
)
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from cairn_agent.engine import _mcore_compat
from cairn_agent.engine._mcore_compat import clean_metadata_for_serialization
from cairn_agent.engine.collectives import run_agreed
from cairn_agent.engine.dcp_files import ChecksumFileSystemWriter
from cairn_agent.engine.direct_read import DirectFileSystemReader
from cairn_agent.engine.dist import get_rank
from cairn_agent.storage import layout
from cairn_agent.storage.durable import fsync_files
from cairn_agent.storage.manifest import FileEntry, describe_bytes

log = logging.getLogger(__name__)

_CONTENT_METADATA = "content_metadata"


@dataclass(frozen=True)
class RankWriteResult:
    """What one rank wrote into a checkpoint directory."""

    rank: int
    """Rank (within the saving group) that wrote the files."""
    files: dict[str, FileEntry]
    """File name (relative to the directory) -> size and checksum, for the files this rank wrote."""


@dataclass(frozen=True)
class _Prepared:
    """A rank's state dict split and translated for DCP."""

    sharded: dict[str, Any]
    """The ``ShardedBase`` part, structure kept (for megatron-core's validation)."""
    common: dict[str, Any]
    """Everything else: what ``common.pt`` holds."""
    dcp_state_dict: dict[str, Any]
    """Flat DCP state dict of the main replicas, keyed by sharded key."""
    common_bytes: bytes | None
    """``common.pt`` contents on the coordinator, None elsewhere."""


def write_sharded(
    sharded_state_dict: dict[str, Any],
    directory: Path,
    *,
    thread_count: int = 1,
    group: dist.ProcessGroup | None = None,
) -> RankWriteResult:
    """Write this rank's part of ``sharded_state_dict`` into ``directory`` (collective).

    Every rank of ``group`` calls this with the same ``directory``. Rank 0 of the group also
    writes the DCP ``.metadata`` and ``common.pt``. Each rank writes at most ``thread_count``
    shard files and returns their sizes and checksums (computed as they are written). The caller's dict is not modified.
    Raises ``CommitError`` on every rank if any rank failed.
    """
    if thread_count < 1:
        raise ValueError(f"thread_count must be >= 1, got {thread_count}")
    directory = Path(directory)
    rank = get_rank(group)
    prepared = run_agreed(
        "preparing the state dict", lambda: _prepare(sharded_state_dict, rank == 0), group
    )
    if group is None or group == dist.group.WORLD:
        # megatron-core validates over the default group only; DCP still checks coverage.
        run_agreed("validating the sharding", lambda: _validate(prepared), group)
    entries = run_agreed(
        "writing DCP shards", lambda: _write_dcp(prepared, directory, thread_count, group), group
    )
    result = run_agreed(
        "finishing rank files", lambda: _finish_rank(prepared, directory, rank, entries), group
    )
    log.debug("rank %d wrote %d files into %s", rank, len(result.files), directory)
    return result


def split_for_dcp(
    sharded_state_dict: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(sharded, common, dcp_state_dict)`` of a megatron-core sharded state dict.

    Applies factories, drops non-persistent objects, splits off the common part (what
    ``common.pt`` holds) and translates the main replicas into a flat DCP state dict keyed by
    sharded key. Shared by the sync engine and the async planner.
    """
    # A structural copy: factories are applied in place and the caller keeps its dict.
    copied, _ = extract_matching_values(sharded_state_dict, lambda _: True)
    sharded, common = save_preprocess(copied, validate_access_integrity=False)
    if _CONTENT_METADATA in common:
        # megatron-core strips runtime-only entries (process groups) before pickling.
        common[_CONTENT_METADATA] = clean_metadata_for_serialization(common[_CONTENT_METADATA])
    flat, _, _ = _replace_state_dict_keys_with_sharded_keys(sharded, keep_only_main_replica=True)
    return sharded, common, mcore_to_pyt_state_dict(flat, is_loading=False)


def validate_sharding(sharded: dict[str, Any], common: dict[str, Any]) -> None:
    """megatron-core's check that every shard has exactly one main replica (collective)."""
    _, global_metadata = determine_global_metadata(sharded)
    validate_sharding_integrity(global_metadata, common_state_dict=common)


def _prepare(sharded_state_dict: dict[str, Any], coordinator: bool) -> _Prepared:
    sharded, common, dcp_state_dict = split_for_dcp(sharded_state_dict)
    return _Prepared(sharded, common, dcp_state_dict, _serialise(common) if coordinator else None)


def _serialise(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _validate(prepared: _Prepared) -> None:
    validate_sharding(prepared.sharded, prepared.common)


def _write_dcp(
    prepared: _Prepared, directory: Path, thread_count: int, group: dist.ProcessGroup | None
) -> dict[str, FileEntry]:
    """This rank's DCP files (rank 0: also ``.metadata``), each checksummed as written."""
    # keep_only_main_replica already removed replicas, so DCP must not dedup (it would drop
    # ShardedObject byte items of other ranks), and the state dict is already flat.
    planner = MCoreSavePlanner(dedup_replicated_tensors=False, flatten_state_dict=False)
    writer = ChecksumFileSystemWriter(directory, thread_count=thread_count, overwrite=False)
    dcp_save(prepared.dcp_state_dict, storage_writer=writer, planner=planner, process_group=group)
    return writer.entries


def _finish_rank(
    prepared: _Prepared, directory: Path, rank: int, entries: dict[str, FileEntry]
) -> RankWriteResult:
    names = _own_shard_files(directory, rank)
    files = {name: entries[name] for name in names}
    if prepared.common_bytes is not None:
        (directory / layout.COMMON_PT).write_bytes(prepared.common_bytes)
        files[layout.DCP_METADATA] = entries[layout.DCP_METADATA]
        files[layout.COMMON_PT] = describe_bytes(prepared.common_bytes)
    # One batch of fsyncs once everything is written: no order among a rank's files matters.
    fsync_files(directory / name for name in files)
    return RankWriteResult(rank=rank, files=files)


def _own_shard_files(directory: Path, rank: int) -> list[str]:
    # Listed from disk rather than from DCP's metadata: a rank with nothing to write still
    # leaves an empty shard file, and the manifest must name every file in the directory.
    pattern = re.compile(rf"^__{rank}_\d+{re.escape(layout.DISTCP_SUFFIX)}$")
    return sorted(name for name in os.listdir(directory) if pattern.match(name))


def load_sharded(
    sharded_state_dict: dict[str, Any], directory: Path, *, strict: str = "assume_ok_unexpected"
) -> dict[str, Any]:
    """megatron-core's ``dist_checkpointing.load`` of ``directory`` (collective, runs on CPU).

    Tensors are read into the ``data`` of the given ``ShardedTensor``s (allocated on CPU where
    ``data`` is None), resharded as needed; ``common.pt`` is merged in. ``strict`` is one of
    megatron-core's ``StrictHandling`` values.
    """
    with _mcore_compat.read_through(DirectFileSystemReader):
        loaded = mcore_load(sharded_state_dict, str(directory), strict=strict)
    if isinstance(loaded, tuple):  # strict modes that also return mismatched keys
        return dict(loaded[0])
    return dict(loaded)


def load_common(directory: Path) -> dict[str, Any]:
    """The common (non-sharded) part of a checkpoint: ``common.pt`` as megatron-core reads it."""
    return dict(load_common_state_dict(str(directory)))
