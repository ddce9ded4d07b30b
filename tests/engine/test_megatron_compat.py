"""Compatibility with megatron-core 0.16.1, both ways, on a real GPTModel.

- Our ``save_sync`` of a GPTModel's sharded state dict loads (with our loader) into a model
  built from a different seed and gives identical parameters.
- megatron-core's own ``dist_checkpointing.load`` reads that checkpoint (model tensors and
  ``ShardedObject``s).
- Our loader reads a checkpoint written by megatron-core's own ``dist_checkpointing.save``
  with the ``torch_dist`` strategy, and the two directories have the same files and DCP keys.

How the megatron-written fixture is made, honestly: megatron-core 0.16.1's save path calls
CUDA unconditionally (spec §4: ``torch.cuda.synchronize()`` in
``FileSystemWriterAsync.preload_tensors`` and ``torch.cuda.current_device()`` for the failure
flag in ``save_state_dict_async_finalize``), so it cannot run on this CPU-only machine as is.
The fixture-writer ranks (and only they, in their own spawned processes) replace exactly
those two ``torch.cuda`` functions with CPU equivalents (no-op synchronise, ``"cpu"`` as the
device) for the duration of the save. Nothing of Cairn is patched, and the processes that run
Cairn's save and load, and megatron-core's load, are separate and unpatched.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cairn_agent.storage import layout

from tests.distributed import run_ranks
from tests.engine import states

OURS_ITERATION = 5
THEIRS_ITERATION = 42


def _write_with_megatron(rank: int, world_size: int, directory: str) -> None:
    from unittest import mock

    import torch
    from megatron.core import dist_checkpointing, parallel_state

    parallel_state.initialize_model_parallel(1, 1)
    model = states.tiny_gpt(seed=3)
    state = states.bridge_like_state(model, rank, world_size, seed=300, iteration=THEIRS_ITERATION)
    Path(directory).mkdir(parents=True, exist_ok=True)
    with (
        mock.patch.object(torch.cuda, "synchronize", lambda *args, **kwargs: None),
        mock.patch.object(torch.cuda, "current_device", lambda: "cpu"),
    ):
        dist_checkpointing.save(state, directory, sharded_strategy=("torch_dist", 1))
    parallel_state.destroy_model_parallel()


def _ours_and_theirs(rank: int, world_size: int, root: str, theirs: str) -> dict[str, Any]:
    from cairn_agent.engine.load import load_checkpoint_dir
    from cairn_agent.engine.save import SaveTarget, save_sync
    from megatron.core import dist_checkpointing, parallel_state

    parallel_state.initialize_model_parallel(1, 1)
    model = states.tiny_gpt(seed=1)
    saved = states.bridge_like_state(model, rank, world_size, seed=100, iteration=OURS_ITERATION)
    # thread_count=2 is megatron-core's default: two shard files per rank, like theirs.
    final = save_sync(saved, SaveTarget(root=Path(root), iteration=OURS_ITERATION), thread_count=2)

    def template(seed: int) -> tuple[Any, dict[str, Any]]:
        fresh = states.tiny_gpt(seed=seed)
        return fresh, states.bridge_like_state(fresh, rank, world_size, seed=0, iteration=-1)

    ours_model, ours_template = template(seed=2)
    checks: dict[str, Any] = {"differs_before_load": not states.same_parameters(model, ours_model)}
    loaded = load_checkpoint_dir(ours_template, final)
    ours_model.load_state_dict(loaded["model"])
    checks["ours_by_ours"] = (
        states.same_parameters(model, ours_model),
        loaded["rng_state"],
        loaded["iteration"],
    )

    mcore_model, mcore_template = template(seed=4)
    loaded = dist_checkpointing.load(mcore_template, str(final))
    mcore_model.load_state_dict(loaded["model"])
    checks["ours_by_megatron"] = (
        states.same_parameters(model, mcore_model),
        loaded["rng_state"],
        loaded["iteration"],
    )

    their_model, their_template = template(seed=5)
    loaded = load_checkpoint_dir(their_template, Path(theirs))
    their_model.load_state_dict(loaded["model"])
    reference = states.tiny_gpt(seed=3)
    checks["theirs_by_ours"] = (
        states.same_parameters(reference, their_model),
        loaded["rng_state"],
        loaded["iteration"],
    )
    parallel_state.destroy_model_parallel()
    return checks


def _shard_ranks(directory: Path) -> set[int]:
    names = [p.name for p in directory.iterdir() if p.name.endswith(layout.DISTCP_SUFFIX)]
    assert all(re.fullmatch(r"__\d+_\d+\.distcp", name) for name in names), names
    return {int(name.split("_")[2]) for name in names}


def _other_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if not p.name.endswith(layout.DISTCP_SUFFIX)}


@pytest.fixture(scope="module")
def compat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    base = tmp_path_factory.mktemp("compat")
    theirs = base / "megatron" / "iter_0000042"
    run_ranks(_write_with_megatron, 2, str(theirs))
    ours_root = base / "cairn"
    results = run_ranks(_ours_and_theirs, 2, str(ours_root), str(theirs))
    return layout.iteration_dir(ours_root, OURS_ITERATION), theirs, results


def test_gpt_model_round_trip_into_differently_seeded_model(
    compat: tuple[Path, Path, list[dict[str, Any]]],
) -> None:
    _, _, results = compat
    for rank, checks in enumerate(results):
        assert checks["differs_before_load"], (
            "the two seeds gave the same weights; the test proves nothing"
        )
        assert checks["ours_by_ours"] == (True, {"seed": 100 + rank}, OURS_ITERATION)


def test_megatron_core_loads_our_checkpoint(
    compat: tuple[Path, Path, list[dict[str, Any]]],
) -> None:
    _, _, results = compat
    for rank, checks in enumerate(results):
        assert checks["ours_by_megatron"] == (True, {"seed": 100 + rank}, OURS_ITERATION)


def test_we_load_megatron_core_checkpoint(compat: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    _, _, results = compat
    for rank, checks in enumerate(results):
        assert checks["theirs_by_ours"] == (True, {"seed": 300 + rank}, THEIRS_ITERATION)


def test_same_files_metadata_and_dcp_keys_as_megatron_core(
    compat: tuple[Path, Path, list[dict[str, Any]]],
) -> None:
    from torch.distributed.checkpoint import FileSystemReader

    ours, theirs, _ = compat
    # Shard files: same naming scheme and ranks; how many per rank depends on the writer's
    # bucketing (torch's writer also leaves an empty bucket file), which no loader cares about.
    assert _shard_ranks(ours) == _shard_ranks(theirs) == {0, 1}
    assert _other_files(ours) == _other_files(theirs) | {layout.MANIFEST_FILENAME}
    assert json.loads((ours / layout.METADATA_JSON).read_text()) == json.loads(
        (theirs / layout.METADATA_JSON).read_text()
    )
    ours_md = FileSystemReader(str(ours)).read_metadata().state_dict_metadata
    theirs_md = FileSystemReader(str(theirs)).read_metadata().state_dict_metadata
    assert ours_md.keys() == theirs_md.keys()
    assert {k: type(v).__name__ for k, v in ours_md.items()} == {
        k: type(v).__name__ for k, v in theirs_md.items()
    }
