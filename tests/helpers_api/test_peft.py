"""Adapter-only state dicts keep adapter weights in model sections and everything else intact."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from cairn_agent.state.peft import (
    LoRAAdapterFilter,
    PeftConfig,
    _is_model_section,
    apply_peft_adapter_filter_to_state_dict,
)


def _full_state_dict() -> dict[str, Any]:
    def layer(i: int) -> dict[str, Any]:
        return {
            f"decoder.layers.{i}.linear_qkv.weight": torch.ones(2),
            f"decoder.layers.{i}.linear_qkv.adapter.linear_in.weight": torch.ones(1),
            f"decoder.layers.{i}.linear_qkv.adapter.linear_out.weight": torch.ones(1),
            f"decoder.layers.{i}.linear_qkv.adapter._extra_state": b"te",
            f"decoder.layers.{i}.linear_qkv._extra_state": b"te",
        }

    return {
        "checkpoint_version": 3.0,
        "iteration": 7,
        "model0": layer(0),
        "model1": layer(1),
        "optimizer": {"param_groups": [{"lr": 0.1}], "state": {"decoder.weight": 1}},
        "opt_param_scheduler": {"num_steps": 7},
        "rng_state": ["rng"],
        "modelopt_state": {"decoder.layers.0.linear_qkv.weight": 1},
    }


def test_adapter_filter_keeps_only_adapters_in_model_sections() -> None:
    full = _full_state_dict()
    filtered = apply_peft_adapter_filter_to_state_dict(full, LoRAAdapterFilter())
    for section, layer in (("model0", 0), ("model1", 1)):
        assert sorted(filtered[section]) == [
            f"decoder.layers.{layer}.linear_qkv.adapter.linear_in.weight",
            f"decoder.layers.{layer}.linear_qkv.adapter.linear_out.weight",
        ]
    for section in (
        "checkpoint_version",
        "iteration",
        "optimizer",
        "opt_param_scheduler",
        "rng_state",
        "modelopt_state",
    ):
        assert filtered[section] is full[section]
    assert len(full["model0"]) == 5  # the input is left untouched


def test_filter_uses_any_object_with_adapter_key_filter() -> None:
    class OnlyBias:
        def adapter_key_filter(self, key: str) -> bool:
            return key.endswith("bias")

    assert isinstance(OnlyBias(), PeftConfig)
    state = {"model": {"a.bias": 1, "a.weight": 2, "b._extra_state.bias": 3}, "iteration": 1}
    assert apply_peft_adapter_filter_to_state_dict(state, OnlyBias()) == {
        "model": {"a.bias": 1},
        "iteration": 1,
    }


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("model", True),
        ("model0", True),
        ("model12", True),
        ("models", False),
        ("model_0", False),
        ("modelopt_state", False),
        ("optimizer", False),
        ("mode", False),
    ],
)
def test_model_sections_are_model_and_model_digits(key: str, expected: bool) -> None:
    assert _is_model_section(key) is expected


def test_lora_filter_matches_patterns_and_rejects_empty_config() -> None:
    lora = LoRAAdapterFilter(patterns=("lora_A", "lora_B"))
    assert lora.adapter_key_filter("layers.0.q.lora_A.weight")
    assert lora.adapter_key_filter("layers.0.adapters")
    assert not lora.adapter_key_filter("layers.0.q.weight")
    with pytest.raises(ValueError, match="at least one"):
        LoRAAdapterFilter(patterns=())
    with pytest.raises(ValueError, match="non-empty"):
        LoRAAdapterFilter(patterns=("",))
