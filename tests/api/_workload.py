"""A tiny data-parallel training job for the seed-API tests (imported by spawned ranks).

Plain torch: a two-layer MLP, Adam, a LambdaLR schedule, a resumable data iterator, and
gradients averaged over ranks by hand so every rank holds the same replica. Each step draws
from torch's RNG (input noise), so resuming bit-identically needs the RNG state restored too.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from cairn_agent.config import CheckpointConfig, ConfigContainer, RngConfig
from cairn_agent.state.train import GlobalState

BATCH = 4
FLOPS_PER_STEP = 100.0


class ResumableData:
    """Deterministic batches per (rank, position); remembers its position."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.pos = 0

    def __iter__(self) -> ResumableData:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(1000 * self.rank + self.pos)
        self.pos += 1
        return torch.randn(BATCH, 4, generator=gen), torch.randn(BATCH, 2, generator=gen)

    def save_state(self) -> dict[str, int]:
        return {"pos": self.pos}

    def restore_state(self, state: dict[str, int]) -> None:
        self.pos = state["pos"]


class Job:
    """Model, optimizer, scheduler, data and GlobalState of one rank."""

    def __init__(self, rank: int, init_seed: int, **ckpt: Any) -> None:
        torch.manual_seed(init_seed)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.01)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0 / (1 + s))
        self.data = ResumableData(rank)
        cfg = ConfigContainer(
            checkpoint=CheckpointConfig(**ckpt), rng=RngConfig(data_parallel_random_init=True)
        )
        self.state = GlobalState(cfg)
        self.flops = 0.0

    def step(self) -> None:
        x, y = next(self.data)
        x = x + 0.01 * torch.rand_like(x)
        loss = ((self.model(x) - y) ** 2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        world = dist.get_world_size()
        for p in self.model.parameters():
            if not p.requires_grad:
                continue  # frozen (e.g. base weights under PEFT)
            assert p.grad is not None
            dist.all_reduce(p.grad)
            p.grad /= world
        self.optimizer.step()
        self.scheduler.step()
        ts = self.state.train_state
        ts.step += 1
        ts.consumed_train_samples += BATCH * world
        self.flops += FLOPS_PER_STEP
        ts.floating_point_operations_so_far = self.flops

    def save(self, **kwargs: Any) -> None:
        from cairn_agent import checkpointing

        checkpointing.save_checkpoint(
            self.state,
            [self.model],
            self.optimizer,
            self.scheduler,
            self.flops,
            train_data_iterator=self.data,
            **kwargs,
        )

    def load(self, **kwargs: Any) -> tuple[int, float]:
        from cairn_agent import checkpointing

        iteration, flops = checkpointing.load_checkpoint(
            self.state,
            [self.model],
            self.optimizer,
            self.scheduler,
            train_data_iterator=self.data,
            **kwargs,
        )
        self.flops = flops
        return iteration, flops

    def params(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def peek_random() -> tuple[list[float], float, float]:
    """The next draws of torch, python and numpy RNGs, without consuming them."""
    saved = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    draws = (torch.rand(3).tolist(), random.random(), float(np.random.rand()))
    torch.set_rng_state(saved[0])
    random.setstate(saved[1])
    np.random.set_state(saved[2])
    return draws
