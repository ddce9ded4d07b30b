"""Dataloader state files: ``<path>/iter_NNNNNNN/train_dataloader_dprankNNN.pt`` (spec §1.6).

A resumable iterator (Megatron-Energon's loaders, or anything with ``save_state()`` and
``restore_state(state)``) is saved once per data-parallel replica: only ranks that are first in
their pipeline, tensor and context parallel groups write, each its own file, holding
``{"dataloader_state_dict": iterable.save_state()}``. The save is synchronous and happens
before the model checkpoint is scheduled. Files are written atomically (temp + fsync +
replace), so a reader never sees a torn file.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch

from cairn_agent.engine import dist
from cairn_agent.engine.topology import Topology, topology
from cairn_agent.state.run_config import view
from cairn_agent.storage import layout
from cairn_agent.storage.durable import DEFAULT_IO, DurableIO, atomic_write_bytes

log = logging.getLogger(__name__)

STATE_KEY = "dataloader_state_dict"
"""Key of the iterator's state inside each dataloader file (Megatron's name)."""


def _resumable(train_iterator: Any, method: str) -> Any:
    """The object that carries ``method``: the iterator's ``.iterable``, else the iterator."""
    iterable = getattr(train_iterator, "iterable", None)
    for candidate in (iterable, train_iterator):
        if candidate is not None and callable(getattr(candidate, method, None)):
            return candidate
    raise RuntimeError(
        f"train iterator of type {type(train_iterator).__name__} has no {method}() (neither on "
        "itself nor on its .iterable); use a resumable dataloader or unset the dataloader "
        "save/load path"
    )


def _prepare_iteration_dir(iteration_dir: Path, place: Topology) -> None:
    # Files of a larger data-parallel size from an earlier attempt at this iteration must not
    # survive next to the new ones, so the first replica starts the directory afresh; the
    # barriers keep every writer from writing before that and from racing the removal.
    dist.barrier(place.dp_group)
    if place.dp_rank == 0:
        if iteration_dir.exists():
            DEFAULT_IO.remove_tree(iteration_dir)
        iteration_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier(place.dp_group)


def _serialize(state: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save({STATE_KEY: state}, buffer)
    return buffer.getvalue()


def maybe_save_dataloader_state(
    train_iterator: Any,
    iteration: int,
    dataloader_save_path: str | None,
    *,
    pg_collection: Any = None,
    durable_io: DurableIO = DEFAULT_IO,
) -> None:
    """Save the dataloader state of this data-parallel replica, if there is anything to save.

    Returns at once when ``train_iterator`` or ``dataloader_save_path`` is None or empty.
    Raises ``RuntimeError`` when the iterator cannot save its state. Collective over the
    data-parallel group of the writer ranks (pipeline/tensor/context rank 0).
    """
    if train_iterator is None or not dataloader_save_path:
        return
    resumable = _resumable(train_iterator, "save_state")
    place = topology(pg_collection)
    if not place.first_in_model_parallel:
        return
    path = layout.dataloader_state_path(dataloader_save_path, iteration, place.dp_rank)
    state = resumable.save_state()
    _prepare_iteration_dir(path.parent, place)
    atomic_write_bytes(path, _serialize(state), durable_io)
    log.info(
        "saved dataloader state of iteration %d, data-parallel rank %d, to %s",
        iteration,
        place.dp_rank,
        path,
    )


def _check_data_parallel_size(root: str, iteration: int, path: Path, place: Topology) -> None:
    iteration_dir = path.parent
    if not path.is_file():
        raise RuntimeError(
            f"{iteration_dir} has no dataloader state for data-parallel rank {place.dp_rank} "
            f"({path.name}): the data-parallel size changed since the save (now "
            f"{place.dp_size}); dataloader state cannot be resharded, resume with the same "
            "data-parallel size or unset the dataloader load path"
        )
    # A file for rank ``dp_size`` means the save had more replicas; ranks missing below
    # ``dp_size`` are caught by the check above on the rank that misses its file.
    if layout.dataloader_state_path(root, iteration, place.dp_size).exists():
        raise RuntimeError(
            f"{iteration_dir} holds dataloader state of more than {place.dp_size} data-parallel "
            f"ranks but the data-parallel size is now {place.dp_size}: the data-parallel size "
            "changed since the save; resume with the same size or unset the dataloader load path"
        )


def maybe_load_dataloader_state(
    train_iterator: Any,
    iteration: int,
    dataloader_load_path: str | None,
    *,
    pg_collection: Any = None,
) -> bool:
    """Restore the dataloader state saved at ``iteration``; True when something was restored.

    No iterator, no path, or no directory for ``iteration`` means a fresh start (False).
    A directory without this data-parallel rank's file, or with files of a different number
    of ranks, raises ``RuntimeError``: the data-parallel size changed. Every rank loads.
    """
    if train_iterator is None or not dataloader_load_path:
        return False
    resumable = _resumable(train_iterator, "restore_state")
    place = topology(pg_collection)
    path = layout.dataloader_state_path(dataloader_load_path, iteration, place.dp_rank)
    if not path.parent.is_dir():
        log.info("no dataloader state at %s; the dataloader starts fresh", path.parent)
        return False
    _check_data_parallel_size(dataloader_load_path, iteration, path, place)
    # The file holds whatever the dataloader's save_state() returned (arbitrary objects).
    loaded = torch.load(path, map_location="cpu", weights_only=False)
    resumable.restore_state(loaded[STATE_KEY])
    log.info("restored dataloader state of iteration %d from %s", iteration, path)
    return True


def dataloader_save_dir(cfg: Any) -> str | None:
    """Where a run saves dataloader state: the configured directory, else ``<save>/dataloader``."""
    configured = view(cfg).dataloader_save
    save = cfg.checkpoint.save
    return configured or (str(Path(save) / layout.DATALOADER_SUBDIR) if save else None)
