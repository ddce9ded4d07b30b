"""Node-local checkpoints through nvidia-resiliency-ext, on 2 gloo ranks with CPU tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn_agent.config import CheckpointConfig

from tests.distributed import run_ranks


def _sharded(rank: int, world_size: int, value: float) -> dict[str, Any]:
    import torch
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    weight = torch.full((2, 3), value + rank)
    return {
        "model": {"w": ShardedTensor.from_rank_offsets("w", weight, (0, rank, world_size))},
        "iteration": int(value),
    }


def _save_two_iterations(rank: int, world_size: int, cfg: CheckpointConfig) -> list[str]:
    from cairn_agent.checkpointing import init_checkpointing_context
    from cairn_agent.local.nvrx import save_local_checkpoint

    ctx = init_checkpointing_context(cfg)
    save_local_checkpoint(ctx, _sharded(rank, world_size, 10.0), 10)
    save_local_checkpoint(ctx, _sharded(rank, world_size, 20.0), 20)
    own_dir = Path(str(cfg.non_persistent_local_ckpt_dir)) / str(rank)
    return sorted(p.name for p in own_dir.iterdir() if p.name.endswith(".pt"))


def _resume(rank: int, world_size: int, cfg: CheckpointConfig) -> dict[str, Any]:
    from cairn_agent.checkpointing import (
        CheckpointType,
        _get_non_persistent_iteration,
        _load_non_persistent_base_checkpoint,
        init_checkpointing_context,
    )

    ctx = init_checkpointing_context(cfg)  # a restarted process: a fresh manager
    iteration = _get_non_persistent_iteration("unused-for-local", "local", ctx)
    first = _load_non_persistent_base_checkpoint("unused", cfg, True, None, iteration, ctx)
    template = _sharded(rank, world_size, 0.0)
    state, ckpt_id, release, kind = _load_non_persistent_base_checkpoint(
        "unused", cfg, False, template, iteration, ctx
    )
    return {
        "iteration": iteration,
        "first_pass": first == ({}, iteration, False, CheckpointType.LOCAL),
        "w": state["model"]["w"].tolist(),
        "common": state["iteration"],
        "ckpt_id": ckpt_id,
        "release": release,
        "local": kind is CheckpointType.LOCAL,
    }


def _fully_parallel_loads(cfg: CheckpointConfig, rank: int, world_size: int) -> Any:
    from cairn_agent.checkpointing import (
        _get_non_persistent_iteration,
        _load_non_persistent_base_checkpoint,
        init_checkpointing_context,
    )

    ctx = init_checkpointing_context(cfg)
    iteration = _get_non_persistent_iteration("unused", "local", ctx)
    template = _sharded(rank, world_size, 0.0)
    state, *_ = _load_non_persistent_base_checkpoint("unused", cfg, False, template, iteration, ctx)
    return state["model"]["w"].tolist()


def _cleanup_only_on_rank_zero(rank: int, root: str) -> bool:
    from cairn_agent.checkpointing import cleanup_old_non_persistent_checkpoint

    return cleanup_old_non_persistent_checkpoint(root, 1) is None


def _body(rank: int, world_size: int, local_dir: str, np_root: str) -> dict[str, Any]:
    import torch.distributed as dist

    atomic = CheckpointConfig(
        non_persistent_ckpt_type="local",
        non_persistent_local_ckpt_dir=local_dir,
        non_persistent_local_ckpt_algo="atomic",
    )
    files = _save_two_iterations(rank, world_size, atomic)
    resumed = _resume(rank, world_size, atomic)
    fully_parallel = CheckpointConfig(
        non_persistent_ckpt_type="local",
        non_persistent_local_ckpt_dir=local_dir,
    )
    fully_parallel_w = _fully_parallel_loads(fully_parallel, rank, world_size)
    cleanup_returned_none = _cleanup_only_on_rank_zero(rank, np_root)
    dist.barrier()
    return {
        "files": files,
        "fully_parallel_w": fully_parallel_w,
        "cleanup_none": cleanup_returned_none,
        **resumed,
    }


def test_local_checkpoints_save_find_latest_and_load_on_two_cpu_ranks(tmp_path: Path) -> None:
    from tests.helpers_api.test_non_persistent import make_committed

    local_dir = tmp_path / "local"
    np_root = tmp_path / "np"
    make_committed(np_root, 1, 2)
    results = run_ranks(_body, 2, str(local_dir), str(np_root))
    for rank, got in enumerate(results):
        # nvrx layout; the older iteration was removed after the newer one was complete.
        assert got["files"] == [f"iter_0000020_{rank}_local.pt"]
        assert got["iteration"] == 20 and got["first_pass"]
        assert got["w"] == [[20.0 + rank] * 3] * 2
        assert got["common"] == 20
        assert got["ckpt_id"] == (20, rank, "") and got["release"] is False and got["local"]
        # Written with atomic, read with fully_parallel: the algorithm is a load-time choice.
        assert got["fully_parallel_w"] == [[20.0 + rank] * 3] * 2
        assert got["cleanup_none"]
    # Only rank 0 ran retention: iteration 1 is gone, the newest (2) is kept.
    assert sorted(p.name for p in np_root.iterdir()) == ["iter_0000002"]


def test_context_is_empty_unless_local() -> None:
    from cairn_agent.checkpointing import init_checkpointing_context

    assert init_checkpointing_context(CheckpointConfig()) == {}
    assert init_checkpointing_context(CheckpointConfig(non_persistent_ckpt_type="global")) == {}
