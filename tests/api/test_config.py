"""CheckpointConfig keeps Megatron-Bridge's names and defaults and rejects bad combinations
with a message that says what to change; TrainState serializes like Bridge's."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import yaml
from cairn_agent.config import CheckpointConfig, ConfigContainer
from cairn_agent.state.run import generation_from_env
from cairn_agent.state.train import GlobalState, TrainState

BRIDGE_DEFAULTS = {
    "save": None,
    "save_interval": None,
    "most_recent_k": -1,
    "save_optim": True,
    "save_rng": True,
    "load": None,
    "load_optim": True,
    "load_main_params_from_ckpt": False,
    "load_rng": True,
    "non_persistent_save_interval": None,
    "non_persistent_ckpt_type": None,
    "non_persistent_global_ckpt_dir": None,
    "non_persistent_local_ckpt_dir": None,
    "non_persistent_local_ckpt_algo": "fully_parallel",
    "finetune": False,
    "pretrained_checkpoint": None,
    "ckpt_step": None,
    "exit_on_missing_checkpoint": False,
    "ckpt_format": "torch_dist",
    "fully_parallel_save": True,
    "async_save": False,
    "use_persistent_ckpt_worker": True,
    "fully_parallel_load": False,
    "ckpt_assume_constant_structure": False,
    "dist_ckpt_strictness": "assume_ok_unexpected",
    "save_tokenizer_assets": True,
    "replication": False,
    "replication_jump": None,
    "replication_factor": 2,
    "storage_writers_per_rank": 1,
    "verify_integrity": False,
}


def test_defaults_match_megatron_bridge() -> None:
    cfg = CheckpointConfig()
    assert {k: getattr(cfg, k) for k in BRIDGE_DEFAULTS} == BRIDGE_DEFAULTS
    positional: list[Any] = ["/ckpt"]
    with pytest.raises(TypeError):
        CheckpointConfig(*positional)  # keyword-only, like a Bridge config


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"async_save": True}, "needs save"),
        (
            {"async_save": True, "save": "/c", "use_persistent_ckpt_worker": False},
            "use_persistent_ckpt_worker=True",
        ),
        ({"async_save": True, "save": "/c", "most_recent_k": 1}, ">= 2"),
        ({"ckpt_step": 5}, "set load"),
        ({"load_main_params_from_ckpt": True}, "load_optim=False"),
        ({"ckpt_format": "zarr"}, "use 'torch_dist'"),
        ({"most_recent_k": 0}, "-1 to keep all"),
        ({"non_persistent_ckpt_type": "local"}, "non_persistent_local_ckpt_dir"),
        ({"non_persistent_ckpt_type": "in_memory"}, "'global', 'local' or None"),
        ({"dist_ckpt_strictness": "strict"}, "use one of"),
        ({"save_interval": 0}, "positive"),
        ({"replication": True, "replication_jump": 0}, "replication_jump"),
    ],
)
def test_invalid_combinations_say_what_to_change(kwargs: dict[str, Any], hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        CheckpointConfig(**kwargs)


def test_valid_async_and_legacy_spellings() -> None:
    legacy: dict[str, Any] = {"non_persistent_ckpt_type": "None"}  # older Bridge spelling
    cfg = CheckpointConfig(save="/c", async_save=True, most_recent_k=2, **legacy)
    assert cfg.non_persistent_ckpt_type is None
    cfg.ckpt_step = 3
    with pytest.raises(ValueError, match="set load"):
        cfg.finalize()  # mutation after construction is re-validated on demand


def test_run_config_yaml_round_trips_the_fields() -> None:
    cfg = ConfigContainer(checkpoint=CheckpointConfig(save="/c", most_recent_k=3))
    loaded = yaml.safe_load(cfg.to_yaml())
    assert loaded["checkpoint"]["most_recent_k"] == 3
    assert loaded["model"]["tensor_model_parallel_size"] == 1
    assert loaded["rng"]["data_parallel_random_init"] is False


def test_train_state_serializes_as_bridge_tensors() -> None:
    state = TrainState(
        step=7, consumed_train_samples=56, floating_point_operations_so_far=1.5e18, do_train=True
    )
    sd = state.state_dict()
    assert {k: v.dtype for k, v in sd.items()} == {
        "step": torch.int64,
        "consumed_train_samples": torch.int64,
        "skipped_train_samples": torch.int64,
        "consumed_valid_samples": torch.int64,
        "floating_point_operations_so_far": torch.float64,
        "do_train": torch.bool,
        "do_valid": torch.bool,
        "do_test": torch.bool,
    }
    assert all(v.dim() == 0 for v in sd.values())
    restored = TrainState()
    restored.load_state_dict(sd)
    assert restored == state
    del sd["do_test"]
    with pytest.raises(KeyError, match="do_test"):
        TrainState().load_state_dict(sd)


def test_global_state_generation_and_lazy_queue() -> None:
    assert generation_from_env({"CAIRN_GENERATION": "4"}) == 4
    assert generation_from_env({}) == 0
    with pytest.raises(ValueError, match="non-negative integer"):
        generation_from_env({"CAIRN_GENERATION": "x"})
    state = GlobalState(ConfigContainer())
    assert state.async_calls_queue is None  # sync config: no worker is ever started
    assert dataclasses.is_dataclass(state.cfg.checkpoint)
    with pytest.raises(ValueError, match="cfg is not set"):
        GlobalState().cfg  # noqa: B018
