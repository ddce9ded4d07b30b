"""Megatron-LM checkpoints: args and progress from common.pt, and pre-2.0 QKV row order."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cairn_agent.state.legacy import (
    _extract_megatron_lm_args_from_state_dict,
    _get_train_state_from_state_dict,
    _transpose_first_dim,
)

from tests.helpers_api.legacy_fixture import write_megatron_lm_checkpoint


def test_megatron_lm_checkpoint_yields_layout_options_and_progress(tmp_path: Path) -> None:
    iteration_dir = write_megatron_lm_checkpoint(
        tmp_path,
        300,
        consumed_train_samples=9600,
        skipped_train_samples=3,
        consumed_valid_samples=128,
        num_floating_point_operations_so_far=2.5e15,
        tensor_model_parallel_size=2,
        ckpt_fully_parallel_save=True,
    )
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "300"
    assert not (iteration_dir / "train_state.pt").exists()
    common = torch.load(iteration_dir / "common.pt", weights_only=False)

    assert _extract_megatron_lm_args_from_state_dict(common) == {
        "model": {
            "tensor_model_parallel_size": 2,
            "pipeline_model_parallel_size": 1,
            "encoder_tensor_model_parallel_size": 0,
            "encoder_pipeline_model_parallel_size": 0,
        },
        "checkpoint": {"save_optim": False, "save_rng": True, "fully_parallel_save": True},
    }
    state = _get_train_state_from_state_dict(common)
    assert (state.step, state.consumed_train_samples, state.skipped_train_samples) == (300, 9600, 3)
    assert state.consumed_valid_samples == 128
    assert state.floating_point_operations_so_far == 2.5e15
    assert not (state.do_train or state.do_valid or state.do_test)


def test_args_as_dict_and_defaults_for_missing_fields() -> None:
    extracted = _extract_megatron_lm_args_from_state_dict({"args": {"no_save_rng": True}})
    assert extracted["model"]["tensor_model_parallel_size"] == 1
    assert extracted["model"]["encoder_pipeline_model_parallel_size"] == 0
    assert extracted["checkpoint"] == {
        "save_optim": True,
        "save_rng": False,
        "fully_parallel_save": False,
    }


def test_missing_args_is_an_error_that_names_it() -> None:
    with pytest.raises(RuntimeError, match="no 'args'.*iteration"):
        _extract_megatron_lm_args_from_state_dict({"iteration": 5})


def test_train_state_without_args_reads_zero_counters() -> None:
    state = _get_train_state_from_state_dict({"iteration": torch.tensor(12)})
    assert (state.step, state.consumed_train_samples, state.floating_point_operations_so_far) == (
        12,
        0,
        0.0,
    )
    namespace = argparse.Namespace(consumed_train_samples=40)
    assert _get_train_state_from_state_dict({"args": namespace}).consumed_train_samples == 40


def _fake_model(heads: int, head_size: int) -> SimpleNamespace:
    attention = SimpleNamespace(
        num_attention_heads_per_partition=heads, hidden_size_per_attention_head=head_size
    )
    layer = SimpleNamespace(self_attention=attention)
    inner = SimpleNamespace(language_model=SimpleNamespace(encoder=SimpleNamespace(layers=[layer])))
    return SimpleNamespace(module=inner)  # wrapped, as DDP / Float16Module do


def test_version_0_qkv_rows_move_from_split_major_to_head_major() -> None:
    # 3 splits (q, k, v) x 2 heads x 2 rows per head; row r holds value r.
    t = torch.arange(12.0).view(12, 1).repeat(1, 4)
    out = _transpose_first_dim(t, 3, True, _fake_model(2, 2))
    # old row of (split s, head p, i) is s*4 + p*2 + i; new order is (p, s, i).
    expected = [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]
    assert out[:, 0].tolist() == expected
    assert out.shape == t.shape and torch.equal(out[:, 3], out[:, 0])


def test_version_1_qkv_rows_move_from_split_minor_to_head_major() -> None:
    t = torch.arange(12.0).view(12, 1)
    out = _transpose_first_dim(t, 3, False, _fake_model(2, 2))
    # old row of (head p, i, split s) is p*6 + i*3 + s; new order is (p, s, i).
    assert out[:, 0].tolist() == [0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]


def test_qkv_size_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match="does not match"):
        _transpose_first_dim(torch.zeros(10, 1), 3, True, _fake_model(2, 2))


def test_rng_state_saved_by_megatron_core_restores_the_streams(tmp_path: Path) -> None:
    import random

    import numpy as np
    from cairn_agent.engine.dist import single_process_group
    from cairn_agent.state.rng import get_rng_state, restore_rng_state
    from megatron.core import dist_checkpointing

    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    iteration_dir = write_megatron_lm_checkpoint(tmp_path, 4)  # saves rng_state now
    expected = (random.random(), float(np.random.rand()), torch.rand(2).tolist())
    with single_process_group():
        loaded = dist_checkpointing.load({"rng_state": get_rng_state(False)}, str(iteration_dir))
    restore_rng_state(loaded["rng_state"], False)
    assert (random.random(), float(np.random.rand()), torch.rand(2).tolist()) == expected
