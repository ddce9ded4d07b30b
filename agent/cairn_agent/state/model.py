"""Build the checkpoint state dict (save and load template) and put model weights back.

Works with megatron-core modules (``sharded_state_dict()``) and plain ``torch.nn.Module``s
(converted with :func:`~cairn_agent.engine.sharded_dict.to_sharded_state_dict`), and with
megatron-core optimizers or plain ``torch.optim`` ones (see :mod:`cairn_agent.state.optimizer`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cairn_agent.config import CheckpointConfig
from cairn_agent.engine.sharded_dict import to_sharded_state_dict
from cairn_agent.state import optimizer as optim_state
from cairn_agent.state.peft import EXTRA_STATE_MARKER

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 3.0
SAVED_OPTIMIZER_KWARG = "saved_optimizer"
"""``optim_sd_kwargs`` key carrying the ``common.pt`` optimizer section when building a load
template for a plain ``torch.optim`` optimizer (its fresh state may be empty)."""


def as_model_list(model: Any) -> list[Any]:
    """Bridge passes a list of model chunks; a single module is accepted too."""
    return list(model) if isinstance(model, (list, tuple)) else [model]


def model_section_key(index: int, count: int) -> str:
    """``model`` for a single chunk, ``model0``, ``model1``, ... for virtual pipeline chunks."""
    return "model" if count == 1 else f"model{index}"


def _chunk_state_dict(
    chunk: Any, kwargs: Mapping[str, Any], index: int, count: int
) -> dict[str, Any]:
    if hasattr(chunk, "sharded_state_dict"):
        return dict(chunk.sharded_state_dict(**kwargs))
    # Plain modules: chunk keys must not collide in the DCP key space when there are several.
    prefix = "" if count == 1 else f"model{index}."
    return to_sharded_state_dict(chunk.state_dict(), prefix)


def _generate_model_state_dict(
    model: Sequence[Any], model_sd_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The model sections of a checkpoint: ``{"model": ...}`` or ``{"model0": ..., ...}``."""
    chunks = as_model_list(model)
    kwargs = model_sd_kwargs or {}
    return {
        model_section_key(i, len(chunks)): _chunk_state_dict(chunk, kwargs, i, len(chunks))
        for i, chunk in enumerate(chunks)
    }


def _optimizer_section(
    optimizer: Any,
    state_dict: dict[str, Any],
    model: Sequence[Any],
    optim_sd_kwargs: dict[str, Any],
) -> Any:
    kwargs = dict(optim_sd_kwargs)
    saved = kwargs.pop(SAVED_OPTIMIZER_KWARG, None)
    if not optim_state.is_torch_optimizer(optimizer):
        return optimizer.sharded_state_dict(state_dict, **kwargs)
    if kwargs.get("is_loading") and saved is not None:
        return optim_state.load_template(saved)
    return optim_state.named_state_dict(as_model_list(model), optimizer)


def _is_stub(optimizer: Any) -> bool:
    # Bridge's inference setups pass a placeholder optimizer without state.
    return optimizer is None or type(optimizer).__name__ == "_StubOptimizer"


def generate_state_dict(
    ckpt_cfg: CheckpointConfig,
    model: list[Any],
    optimizer: Any | None,
    opt_param_scheduler: Any | None,
    rng_state: Any | None,
    iteration: int | None = None,
    optim_sd_kwargs: dict[str, Any] | None = None,
    model_sd_kwargs: dict[str, Any] | None = None,
    rerun_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint state dict; with ``optim_sd_kwargs["is_loading"]`` the load template.

    Optimizer and scheduler are included when ``save_optim`` is set or when loading (the load
    needs their scaffolding); RNG when ``save_rng`` is set or when loading with an RNG state.
    """
    optim_kwargs = optim_sd_kwargs or {}
    loading = bool(optim_kwargs.get("is_loading", False))
    state_dict: dict[str, Any] = {"checkpoint_version": CHECKPOINT_VERSION}
    if iteration is not None:
        state_dict["iteration"] = iteration
    state_dict.update(_generate_model_state_dict(model, model_sd_kwargs))
    if (ckpt_cfg.save_optim or loading) and not _is_stub(optimizer):
        state_dict["optimizer"] = _optimizer_section(optimizer, state_dict, model, optim_kwargs)
        if opt_param_scheduler is not None:
            state_dict["opt_param_scheduler"] = opt_param_scheduler.state_dict()
    if rerun_state is not None:
        state_dict["rerun_state_machine"] = rerun_state
    if rng_state is not None and (ckpt_cfg.save_rng or loading):
        state_dict["rng_state"] = rng_state
    return state_dict


def _is_extra_state(key: str) -> bool:
    return EXTRA_STATE_MARKER in key


def _load_model_state_dict(
    module: torch.nn.Module, state_dict: dict[str, Any], strict: bool
) -> None:
    """Load weights into ``module``; in strict mode only ``_extra_state`` keys may mismatch.

    Transformer Engine's ``_extra_state`` entries come and go between versions, so a strict load
    tolerates (and logs) their absence; any other missing or unexpected key raises
    ``RuntimeError`` naming the keys.
    """
    result = module.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not _is_extra_state(k)]
    unexpected = [k for k in result.unexpected_keys if not _is_extra_state(k)]
    tolerated = (
        len(result.missing_keys) + len(result.unexpected_keys) - len(missing) - len(unexpected)
    )
    if tolerated:
        logger.warning(
            "ignored %d mismatched _extra_state entries while loading weights", tolerated
        )
    if strict and (missing or unexpected):
        raise RuntimeError(
            f"checkpoint does not match the model: missing keys {missing}, unexpected keys "
            f"{unexpected}; load with strict=False to accept a partial match"
        )


def drop_extra_state(section: Mapping[str, Any]) -> dict[str, Any]:
    """``section`` without Transformer Engine ``_extra_state`` entries."""
    return {k: v for k, v in section.items() if not _is_extra_state(k)}


def load_model_sections(model: Sequence[Any], state_dict: Mapping[str, Any], strict: bool) -> None:
    """Put each chunk's weights back; a chunk without a section (an empty stage) is skipped."""
    chunks = as_model_list(model)
    for index, chunk in enumerate(chunks):
        key = model_section_key(index, len(chunks))
        if key not in state_dict:
            if len(chunks) == 1:
                raise RuntimeError("the checkpoint has no model weights (no 'model' section)")
            continue
        _load_model_state_dict(chunk, dict(state_dict[key]), strict)
