"""Rank bodies: save a model, then load the checkpoint into a model whose shapes differ."""

from __future__ import annotations

import torch
from cairn_agent import checkpointing
from cairn_agent.config import CheckpointConfig, ConfigContainer
from cairn_agent.state.train import GlobalState


def _model(hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 2)
    )


def save_then_load_wider(rank: int, world: int, root: str) -> str:
    """Save at steps 1 and 2 with hidden=8; load into hidden=16. Returns the error raised."""
    cfg = ConfigContainer(checkpoint=CheckpointConfig(save=root, load=root))
    state = GlobalState(cfg)
    model = _model(8)
    for step in (1, 2):
        state.train_state.step = step
        checkpointing.save_checkpoint(state, [model], None, None, 0.0)
    wider = GlobalState(ConfigContainer(checkpoint=CheckpointConfig(save=root, load=root)))
    try:
        checkpointing.load_checkpoint(wider, [_model(16)], None, None)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return f"{type(exc).__name__}: {exc} | skipped={wider.skipped_checkpoints}"
    return "no error"
