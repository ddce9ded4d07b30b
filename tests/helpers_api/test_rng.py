"""RNG state: what get_rng_state saves restores the exact random streams, on 2 gloo ranks."""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
import pytest
import torch

from tests.distributed import run_ranks


def _draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def _through_bytes(obj: Any) -> Any:
    # The ShardedObject's data is torch.save'd into the checkpoint and loaded back.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _round_trip(rank: int, data_parallel_random_init: bool) -> dict[str, Any]:
    from cairn_agent.state.rng import get_rng_state, restore_rng_state

    random.seed(100 + rank)
    np.random.seed(200 + rank)
    torch.manual_seed(300 + rank)
    saved = get_rng_state(data_parallel_random_init)
    expected = _draw()
    _draw()  # training goes on after the save
    restore_rng_state(_through_bytes(saved.data), data_parallel_random_init)
    return {
        "key": saved.key,
        "shape": saved.global_shape,
        "offset": saved.global_offset,
        "replica_id": saved.replica_id,
        "entries": len(saved.data),
        "fields": sorted(saved.data[0]),
        "same_stream": _draw() == expected,
    }


def _tracker_round_trip() -> bool:
    from cairn_agent.state.rng import get_rng_state, restore_rng_state
    from megatron.core import tensor_parallel

    tracker = tensor_parallel.get_cuda_rng_tracker()
    # CPU stand-in for a CUDA generator state: the tracker stores whatever it is given.
    fake = {"model-parallel-rng": torch.arange(16, dtype=torch.uint8)}
    tracker.set_states(fake)
    saved = get_rng_state(False, module_name="decoder")
    tracker.reset()
    restore_rng_state(saved.data, False)
    restored = tracker.get_states()
    return saved.key == "rng_state.decoder" and torch.equal(
        restored["model-parallel-rng"], fake["model-parallel-rng"]
    )


def _refuses_missing_entry(rank: int) -> str:
    from cairn_agent.state.rng import get_rng_state, restore_rng_state

    only_one = get_rng_state(False).data  # as if saved with a smaller data-parallel size
    try:
        restore_rng_state(only_one, True)
    except RuntimeError as exc:
        return str(exc)
    return "restored"


def _body(rank: int, world_size: int) -> dict[str, Any]:
    return {
        "per_rank": _round_trip(rank, True),
        "shared": _round_trip(rank, False),
        "tracker": _tracker_round_trip(),
        "missing_entry": _refuses_missing_entry(rank),
    }


def test_restored_rng_continues_the_saved_streams_on_two_ranks() -> None:
    results = run_ranks(_body, 2)
    for rank, result in enumerate(results):
        for mode, entries in (("per_rank", 2), ("shared", 1)):
            got = result[mode]
            assert got["same_stream"], (rank, mode)
            assert got["key"] == "rng_state"
            assert got["shape"] == (1, 1) and got["offset"] == (0, 0)
            assert got["replica_id"] == rank
            assert got["entries"] == entries
            assert got["fields"] == [
                "np_rng_state",
                "random_rng_state",
                "rng_tracker_states",
                "torch_rng_state",
            ]
        assert result["tracker"]
    assert results[0]["missing_entry"] == "restored"
    assert "data-parallel size grew" in results[1]["missing_entry"]


def test_per_rank_restore_picks_this_ranks_entry_not_the_first() -> None:
    from cairn_agent.state.rng import restore_rng_state

    def state(seed: int) -> dict[str, Any]:
        random.seed(seed)
        return {
            "random_rng_state": random.getstate(),
            "np_rng_state": np.random.get_state(),
            "torch_rng_state": torch.get_rng_state(),
            "rng_tracker_states": {},
        }

    entries = [state(1), state(2)]
    # Without a process group this process is data-parallel rank 0 of 1.
    restore_rng_state(entries, True)
    first = random.random()
    random.seed(1)
    assert first == random.random()
    restore_rng_state(entries[1], True)  # a single dict (flat layout) is used as is
    second = random.random()
    random.seed(2)
    assert second == random.random()


def test_restore_refuses_an_empty_state_list() -> None:
    from cairn_agent.state.rng import restore_rng_state

    with pytest.raises(RuntimeError, match="empty"):
        restore_rng_state([], False)
