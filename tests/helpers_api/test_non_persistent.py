"""Non-persistent roots: which iteration they publish, how they load, what retention keeps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from cairn_agent.config import CheckpointConfig
from cairn_agent.errors import StaleGenerationError, TrackerCorruptError
from cairn_agent.flows.non_persistent import (
    CleanupThread,
    _get_non_persistent_iteration,
    cleanup_old_non_persistent_checkpoint,
)
from cairn_agent.state.train import TrainState
from cairn_agent.storage import layout
from cairn_agent.storage.generation import claim_generation


def make_committed(root: Path, *iterations: int) -> None:
    """Iteration dirs that count as committed (megatron-core's marker written last)."""
    for iteration in iterations:
        directory = layout.iteration_dir(root, iteration)
        directory.mkdir(parents=True)
        (directory / "common.pt").write_bytes(b"x")
        (directory / layout.METADATA_JSON).write_text(json.dumps(layout.TORCH_DIST_METADATA))


def publish(root: Path, iteration: int, *, train_state: bool = True) -> None:
    (root / layout.TRACKER_FILENAME).write_text(str(iteration))
    if train_state:
        torch.save(TrainState(step=iteration).state_dict(), layout.latest_train_state_path(root))


def names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_cleanup_keeps_newest_tracker_target_and_in_flight_dirs(tmp_path: Path) -> None:
    make_committed(tmp_path, 10, 20, 30, 40)
    publish(tmp_path, 30)  # 40 is committed but not yet published: a save in flight
    (tmp_path / "iter_0000045").mkdir()  # a half-written Megatron save (no metadata.json)
    staging = tmp_path / layout.staging_dir_name("iter_0000050", 0, "ab12")
    staging.mkdir()

    assert cleanup_old_non_persistent_checkpoint(str(tmp_path), 1) is None

    assert names(tmp_path) == [staging.name, "iter_0000030", "iter_0000040", "iter_0000045"]


def test_cleanup_keeps_leave_ckpt_num_and_respects_max_iteration(tmp_path: Path) -> None:
    make_committed(tmp_path, 10, 20, 30, 40, 50)
    publish(tmp_path, 50)
    cleanup_old_non_persistent_checkpoint(str(tmp_path), 2, max_iteration=40)
    assert names(tmp_path) == ["iter_0000030", "iter_0000040", "iter_0000050"]
    cleanup_old_non_persistent_checkpoint(str(tmp_path), 0)  # the newest is always kept
    assert names(tmp_path) == ["iter_0000050"]


def test_async_cleanup_can_be_joined_and_surfaces_a_stale_writer(tmp_path: Path) -> None:
    make_committed(tmp_path, 1, 2, 3)
    publish(tmp_path, 3, train_state=False)
    thread = cleanup_old_non_persistent_checkpoint(str(tmp_path), 1, do_async=True)
    assert isinstance(thread, CleanupThread)
    thread.join(timeout=60)
    assert names(tmp_path) == ["iter_0000003"]

    make_committed(tmp_path, 4, 5)
    publish(tmp_path, 5)
    claim_generation(tmp_path, 7)  # a newer restart owns this root now
    stale = cleanup_old_non_persistent_checkpoint(str(tmp_path), 1, do_async=True, generation=3)
    assert stale is not None
    with pytest.raises(StaleGenerationError):
        stale.join(timeout=60)
    assert names(tmp_path) == ["iter_0000003", "iter_0000004", "iter_0000005"]


def test_cleanup_rejects_a_negative_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="leave_ckpt_num"):
        cleanup_old_non_persistent_checkpoint(str(tmp_path), -1)


def test_global_iteration_comes_from_the_roots_trackers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = str(tmp_path)
    assert _get_non_persistent_iteration(root) == -1
    with caplog.at_level(logging.WARNING):
        assert _get_non_persistent_iteration(root, "global") == -1
    assert "no non-persistent tracker" in caplog.text
    (tmp_path / layout.TRACKER_FILENAME).write_text("70")  # Megatron-LM writes only this one
    assert _get_non_persistent_iteration(root, "global") == 70
    publish(tmp_path, 80)
    assert _get_non_persistent_iteration(root, "global") == 80
    layout.latest_train_state_path(tmp_path).write_bytes(b"\x00garbage")
    with pytest.raises(TrackerCorruptError, match="latest_train_state.pt"):
        _get_non_persistent_iteration(root, "global")
    with pytest.raises(ValueError, match="in_memory"):
        _get_non_persistent_iteration(root, "in_memory")  # type: ignore[arg-type]


def test_global_non_persistent_base_load_reads_the_iteration_dir(tmp_path: Path) -> None:
    from cairn_agent import checkpointing
    from cairn_agent.config import ConfigContainer
    from cairn_agent.engine.dist import single_process_group
    from cairn_agent.flows.common import CheckpointType
    from cairn_agent.state.train import GlobalState

    cfg = CheckpointConfig(save=str(tmp_path), non_persistent_ckpt_type="global")
    state = GlobalState(ConfigContainer(checkpoint=cfg))
    state.train_state.step = 80
    model = torch.nn.Linear(2, 2)
    root = str(layout.non_persistent_dir(str(tmp_path), None))
    with single_process_group():
        checkpointing.save_checkpoint(state, [model], None, None, 0.0, non_persistent_ckpt=True)
        common, name, release, kind = checkpointing._load_non_persistent_base_checkpoint(
            root, cfg, True, None, 80, {}
        )
    assert common is not None and common["iteration"] == 80
    assert name == str(layout.iteration_dir(root, 80)) and not release
    assert kind is CheckpointType.GLOBAL
