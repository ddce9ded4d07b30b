"""Check 3: RNG state saved and restored through the seed API gives the same random numbers.

A tiny training job on the device (each step draws noise from the device's generator) saves
with ``save_checkpoint`` (async: on a GPU the async save stages CUDA tensors) and records the
random numbers it draws next and the weights two steps later. Every generator is then
reseeded, a fresh model, optimizer and ``GlobalState`` resume with ``load_checkpoint``, and
they must draw the same numbers and reach the same weights.

On CUDA the draws include the CUDA default generator and megatron-core's tensor-parallel RNG
tracker (seeded with ``model_parallel_cuda_manual_seed``); without CUDA, python, numpy and
torch's CPU generator only.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpu._common import Verdict, device, on_gpu
from gpu._job import Job

SAVE_AT = 2


def draws() -> dict[str, Any]:
    """The next numbers of every generator a training step can touch."""
    out: dict[str, Any] = {
        "python": random.random(),
        "numpy": float(np.random.rand()),
        "torch_cpu": torch.rand(4).tolist(),
    }
    if on_gpu():
        from megatron.core import tensor_parallel

        out["cuda"] = torch.rand(4, device=device()).tolist()
        with tensor_parallel.get_cuda_rng_tracker().fork():
            out["tracker"] = torch.rand(4, device=device()).tolist()
    return out


def reseed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also every CUDA device's default generator
    if on_gpu():
        from megatron.core import tensor_parallel

        tensor_parallel.model_parallel_cuda_manual_seed(seed, force_reset_rng=True)


def run(verdict: Verdict, scratch: Path) -> None:
    from megatron.core import parallel_state

    parallel_state.initialize_model_parallel(1, 1)
    try:
        _run(verdict, scratch / "ckpt")
    finally:
        parallel_state.destroy_model_parallel()


def _run(verdict: Verdict, root: Path) -> None:
    reseed(1234)
    job = Job(root, init_seed=0, async_save=True)
    for _ in range(SAVE_AT):
        job.step()
    job.save()
    expected_draws = draws()
    for _ in range(2):
        job.step()
    expected_weights = job.weights()
    job.close()

    reseed(999)  # a restarted process would start from its own seeds
    fresh = Job(root, init_seed=7, async_save=True)
    verdict.check("resumed at the saved iteration", fresh.load() == SAVE_AT)
    got = draws()
    verdict.figures["generators"] = sorted(got)
    verdict.check("same random numbers after resume", got == expected_draws)
    for _ in range(2):
        fresh.step()
    same = all(torch.equal(v, fresh.weights()[k]) for k, v in expected_weights.items())
    fresh.close()
    verdict.check("same weights two steps after resume", same)
    if not on_gpu():
        verdict.skip(
            "CUDA generator and tensor-parallel RNG tracker",
            "no CUDA: only python, numpy and torch CPU generators exist",
        )
