"""Check 1: the engine round trip with tensors on the group's device, bit-exact.

A sync save (``engine.save.save_sync``) and two async saves through one ``AsyncSaveQueue``
(the second reuses the staging arena), each loaded back by ``engine.load`` into zeroed
templates on the same device. On CUDA the async saves stage through the arena's pinned
(``cudaHostRegister``ed) pages; the check asks CUDA whether the arena really is pinned.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import torch

from gpu._common import Verdict, device, devices_of, on_gpu, randn, same_tensors

SHAPES = {"w": (512, 1024), "b": (1024,), "emb": (2048, 256)}


def tensors(step: int) -> dict[str, torch.Tensor]:
    """Seeded tensors of ``step`` on the device: three fp32 ones and a bf16 one."""
    out = {name: randn(shape, 100 * step + i) for i, (name, shape) in enumerate(SHAPES.items())}
    out["half"] = randn((333, 77), 100 * step + 9, torch.bfloat16)
    return out


def sharded(values: dict[str, torch.Tensor], step: int) -> dict[str, Any]:
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor

    state: dict[str, Any] = {
        k: ShardedTensor.from_rank_offsets(f"t.{k}", v) for k, v in values.items()
    }
    state["obj"] = ShardedObject("obj", {"step": step}, (1,), (0,))
    state["iteration"] = step
    return state


def load_back(directory: Path) -> tuple[dict[str, torch.Tensor], Any, Any]:
    from cairn_agent.engine.load import load_checkpoint_dir

    template = sharded({k: torch.zeros_like(v) for k, v in tensors(0).items()}, -1)
    template["obj"].data = None
    loaded = load_checkpoint_dir(template, directory)
    return {k: loaded[k] for k in tensors(0)}, loaded["obj"], loaded["iteration"]


def _round_trip_ok(verdict: Verdict, name: str, directory: Path, step: int) -> None:
    values, obj, iteration = load_back(directory)
    verdict.check(f"{name}: tensors bit-exact", same_tensors(tensors(step), values))
    verdict.check(f"{name}: loaded onto {device()}", devices_of(values) == [str(device())])
    verdict.check(f"{name}: object and common value", obj == {"step": step} and iteration == step)


def _sync(verdict: Verdict, root: Path) -> None:
    from cairn_agent.engine.save import SaveTarget, save_sync

    final = save_sync(sharded(tensors(1), 1), SaveTarget(root=root, iteration=1), thread_count=2)
    _round_trip_ok(verdict, "sync save", final, 1)


def _is_pinned(address: int, nbytes: int) -> bool:
    """Whether CUDA sees host memory at ``address`` as page-locked (registered or pinned)."""
    view = (ctypes.c_char * nbytes).from_address(address)
    return bool(torch.frombuffer(view, dtype=torch.uint8).is_pinned())


def _async(verdict: Verdict, root: Path) -> None:
    from cairn_agent.async_save import AsyncRequest, AsyncSaveQueue
    from cairn_agent.engine.save import SaveTarget
    from cairn_agent.storage import layout

    queue = AsyncSaveQueue()
    try:
        for step in (2, 3):
            request = AsyncRequest(
                sharded_state_dict=sharded(tensors(step), step),
                target=SaveTarget(root=root, iteration=step),
                thread_count=2,
            )
            queue.schedule(request)
            if step == 2 and on_gpu():
                stats = queue.stats()
                verdict.check("async: staging arena is pinned", _is_pinned(stats.arena_data_ptr, 1))
            verdict.check(f"async save {step}: committed", queue.maybe_finalize(True) == [step])
        stats = queue.stats()
        verdict.figures["async_arenas_created"] = stats.arenas_created
        verdict.check("async: arena reused by the second save", stats.arenas_created == 1)
    finally:
        queue.close()
    for step in (2, 3):
        _round_trip_ok(verdict, f"async save {step}", layout.iteration_dir(root, step), step)


def run(verdict: Verdict, scratch: Path) -> None:
    verdict.figures["device"] = str(device())
    verdict.figures["state_bytes"] = sum(t.nbytes for t in tensors(0).values())
    _sync(verdict, scratch / "ckpt")
    _async(verdict, scratch / "ckpt")
    if not on_gpu():
        verdict.skip(
            "pinned staging and device-to-host copies",
            "no CUDA: tensors are host tensors, so the arena is never page-locked",
        )
