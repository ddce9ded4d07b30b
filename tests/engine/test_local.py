"""The engine in a single process: helpers without a process group, config validation,
state-dict conversion, and a save/load round trip inside ``single_process_group``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from cairn_agent.engine import collectives
from cairn_agent.engine import dist as cdist
from cairn_agent.engine.device import collective_device
from cairn_agent.engine.load import load_checkpoint_dir
from cairn_agent.engine.save import SaveTarget, save_sync
from cairn_agent.engine.sharded import load_common
from cairn_agent.engine.sharded_dict import to_sharded_state_dict
from cairn_agent.errors import CheckpointCorruptError, CommitError
from cairn_agent.storage import layout
from megatron.core.dist_checkpointing import ShardedObject, ShardedTensor
from torch.distributed.checkpoint.api import CheckpointException


def test_helpers_behave_as_a_group_of_one_without_a_process_group() -> None:
    assert not dist.is_initialized()
    assert (cdist.get_rank(), cdist.get_world_size()) == (0, 1)
    cdist.barrier()
    assert cdist.broadcast_object({"a": 1}) == {"a": 1}
    assert cdist.all_gather_object("x") == ["x"]
    assert cdist.gather_object("x") == ["x"]
    assert collectives.all_agree(True) and not collectives.all_agree(False)
    assert cdist.all_reduce_max_int(3) == 3
    assert collective_device() == torch.device("cpu")


def test_run_agreed_turns_a_local_failure_into_commit_error() -> None:
    assert collectives.run_agreed("step", lambda: 42) == 42

    def boom() -> None:
        raise OSError("disk on fire")

    with pytest.raises(CommitError, match="step failed on rank 0: OSError: disk on fire") as info:
        collectives.run_agreed("step", boom)
    assert isinstance(info.value.__cause__, OSError)


def test_dcp_failures_are_described_per_rank() -> None:
    error = CheckpointException("write", {1: (RuntimeError("short write"), None)})
    assert (
        collectives.describe_error(error)
        == "DCP failed on ranks [1] (rank 1: RuntimeError: short write)"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iteration": -1}, "iteration must be >= 0"),
        ({"generation": -2}, "generation must be >= 0"),
        ({"iter_files": {"metadata.json": b""}}, "written by Cairn itself"),
        ({"iter_files": {"__0_0.distcp": b""}}, "collides with DCP shard names"),
        ({"iter_files": {"sub/train_state.pt": b""}}, "plain, visible file name"),
        ({"root_files": {layout.TRACKER_FILENAME: b""}}, "written by Cairn itself"),
    ],
)
def test_save_target_rejects_what_would_break_the_layout(
    kwargs: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {"root": Path("/ckpt"), "iteration": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        SaveTarget(**fields)  # type: ignore[arg-type]


def test_save_target_names_its_final_directory() -> None:
    assert SaveTarget(root=Path("/c"), iteration=12).final_dir == Path("/c/iter_0000012")
    assert SaveTarget(root=Path("/c"), iteration=0, release=True).final_dir == Path("/c/release")


def test_to_sharded_state_dict_wraps_tensors_and_keeps_the_rest() -> None:
    obj = ShardedObject("rng", {"s": 1}, (1,), (0,))
    step = torch.tensor(3.0)
    converted = to_sharded_state_dict(
        {
            "w": torch.ones(2, 3),
            "opt": {"state": {0: {"step": step}}, "groups": [{"lr": 0.1}]},
            "rng": obj,
            "n": 5,
        },
        prefix="m.",
    )
    weight = converted["w"]
    assert (
        isinstance(weight, ShardedTensor) and weight.key == "m.w" and weight.global_shape == (2, 3)
    )
    assert weight.replica_id == 0
    assert converted["opt"]["state"][0]["step"].key == "m.opt.state.0.step"
    assert converted["opt"]["groups"] == [{"lr": 0.1}]
    assert converted["rng"] is obj and converted["n"] == 5


def test_single_process_save_and_load_round_trip(tmp_path: Path) -> None:
    weight = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    with cdist.single_process_group():
        state = to_sharded_state_dict({"w": weight, "step": 9})
        final = save_sync(state, SaveTarget(root=tmp_path, iteration=9))
        loaded = load_checkpoint_dir(
            to_sharded_state_dict({"w": torch.zeros(4, 3), "step": 0}), final
        )
        common = load_common(final)
        released = save_sync(state, SaveTarget(root=tmp_path, iteration=0, release=True))
        (final / layout.METADATA_JSON).unlink()
        with pytest.raises(CheckpointCorruptError, match="metadata.json"):
            load_checkpoint_dir(to_sharded_state_dict({"w": torch.zeros(4, 3)}), final)
    assert not dist.is_initialized()
    assert torch.equal(loaded["w"], weight) and loaded["step"] == 9
    assert common == {"step": 9}
    assert released == tmp_path / "release" and (released / layout.MANIFEST_FILENAME).exists()
    assert layout.tracker_path(tmp_path).read_text() == "release"
