"""Adapter-only (PEFT) checkpoints: keep only adapter weights in the model sections.

A fine-tuning run with adapters (LoRA, ...) saves the full checkpoint layout (iteration,
optimizer, scheduler, RNG, ...) but only the adapter parameters of the model; the frozen base
weights come from the pretrained checkpoint at load time. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

EXTRA_STATE_MARKER = "_extra_state"
"""Transformer Engine's per-module extra state; never part of an adapter-only checkpoint."""

_MODEL_SECTION = "model"


@runtime_checkable
class PeftConfig(Protocol):
    """What checkpointing needs from a PEFT method: which state-dict keys are adapter weights."""

    def adapter_key_filter(self, key: str) -> bool:
        """True when ``key`` (a model state-dict key) names an adapter parameter."""
        ...


@dataclass(frozen=True, kw_only=True)
class LoRAAdapterFilter:
    """A ``PeftConfig`` that recognises adapter keys by substrings of their names."""

    patterns: tuple[str, ...] = (".adapter.", "lora_")
    """A key is an adapter key when it contains any of these substrings or ends in ``.adapters``."""

    def __post_init__(self) -> None:
        if not self.patterns:
            raise ValueError("LoRAAdapterFilter.patterns is empty; give at least one substring")
        if any(not isinstance(p, str) or not p for p in self.patterns):
            raise ValueError(
                f"LoRAAdapterFilter.patterns must be non-empty strings, got {self.patterns!r}"
            )

    def adapter_key_filter(self, key: str) -> bool:
        return key.endswith(".adapters") or any(p in key for p in self.patterns)


def _is_model_section(section_key: str) -> bool:
    """True for ``model`` and ``model0``, ``model1``, ... (one per virtual pipeline chunk)."""
    if section_key == _MODEL_SECTION:
        return True
    suffix = section_key[len(_MODEL_SECTION) :]
    return section_key.startswith(_MODEL_SECTION) and suffix.isdigit()


def _adapter_only(section: Mapping[str, Any], peft_config: PeftConfig) -> dict[str, Any]:
    return {
        key: value
        for key, value in section.items()
        if EXTRA_STATE_MARKER not in key and peft_config.adapter_key_filter(key)
    }


def apply_peft_adapter_filter_to_state_dict(
    state_dict: dict[str, Any], peft_config: PeftConfig
) -> dict[str, Any]:
    """A copy of ``state_dict`` whose model sections hold only adapter parameters.

    Every non-model section (``checkpoint_version``, ``iteration``, ``optimizer``,
    ``rng_state``, ...) is kept as is (same objects). The input is not modified.
    """
    return {
        key: _adapter_only(value, peft_config) if _is_model_section(key) else value
        for key, value in state_dict.items()
    }
