"""A one-rank training job on the device that checkpoints through the seed API.

Used by the RNG and local-checkpoint checks: ``cairn_agent.checkpointing``'s
``save_checkpoint`` / ``load_checkpoint`` / ``maybe_finalize_async_save`` with a
``GlobalState``, as a Megatron-Bridge training loop calls them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gpu._common import device


class Job:
    """Model, optimizer and ``GlobalState`` of a one-rank run on the device."""

    def __init__(self, root: Path, init_seed: int, **checkpoint: Any) -> None:
        """``checkpoint``: extra ``CheckpointConfig`` fields (``save``/``load`` are ``root``)."""
        from cairn_agent.config import CheckpointConfig, ConfigContainer
        from cairn_agent.state.train import GlobalState

        torch.manual_seed(init_seed)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)
        ).to(device())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.01)
        config = CheckpointConfig(save=str(root), load=str(root), **checkpoint)
        self.state = GlobalState(ConfigContainer(checkpoint=config))

    def step(self) -> None:
        """One optimizer step on noise drawn from the device's generator."""
        x = torch.randn(8, 16, device=device())
        loss = (self.model(x) ** 2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.state.train_state.step += 1

    def save(self, **kwargs: Any) -> None:
        """``save_checkpoint`` of the current step; an async save is committed before return."""
        from cairn_agent import checkpointing

        checkpointing.save_checkpoint(self.state, [self.model], self.optimizer, None, 0.0, **kwargs)
        checkpointing.maybe_finalize_async_save(
            self.state, self.state.cfg.checkpoint, blocking=True
        )

    def load(self, **kwargs: Any) -> int:
        """``load_checkpoint``; returns the iteration resumed from (0: nothing loaded)."""
        from cairn_agent import checkpointing

        iteration, _ = checkpointing.load_checkpoint(
            self.state, [self.model], self.optimizer, None, **kwargs
        )
        return iteration

    def close(self) -> None:
        """Stop the async worker (every save was already committed by ``save``)."""
        from cairn_agent import checkpointing

        checkpointing.maybe_finalize_async_save(
            self.state, self.state.cfg.checkpoint, blocking=True, terminate=True
        )

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}
