"""Dataloader state: per data-parallel rank files that resume the exact sample stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cairn_agent.state.dataloader import maybe_load_dataloader_state, maybe_save_dataloader_state

from tests.distributed import run_ranks


class ResumableSamples:
    """A deterministic per-rank sample stream that can save and restore its position."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.position = 0

    def __iter__(self) -> ResumableSamples:
        return self

    def __next__(self) -> int:
        self.position += 1
        return 1000 * self.rank + self.position

    def save_state(self) -> dict[str, int]:
        return {"position": self.position, "rank": self.rank}

    def restore_state(self, state: dict[str, int]) -> None:
        self.position = state["position"]


class Wrapper:
    """Like Megatron's data-iterator wrappers: the resumable object sits in ``.iterable``."""

    def __init__(self, iterable: ResumableSamples) -> None:
        self.iterable = iterable

    def __next__(self) -> int:
        return next(self.iterable)


def _take(it: Any, n: int) -> list[int]:
    return [next(it) for _ in range(n)]


def _body(rank: int, world_size: int, root: str) -> dict[str, Any]:
    import torch.distributed as dist

    stream = Wrapper(ResumableSamples(rank))
    _take(stream, 3)
    maybe_save_dataloader_state(stream, 10, root)
    expected = _take(stream, 4)
    resumed = Wrapper(ResumableSamples(rank))
    restored = maybe_load_dataloader_state(resumed, 10, root)
    after_resume = _take(resumed, 4)

    fresh = Wrapper(ResumableSamples(rank))
    nothing = maybe_load_dataloader_state(fresh, 99, root)

    maybe_save_dataloader_state(stream, 20, root)
    dist.barrier()
    if rank == 0:  # as if the save at 20 had one data-parallel rank fewer
        (Path(root) / "iter_0000020" / "train_dataloader_dprank001.pt").unlink()
    dist.barrier()
    try:
        maybe_load_dataloader_state(Wrapper(ResumableSamples(rank)), 20, root)
        shrink = "loaded"
    except RuntimeError as exc:
        shrink = str(exc)
    return {
        "restored": restored,
        "same": after_resume == expected,
        "expected": expected,
        "nothing": nothing,
        "fresh_position": fresh.iterable.position,
        "shrink": shrink,
    }


def test_two_ranks_resume_their_own_streams_and_detect_a_changed_dp_size(tmp_path: Path) -> None:
    root = tmp_path / "energon"
    results = run_ranks(_body, 2, str(root))
    names = sorted(p.name for p in (root / "iter_0000010").iterdir())
    assert names == ["train_dataloader_dprank000.pt", "train_dataloader_dprank001.pt"]
    assert [p for p in root.rglob("*") if p.name.startswith(".")] == []  # no temp leftovers
    for rank, result in enumerate(results):
        assert result["restored"] and result["same"], rank
        assert result["expected"][0] == 1000 * rank + 4
        assert result["nothing"] is False and result["fresh_position"] == 0
    assert results[0]["shrink"] == "loaded"
    assert "data-parallel size changed" in results[1]["shrink"]
    assert "rank 1" in results[1]["shrink"]

    # One process (data-parallel size 1) facing files of two ranks: the size shrank.
    with pytest.raises(RuntimeError, match="data-parallel size changed"):
        maybe_load_dataloader_state(ResumableSamples(0), 10, str(root))


def test_nothing_to_do_without_iterator_or_path(tmp_path: Path) -> None:
    maybe_save_dataloader_state(None, 1, str(tmp_path))
    maybe_save_dataloader_state(ResumableSamples(0), 1, None)
    maybe_save_dataloader_state(ResumableSamples(0), 1, "")
    assert list(tmp_path.iterdir()) == []
    assert maybe_load_dataloader_state(ResumableSamples(0), 1, None) is False


def test_single_process_save_and_load_on_the_iterator_itself(tmp_path: Path) -> None:
    stream = ResumableSamples(0)
    _take(stream, 5)
    maybe_save_dataloader_state(stream, 3, str(tmp_path))
    resumed = ResumableSamples(0)
    assert maybe_load_dataloader_state(resumed, 3, str(tmp_path))
    assert resumed.position == 5


def test_iterator_without_save_state_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="save_state"):
        maybe_save_dataloader_state(iter([1, 2]), 1, str(tmp_path))
    with pytest.raises(RuntimeError, match="restore_state"):
        maybe_load_dataloader_state(iter([1, 2]), 1, str(tmp_path))
