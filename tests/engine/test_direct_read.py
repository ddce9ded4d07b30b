"""Loads read whole plain tensors straight into their destinations (``engine.direct_read``),
and everything else through DCP's own path, bit-exactly either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.distributed import run_ranks

SHAPES: dict[str, tuple[tuple[int, ...], str]] = {
    "fp32": ((64, 33), "float32"),
    "bf16": ((17, 8), "bfloat16"),
    "int64": ((5,), "int64"),
    "scalar": ((), "float32"),
}


def _state(fill: bool) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(7)
    out: dict[str, Any] = {}
    for name, (shape, dtype) in SHAPES.items():
        full = (torch.rand(shape, generator=gen) * 1000).to(getattr(torch, dtype))
        out[name] = full if fill else torch.zeros_like(full)
    base = torch.rand(8, 6, generator=gen)
    out["transposed"] = base.t() if fill else torch.zeros(6, 8)  # a view of a larger storage
    out["narrow"] = base[2:5] if fill else torch.zeros(3, 6)
    return out


def _sharded(state: dict[str, Any]) -> dict[str, Any]:
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    return {k: ShardedTensor.from_rank_offsets(k, v) for k, v in state.items()}


def _save_load(rank: int, world_size: int, root: str) -> dict[str, Any]:
    import torch
    from cairn_agent.engine import direct_read
    from cairn_agent.engine.load import load_checkpoint_dir
    from cairn_agent.engine.save import SaveTarget, save_sync

    saved = _state(fill=True)
    final = save_sync(_sharded(saved), SaveTarget(root=Path(root), iteration=1))
    in_place: list[str] = []
    original = direct_read.DirectFileSystemReader._place

    def spy(self: Any, raw: Any, item: Any, planner: Any) -> Any:
        placed = original(self, raw, item, planner)
        if placed is not None:
            in_place.append(item.storage_index.fqn)
        return placed

    direct_read.DirectFileSystemReader._place = spy  # type: ignore[method-assign]
    # Small requests, so that a tensor's bytes arrive in several pieces over several threads.
    direct_read.READ_REQUEST_BYTES = 1024
    template = _state(fill=False)
    loaded = load_checkpoint_dir(_sharded(template), final)
    return {
        "equal": {k: torch.equal(loaded[k], saved[k]) for k in saved},
        "dtypes": {k: loaded[k].dtype == saved[k].dtype for k in saved},
        "into_template": all(loaded[k].data_ptr() == template[k].data_ptr() for k in SHAPES),
        "in_place": sorted(in_place),
    }


def test_every_kind_of_tensor_loads_bit_exact(tmp_path: Path) -> None:
    (result,) = run_ranks(_save_load, 1, str(tmp_path))
    assert all(result["equal"].values()), result["equal"]
    assert all(result["dtypes"].values())
    assert result["into_template"]
    assert set(SHAPES) <= set(result["in_place"])


def _record(tmp_path: Path, saved: Any, target: Any) -> tuple[int, int] | None:
    import io

    import torch
    from cairn_agent.engine.direct_read import _storage_record, _Window

    path = tmp_path / "blob"
    with open(path, "wb") as handle:
        handle.write(b"x" * 100)  # the blob sits at an offset inside a shard file
        blob = io.BytesIO()
        torch.save(saved, blob)
        handle.write(blob.getvalue())
    with open(path, "rb", buffering=0) as raw:
        return _storage_record(_Window(raw, 100, len(blob.getvalue())), target)


def test_only_a_whole_plain_tensor_of_the_same_layout_is_read_in_place(tmp_path: Path) -> None:
    import torch

    base = torch.arange(48, dtype=torch.float32).reshape(8, 6)
    offset, nbytes = _record(tmp_path, base, torch.empty(8, 6)) or (0, 0)
    assert nbytes == 48 * 4
    data = (tmp_path / "blob").read_bytes()[100 + offset : 100 + offset + nbytes]
    assert torch.equal(torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(8, 6), base)
    # torch.save keeps a view's whole storage, and a transposed tensor's strides: neither is
    # the destination's bytes in order.
    assert _record(tmp_path, base[2:5], torch.empty(3, 6)) is None
    assert _record(tmp_path, base.t(), torch.empty(6, 8)) is None
    assert _record(tmp_path, base, torch.empty(8, 6, dtype=torch.float64)) is None
    assert _record(tmp_path, base, torch.empty(6, 8)) is None
    assert _record(tmp_path, {"not": "a tensor"}, torch.empty(8, 6)) is None
