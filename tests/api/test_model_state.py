"""In-process checks of the state-dict building blocks (no process group needed)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from cairn_agent.checkpointing import _load_model_state_dict, generate_state_dict
from cairn_agent.config import CheckpointConfig
from cairn_agent.state import optimizer as optim_state
from megatron.core.dist_checkpointing.mapping import ShardedTensor


class _WithExtraState(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self.extra: Any = None

    def get_extra_state(self) -> Any:
        return self.extra

    def set_extra_state(self, state: Any) -> None:
        self.extra = state


def _materialize(section: Any) -> Any:
    """What a load returns: every ShardedTensor replaced by its data."""
    if isinstance(section, ShardedTensor):
        return section.data.clone()
    if isinstance(section, dict):
        return {k: _materialize(v) for k, v in section.items()}
    return section


def test_strict_weight_load_tolerates_only_missing_extra_state() -> None:
    module = _WithExtraState()
    weights = {k: v for k, v in module.state_dict().items() if "_extra_state" not in k}
    _load_model_state_dict(module, weights, strict=True)  # Transformer Engine compat
    del weights["linear.bias"]
    with pytest.raises(RuntimeError, match="linear.bias"):
        _load_model_state_dict(module, weights, strict=True)
    _load_model_state_dict(module, weights, strict=False)


def test_torch_optimizer_state_is_keyed_by_parameter_name_and_round_trips() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    section = generate_state_dict(CheckpointConfig(), [model], optimizer, None, None)["optimizer"]
    assert section["param_groups"][0]["params"] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    sharded = section["state"]["0.weight.exp_avg"]
    assert isinstance(sharded, ShardedTensor) and sharded.key == "optimizer.state.0.weight.exp_avg"
    assert torch.is_tensor(section["state_scalars"]["0.weight"]["step"])  # 0-d: common.pt

    # A fresh optimizer has no state: the template comes from the saved layout alone.
    fresh = torch.optim.Adam(model.parameters(), lr=0.5)
    template = optim_state.load_template(section)
    assert template["state"].keys() == section["state"].keys()
    loaded = {**template, "state": _materialize(section["state"])}
    optim_state.load_named_state_dict([model], fresh, loaded)
    for p in model.parameters():
        assert torch.equal(fresh.state[p]["exp_avg"], optimizer.state[p]["exp_avg"])
        assert torch.equal(fresh.state[p]["step"], optimizer.state[p]["step"])
    assert fresh.param_groups[0]["lr"] == 0.1


def test_optimizer_state_of_an_unknown_parameter_is_refused() -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(1, 2)).sum().backward()
    optimizer.step()
    section = _materialize(optim_state.named_state_dict([model], optimizer))
    other = torch.nn.Sequential(torch.nn.Linear(2, 2))  # parameter names "0.weight", "0.bias"
    with pytest.raises(RuntimeError, match="load_optim=False"):
        optim_state.load_named_state_dict([other], torch.optim.Adam(other.parameters()), section)
