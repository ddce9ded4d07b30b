"""End to end through ``cairn_agent.checkpointing``: adapter-only (PEFT) checkpoints, and
checkpoints written by Megatron-LM itself.

PEFT: a base checkpoint in A, adapter-only fine-tuning checkpoints in B. B's model section holds
only adapter weights while optimizer, scheduler, RNG and progress are complete; a fresh job
takes the base from A and resumes the adapters (and everything else) from B.

Megatron-LM: no ``train_state.pt``, ``run_config.yaml`` or manifest; progress and layout come
from ``common.pt``'s ``args`` and ``iteration``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from cairn_agent.checkpointing import (
    _extract_megatron_lm_args_from_state_dict,
    _get_train_state_from_state_dict,
)
from megatron.core import dist_checkpointing
from torch.distributed.checkpoint.filesystem import FileSystemReader

from tests.api._bodies import unpack
from tests.api._peft_legacy import (
    ADAPTER_KEYS,
    LEGACY_ITERATION,
    LEGACY_PROGRESS,
    load_megatron_lm,
    peft_save_and_resume,
)
from tests.api._workload import BATCH, FLOPS_PER_STEP
from tests.distributed import run_ranks

WORLD = 2
BASE_KEYS = ("base.0.weight", "base.0.bias", "base.2.weight", "base.2.bias")


def _dcp_keys(iteration_dir: Path) -> set[str]:
    return set(FileSystemReader(str(iteration_dir)).read_metadata().state_dict_metadata)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: Any) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


def _assert_adapter_only_on_disk(root_a: Path, root_b: Path) -> None:
    full, adapters = root_a / "iter_0000001", root_b / "iter_0000001"
    assert set(BASE_KEYS) <= _dcp_keys(full)
    keys = _dcp_keys(adapters)
    model_keys = {k for k in keys if not k.startswith(("optimizer.", "rng_state"))}
    assert model_keys == set(ADAPTER_KEYS)
    # Optimizer state of every trained (adapter) parameter, and the RNG state, are sharded.
    assert {
        f"optimizer.state.{a}.{m}" for a in ADAPTER_KEYS for m in ("exp_avg", "exp_avg_sq")
    } <= keys
    assert any(k.startswith("rng_state") for k in keys)
    common = dist_checkpointing.load_common_state_dict(str(adapters))
    assert common["checkpoint_version"] == 3.0
    assert common["iteration"] == 1
    assert common["opt_param_scheduler"]["last_epoch"] == 1
    assert [g["params"] for g in common["optimizer"]["param_groups"]] == [list(ADAPTER_KEYS)]
    assert not any(k in common.get("model", {}) for k in BASE_KEYS)


def test_peft_checkpoint_is_adapter_only_and_resumes_on_top_of_the_base(tmp_path: Path) -> None:
    root_a, root_b = tmp_path / "base", tmp_path / "adapters"
    results = [unpack(r) for r in run_ranks(peft_save_and_resume, WORLD, str(root_a), str(root_b))]
    _assert_adapter_only_on_disk(root_a, root_b)
    for out in results:
        base, at_save, resumed = out["base"], out["at_save"], out["resumed"]
        assert out["pretrained"] == (0, 0.0)
        # Fine-tuning froze the base: B's run still has A's base weights at its save.
        assert _same(at_save["params"], base, BASE_KEYS)
        # Before the resume the fresh job has A's base but its own (different) adapters.
        assert _same(out["before_resume"], base, BASE_KEYS)
        assert not _same(out["before_resume"], at_save["params"], ADAPTER_KEYS[:1])
        assert out["loaded"] == (1, FLOPS_PER_STEP)
        assert _same(resumed["params"], base, BASE_KEYS)
        assert _same(resumed["params"], at_save["params"], ADAPTER_KEYS)
        assert set(resumed["adam"]) == set(ADAPTER_KEYS)
        for name in ADAPTER_KEYS:
            pairs = zip(resumed["adam"][name], at_save["adam"][name], strict=True)
            assert all(torch.equal(x, y) for x, y in pairs)
        assert resumed["lr"] == at_save["lr"]
        assert resumed["draws"] == at_save["draws"]
        assert resumed["progress"] == at_save["progress"] == (1, BATCH * WORLD, FLOPS_PER_STEP)
        assert resumed["data_pos"] == at_save["data_pos"] == 1


def test_megatron_lm_checkpoint_loads_through_the_facade(tmp_path: Path) -> None:
    results = [unpack(r) for r in run_ranks(load_megatron_lm, WORLD, str(tmp_path))]
    iteration_dir = Path(results[0]["iteration_dir"])
    assert not (iteration_dir / "train_state.pt").exists()
    assert not (iteration_dir / "run_config.yaml").exists()
    common = dist_checkpointing.load_common_state_dict(str(iteration_dir))
    assert _extract_megatron_lm_args_from_state_dict(common) == {
        "model": {
            "tensor_model_parallel_size": 1,
            "pipeline_model_parallel_size": 1,
            "encoder_tensor_model_parallel_size": 0,
            "encoder_pipeline_model_parallel_size": 0,
        },
        "checkpoint": {"save_optim": False, "save_rng": True, "fully_parallel_save": True},
    }
    expected = _get_train_state_from_state_dict(common)
    progress = (LEGACY_ITERATION, *LEGACY_PROGRESS)
    assert (
        expected.step,
        expected.consumed_train_samples,
        expected.skipped_train_samples,
        expected.consumed_valid_samples,
        expected.floating_point_operations_so_far,
    ) == progress
    for out in results:
        assert out["loaded"] == (LEGACY_ITERATION, progress[-1])
        assert out["train_state"] == progress
        assert out["params"].keys() == out["tensors"].keys()
        assert _same(out["params"], out["tensors"], out["tensors"])
        assert out["optimizer_state"] == 0  # Megatron-LM saved no optimizer (no_save_optim)
        assert out["version"] == 3.0
        # One RNG state for every data-parallel rank (Megatron-LM's default): rank 0's.
        assert out["draws"] == results[0]["draws_at_save"]
