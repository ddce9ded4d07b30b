"""Megatron-Bridge's newer checkpoint-manager API on Cairn: a Bridge run that names
``cairn_agent.bridge.CairnCheckpointManager`` in ``custom_manager_class`` saves, finalizes and
resumes through Cairn, bit-exactly; a wrong class path or an incomplete class fails with an
error that names what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from cairn_agent import checkpointing
from cairn_agent.bridge import CairnCheckpointManager
from cairn_agent.config import CheckpointConfig
from cairn_agent.manager import CheckpointManagerImportError, CheckpointManagerProtocolError
from cairn_agent.state.train import TrainState
from cairn_agent.storage import layout

from tests.api._bodies import unpack
from tests.api._manager import (
    MANAGER_PATH,
    BridgeLikeCheckpointConfig,
    BridgeLikeConfig,
    train_through_manager,
)
from tests.distributed import run_ranks

STEPS = 8


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run(
    save: Path, load: Path, steps: int, *, async_save: bool, ckpt_step: int | None = None
) -> list[Any]:
    args = (str(save), str(load), steps, async_save, ckpt_step)
    return [unpack(r) for r in run_ranks(train_through_manager, 2, *args)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    """An uninterrupted run of the Bridge loop: 8 steps, async saves every 2 (root, results)."""
    root = tmp_path_factory.mktemp("manager") / "first"
    return root, _run(root, root, STEPS, async_save=True)


def test_bridge_loop_through_the_manager_commits_every_async_save(
    straight: tuple[Path, list[Any]],
) -> None:
    _, results = straight
    rank0 = results[0]
    assert rank0["manager"] == "CairnCheckpointManager"  # built from the class-path string
    assert rank0["resumed_at"] == 0 and rank0["saved"] == [2, 4, 6, 8]
    # Every async save was committed by a finalize, the last one by the blocking finalize.
    assert rank0["committed"] == [2, 4, 6, 8] and rank0["tracker"] == STEPS
    # on_checkpoint_save fired once per save, each only once that save was published.
    fired = rank0["tracker_at_fire"]
    assert len(fired) == 4
    assert all(t is not None and t >= it for t, it in zip(fired, rank0["saved"], strict=True))


@pytest.mark.timeout(600)
def test_a_fresh_job_resumes_through_the_manager_bit_exactly(
    straight: tuple[Path, list[Any]], tmp_path: Path
) -> None:
    # A fresh process group resumes from iteration 4 (sync saves this time) and retraces the
    # uninterrupted run bit for bit.
    first, uninterrupted = straight
    resumed = _run(tmp_path / "second", first, STEPS, async_save=False, ckpt_step=4)
    for before, after in zip(uninterrupted, resumed, strict=True):
        assert after["resumed_at"] == 4 and after["saved"] == [6, 8]
        assert _same(after["params"], before["params"])
        assert after["flops"] == before["flops"]
    assert resumed[0]["tracker_at_fire"] == [6, 8]  # sync: fired right after each commit


BRIDGE_TRAIN_STATE_DTYPES = {
    # What Megatron-Bridge (>= 0.5) writes to train_state.pt: its TrainState.state_dict()
    # (int64 counters, bool flags) with the FLOPs counter re-created as float32.
    "step": torch.int64,
    "consumed_train_samples": torch.int64,
    "skipped_train_samples": torch.int64,
    "consumed_valid_samples": torch.int64,
    "floating_point_operations_so_far": torch.float32,
    "do_train": torch.bool,
    "do_valid": torch.bool,
    "do_test": torch.bool,
}


def test_train_state_and_run_config_are_the_files_bridge_writes(
    straight: tuple[Path, list[Any]], tmp_path: Path
) -> None:
    root, _ = straight
    for path in (layout.iteration_dir(root, 8) / "train_state.pt", root / "latest_train_state.pt"):
        content = torch.load(path, weights_only=True)
        assert {k: v.dtype for k, v in content.items()} == BRIDGE_TRAIN_STATE_DTYPES
        assert content["step"].item() == 8 and content["floating_point_operations_so_far"] == 800
    # run_config.yaml is the Bridge config's own full dump, byte for byte: what Bridge's
    # load_model_config reads back (the model provider's _target_ and its fields).
    expected = tmp_path / "expected.yaml"
    BridgeLikeConfig(
        BridgeLikeCheckpointConfig(
            save=str(root), load=str(root), async_save=True, custom_manager_class=MANAGER_PATH
        )
    ).to_yaml(str(expected))
    written = layout.iteration_dir(root, 8) / layout.RUN_CONFIG_FILENAME
    assert written.read_bytes() == expected.read_bytes()
    assert yaml.safe_load(written.read_text())["model"]["hidden_size"] == 8


def test_train_state_files_of_either_bridge_generation_load() -> None:
    bridge_04 = {k: torch.tensor(3, dtype=torch.int32) for k in BRIDGE_TRAIN_STATE_DTYPES}
    bridge_04 |= {
        "floating_point_operations_so_far": torch.tensor(1.5e3, dtype=torch.float32),
        "do_train": torch.tensor(True),
        "do_valid": torch.tensor(False),
        "do_test": torch.tensor(False),
    }
    cairn_01 = {k: v.to(torch.int64) if v.dtype == torch.int32 else v for k, v in bridge_04.items()}
    cairn_01["floating_point_operations_so_far"] = torch.tensor(1.5e3, dtype=torch.float64)
    for content in (bridge_04, cairn_01):
        state = TrainState()
        state.load_state_dict(content)
        assert (state.step, state.consumed_train_samples) == (3, 3)
        assert state.floating_point_operations_so_far == 1.5e3 and state.do_train is True
        assert type(state.step) is int and type(state.floating_point_operations_so_far) is float


def _config(path: str) -> BridgeLikeCheckpointConfig:
    return BridgeLikeCheckpointConfig(save="/unused", custom_manager_class=path)


def test_class_path_resolves_like_bridge_and_defaults_to_the_default_manager() -> None:
    manager = checkpointing.create_checkpoint_manager(
        _config("cairn_agent.bridge.CairnCheckpointManager")
    )
    assert isinstance(manager, CairnCheckpointManager)
    assert isinstance(manager, checkpointing.CheckpointManager)
    # Bridge's config was copied into Cairn's (Bridge-only fields dropped).
    assert isinstance(manager.checkpoint_config, CheckpointConfig)
    assert manager.checkpoint_config.save == "/unused"
    default = checkpointing.create_checkpoint_manager(CheckpointConfig())
    assert isinstance(default, checkpointing.DefaultCheckpointManager)


@pytest.mark.parametrize(
    ("path", "error", "names"),
    [
        ("cairn_agent.no_such_module.Manager", CheckpointManagerImportError, "no_such_module"),
        ("cairn_agent.bridge.NoSuchManager", CheckpointManagerImportError, "NoSuchManager"),
        ("tests.api._manager.HalfManager", CheckpointManagerProtocolError, "finalize_async_saves"),
        ("tests.api._manager.NOT_A_CLASS", CheckpointManagerProtocolError, "not a class"),
        ("NoDotsAtAll", ValueError, "package.module.ClassName"),
    ],
)
def test_a_wrong_class_path_or_an_incomplete_class_names_what_is_missing(
    path: str, error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        checkpointing.create_checkpoint_manager(_config(path))


def test_wrong_paths_raise_what_bridge_code_catches() -> None:
    # Code written against Bridge catches ImportError / TypeError; Cairn's errors are both.
    with pytest.raises(ImportError):
        checkpointing.create_checkpoint_manager(_config("cairn_agent.nope.Manager"))
    with pytest.raises(TypeError):
        checkpointing.create_checkpoint_manager(_config("tests.api._manager.HalfManager"))


def test_cairn_config_rejects_a_malformed_class_path_when_built() -> None:
    with pytest.raises(ValueError, match="package.module.ClassName"):
        CheckpointConfig(custom_manager_class="cairn_agent.")


def test_settings_cairn_cannot_honour_fail_when_the_manager_is_built() -> None:
    unsupported = BridgeLikeCheckpointConfig(save="/unused", async_save=True, most_recent_k=1)
    with pytest.raises(ValueError, match="most_recent_k=1"):
        CairnCheckpointManager(unsupported)


def test_per_module_checkpoints_are_refused_not_ignored() -> None:
    manager = CairnCheckpointManager(_config("cairn_agent.bridge.CairnCheckpointManager"))
    ctx = checkpointing.CheckpointLoadContext(None, [], None, None, module_name="vision")
    with pytest.raises(ValueError, match="module_name='vision'"):
        manager.load(ctx)
