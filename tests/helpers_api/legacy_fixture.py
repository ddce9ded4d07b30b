"""Build a checkpoint exactly as Megatron-LM writes it, with megatron-core's own save path.

``write_megatron_lm_checkpoint`` produces ``<root>/iter_NNNNNNN/`` (DCP shards, ``.metadata``,
``common.pt``, ``metadata.json``) and ``<root>/latest_checkpointed_iteration.txt``, with
Megatron-LM's ``common.pt`` contents: ``args`` (an argparse ``Namespace`` carrying the
parallel layout and progress counters), ``iteration``, ``checkpoint_version`` 3.0 and
``num_floating_point_operations_so_far``. Like Megatron-LM it writes no ``train_state.pt``,
``latest_train_state.pt`` or ``run_config.yaml``.

megatron-core's save path calls ``torch.cuda.synchronize()`` and puts a control tensor on
``torch.cuda.current_device()`` (spec §4); on a CPU-only machine both are swapped for CPU
equivalents for the duration of the save only. That is a patch of a third-party process
boundary (CUDA), not of Cairn code, and Cairn's own save path needs no such patch.

Call it on every rank of the default group (or in a plain process: a one-rank gloo group is
created for the call). Tensors are replicated across ranks; rank 0 writes them.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

MLM_CHECKPOINT_VERSION = 3.0


@contextlib.contextmanager
def _cpu_stands_in_for_cuda() -> Iterator[None]:
    if torch.cuda.is_available():
        yield
        return
    saved = (torch.cuda.synchronize, torch.cuda.current_device)
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.cuda.synchronize, torch.cuda.current_device = saved  # type: ignore[assignment]


@contextlib.contextmanager
def _process_group() -> Iterator[None]:
    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def megatron_lm_args(**overrides: Any) -> argparse.Namespace:
    """An ``args`` namespace with the fields Megatron-LM checkpoints carry (and Cairn reads)."""
    fields: dict[str, Any] = {
        "tensor_model_parallel_size": 1,
        "pipeline_model_parallel_size": 1,
        "encoder_tensor_model_parallel_size": 0,
        "encoder_pipeline_model_parallel_size": 0,
        "consumed_train_samples": 0,
        "skipped_train_samples": 0,
        "consumed_valid_samples": 0,
        "no_save_optim": True,
        "no_save_rng": False,
        "ckpt_fully_parallel_save": False,
        "ckpt_format": "torch_dist",
    }
    fields.update(overrides)
    return argparse.Namespace(**fields)


def _sharded_model(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    replica = dist.get_rank()
    return {
        key: ShardedTensor.from_rank_offsets(key, tensor.clone(), replica_id=replica)
        for key, tensor in tensors.items()
    }


def _state_dict(
    iteration: int,
    args: argparse.Namespace,
    flops: float,
    tensors: dict[str, torch.Tensor],
    with_rng: bool,
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "args": args,
        "checkpoint_version": MLM_CHECKPOINT_VERSION,
        "iteration": iteration,
        "num_floating_point_operations_so_far": flops,
        "model": _sharded_model(tensors),
    }
    if with_rng:
        from cairn_agent.state.rng import get_rng_state

        state["rng_state"] = get_rng_state(False)
    return state


def write_megatron_lm_checkpoint(
    root: str | Path,
    iteration: int,
    *,
    tensors: dict[str, torch.Tensor] | None = None,
    consumed_train_samples: int = 0,
    skipped_train_samples: int = 0,
    consumed_valid_samples: int = 0,
    num_floating_point_operations_so_far: float = 0.0,
    with_rng: bool = True,
    write_tracker: bool = True,
    **args_overrides: Any,
) -> Path:
    """Write a Megatron-LM ``torch_dist`` checkpoint of ``iteration`` under ``root``.

    ``tensors`` become the ``model`` section (default: one small ``weight``). Extra keyword
    arguments override fields of ``args`` (e.g. ``tensor_model_parallel_size=2``). Returns
    the iteration directory. Collective over the default group.
    """
    from megatron.core import dist_checkpointing

    root = Path(root)
    model = tensors if tensors is not None else {"weight": torch.arange(6.0).view(2, 3)}
    args = megatron_lm_args(
        consumed_train_samples=consumed_train_samples,
        skipped_train_samples=skipped_train_samples,
        consumed_valid_samples=consumed_valid_samples,
        no_save_rng=not with_rng,
        **args_overrides,
    )
    iteration_dir = root / f"iter_{iteration:07d}"
    with _process_group(), _cpu_stands_in_for_cuda():
        if dist.get_rank() == 0:
            iteration_dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        state = _state_dict(iteration, args, num_floating_point_operations_so_far, model, with_rng)
        dist_checkpointing.save(state, str(iteration_dir))
        if write_tracker and dist.get_rank() == 0:
            # Megatron-LM writes the tracker in place, no temp file and no newline.
            (root / "latest_checkpointed_iteration.txt").write_text(str(iteration))
        dist.barrier()
    return iteration_dir
