"""Round trips on real gloo ranks: 2 → 2 bit-exact, and resharding 2 → 1 → 2.

One 2-rank spawn saves a checkpoint holding every kind of leaf a user relies on (row-sharded
``ShardedTensor``, replicated tensor, ``ShardedObject``, common values, a plain ``nn.Linear`` +
Adam state dict, DTensors) and loads it back; the tests below each assert one aspect of that
run. A 1-rank and a 2-rank spawn then exercise resharding in both directions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cairn_agent.storage import layout
from cairn_agent.storage.manifest import verify_checkpoint_dir
from cairn_agent.storage.tracker import read_tracker

from tests.distributed import run_ranks
from tests.engine import states


def _dtensors(empty: bool) -> dict[str, Any]:
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2,))
    fulls = {
        "even": states.dtensor_full(6),
        "uneven": states.dtensor_full(5),
        "repl": states.dtensor_full(4),
    }
    placements = {"even": [Shard(0)], "uneven": [Shard(0)], "repl": [Replicate()]}
    return {
        name: distribute_tensor(torch.zeros_like(full) if empty else full, mesh, placements[name])
        for name, full in fulls.items()
    }


def _dist_helper_checks(rank: int) -> dict[str, Any]:
    from cairn_agent.engine import collectives
    from cairn_agent.engine import dist as cdist
    from cairn_agent.engine.device import collective_device

    return {
        "device": str(collective_device()),
        "agree_all": collectives.all_agree(True),
        "agree_one_false": collectives.all_agree(rank == 0),
        "max": cdist.all_reduce_max_int(rank * 5 + 1),
        "broadcast_from_1": cdist.broadcast_object({"from": rank}, src=1),
        "gathered": cdist.all_gather_object(rank * 10),
        "gather_to_0": cdist.gather_object(rank, dst=0),
    }


def _save_and_reload(rank: int, world_size: int, root: str) -> dict[str, Any]:
    import torch
    from cairn_agent.engine.load import load_checkpoint_dir
    from cairn_agent.engine.save import SaveTarget, save_sync
    from cairn_agent.engine.sharded_dict import to_sharded_state_dict

    checks = _dist_helper_checks(rank)
    model, optimizer = states.linear_and_adam(seed=1)
    dtensors = _dtensors(empty=False)
    saved = states.mcore_state(rank, world_size)
    saved["plain"] = to_sharded_state_dict(
        {"model": model.state_dict(), "optim": optimizer.state_dict()}, "plain."
    )
    saved["dt"] = to_sharded_state_dict(dtensors, "dt.")
    target = SaveTarget(
        root=Path(root),
        iteration=states.ITERATION,
        layout={"dp": world_size},
        iter_files={"train_state.pt": b"train-state"},
        root_files={"latest_train_state.pt": b"ts"},
    )
    final = save_sync(saved, target)

    model2, optimizer2 = states.linear_and_adam(seed=2)
    checks["plain_differs_before_load"] = not torch.equal(model.weight, model2.weight)
    template = states.mcore_state(rank, world_size, empty=True)
    template["plain"] = to_sharded_state_dict(
        {"model": model2.state_dict(), "optim": optimizer2.state_dict()}, "plain."
    )
    template["dt"] = to_sharded_state_dict(_dtensors(empty=True), "dt.")
    loaded = load_checkpoint_dir(template, final)

    model2.load_state_dict(loaded["plain"]["model"])
    optimizer2.load_state_dict(loaded["plain"]["optim"])
    checks.update(
        final=str(final),
        weight=torch.equal(loaded["weight"], saved["weight"].data),
        scale=torch.equal(loaded["scale"], states.replicated_value()),
        rng_state=loaded["rng_state"],
        commons={k: loaded[k] for k in ("checkpoint_version", "iteration", "opt_param_scheduler")},
        model_params=all(
            torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters(), strict=True)
        ),
        optim_state=_same_optimizer_state(optimizer.state_dict(), optimizer2.state_dict()),
        dtensors={
            name: torch.equal(loaded["dt"][name], dt.to_local()) for name, dt in dtensors.items()
        },
    )
    return checks


def _same_optimizer_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    if a["param_groups"] != b["param_groups"] or a["state"].keys() != b["state"].keys():
        return False
    return all(
        torch.equal(a["state"][p][name], b["state"][p][name])
        for p in a["state"]
        for name in a["state"][p]
    )


@pytest.fixture(scope="module")
def two_rank_save(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("two-rank") / "ckpt"
    return root, run_ranks(_save_and_reload, 2, str(root))


def test_collective_helpers_on_gloo(two_rank_save: tuple[Path, list[dict[str, Any]]]) -> None:
    _, results = two_rank_save
    for rank, checks in enumerate(results):
        assert checks["device"] == "cpu"
        assert checks["agree_all"] is True
        assert checks["agree_one_false"] is False
        assert checks["max"] == 6
        assert checks["broadcast_from_1"] == {"from": 1}
        assert checks["gathered"] == [0, 10]
        assert checks["gather_to_0"] == ([0, 1] if rank == 0 else None)


def test_sharded_tensors_objects_and_commons_restored_bit_exact(
    two_rank_save: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, results = two_rank_save
    for rank, checks in enumerate(results):
        assert checks["weight"], f"rank {rank}: row shard differs"
        assert checks["scale"], f"rank {rank}: replicated tensor differs"
        assert checks["rng_state"] == {"seed": 100 + rank}
        assert checks["commons"] == {
            "checkpoint_version": 3.0,
            "iteration": states.ITERATION,
            "opt_param_scheduler": {"max_lr": 0.1, "num_steps": states.ITERATION},
        }


def test_plain_torch_model_and_adam_state_round_trip(
    two_rank_save: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, results = two_rank_save
    for checks in results:
        assert checks["plain_differs_before_load"]
        assert checks["model_params"]
        assert checks["optim_state"]


def test_dtensor_shards_round_trip(two_rank_save: tuple[Path, list[dict[str, Any]]]) -> None:
    _, results = two_rank_save
    for checks in results:
        assert checks["dtensors"] == {"even": True, "uneven": True, "repl": True}


def test_directory_is_megatron_torch_dist_layout_and_published(
    two_rank_save: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, results = two_rank_save
    final = layout.iteration_dir(root, states.ITERATION)
    assert {Path(r["final"]) for r in results} == {final}
    assert sorted(p.name for p in final.iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "cairn.manifest.json",
        "common.pt",
        "metadata.json",
        "train_state.pt",
    ]
    assert json.loads((final / layout.METADATA_JSON).read_text()) == layout.TORCH_DIST_METADATA
    manifest = verify_checkpoint_dir(final, deep=True)
    assert manifest is not None and manifest.world_size == 2 and manifest.layout == {"dp": 2}
    tracker = read_tracker(root)
    assert tracker is not None and tracker.iteration == states.ITERATION
    assert (root / "latest_train_state.pt").read_bytes() == b"ts"
    assert not [p for p in root.iterdir() if p.name.startswith(".cairn-staging")]


def _load_full_and_resave(rank: int, world_size: int, src: str, dst: str) -> dict[str, Any]:
    """One rank reads the whole 2-rank checkpoint, then saves its own 1-rank checkpoint."""
    import torch
    from cairn_agent.engine.load import load_checkpoint_dir
    from cairn_agent.engine.save import SaveTarget, save_sync
    from megatron.core.dist_checkpointing import ShardedObject, ShardedTensor

    full = states.global_weight(2)
    template = {
        "weight": ShardedTensor.from_rank_offsets("layer.weight", torch.zeros_like(full)),
        "rng": [ShardedObject("rng_state", None, (2,), (r,)) for r in range(2)],
        "even": ShardedTensor.from_rank_offsets("dt.even", torch.zeros(6, 4)),
        "uneven": ShardedTensor.from_rank_offsets("dt.uneven", torch.zeros(5, 4)),
    }
    src_dir = layout.iteration_dir(src, states.ITERATION)
    loaded = load_checkpoint_dir(template, src_dir)
    checks = {
        "full_weight": torch.equal(loaded["weight"], full),
        "rng": loaded["rng"],
        "even": torch.equal(loaded["even"], states.dtensor_full(6)),
        "uneven": torch.equal(loaded["uneven"], states.dtensor_full(5)),
    }
    one_rank = {
        "weight": ShardedTensor.from_rank_offsets("layer.weight", full.clone()),
        "iteration": 8,
    }
    save_sync(one_rank, SaveTarget(root=Path(dst), iteration=8))
    return checks


def _load_slices(rank: int, world_size: int, src: str) -> bool:
    import torch
    from cairn_agent.engine.load import load_checkpoint_dir

    template = {
        k: v for k, v in states.mcore_state(rank, world_size, empty=True).items() if k == "weight"
    }
    loaded = load_checkpoint_dir(template, layout.iteration_dir(src, 8))
    rows = slice(rank * states.ROWS_PER_RANK, (rank + 1) * states.ROWS_PER_RANK)
    return (
        bool(torch.equal(loaded["weight"], states.global_weight(2)[rows]))
        and loaded["iteration"] == 8
    )


def test_resharding_two_ranks_to_one_and_one_to_two(
    two_rank_save: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, _ = two_rank_save
    one_rank_root = tmp_path / "one-rank"
    [checks] = run_ranks(_load_full_and_resave, 1, str(root), str(one_rank_root))
    assert checks["full_weight"], "2-rank row shards were not reassembled into the full tensor"
    assert checks["rng"] == [{"seed": 100}, {"seed": 101}]
    assert checks["even"] and checks["uneven"], "DTensor shards were not reassembled"
    assert run_ranks(_load_slices, 2, str(one_rank_root)) == [True, True]
