"""Reading checkpoints written by Megatron-LM (no ``run_config.yaml``, no ``train_state.pt``).

Megatron-LM keeps the training progress and parallel layout inside ``common.pt``: the argparse
``args`` namespace, ``iteration``, ``num_floating_point_operations_so_far`` and
``checkpoint_version`` (spec §1.2). This module turns that into what the facade needs, and
reorders fused QKV rows of pre-2.0 checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from cairn_agent.state.train import TrainState

_ARGS_KEY = "args"


def _arg(args: Any, name: str, default: Any) -> Any:
    """``args.name`` for an argparse ``Namespace`` (or any object), ``args[name]`` for a dict."""
    if isinstance(args, Mapping):
        return args.get(name, default)
    return getattr(args, name, default)


def _require_args(state_dict: Mapping[str, Any]) -> Any:
    args = state_dict.get(_ARGS_KEY)
    if args is None:
        present = ", ".join(sorted(str(k) for k in state_dict)) or "nothing"
        raise RuntimeError(
            "legacy Megatron-LM checkpoint has no 'args' entry in common.pt (it holds "
            f"{present}); without run_config.yaml or args the parallel layout is unknown"
        )
    return args


def _extract_megatron_lm_args_from_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """The parallel layout and save options of a Megatron-LM checkpoint, Bridge config shaped.

    Returns ``{"model": {tensor/pipeline/encoder parallel sizes}, "checkpoint": {save_optim,
    save_rng, fully_parallel_save}}``. Raises ``RuntimeError`` when ``args`` is missing.
    """
    args = _require_args(state_dict)
    return {
        "model": {
            "tensor_model_parallel_size": _arg(args, "tensor_model_parallel_size", 1),
            "pipeline_model_parallel_size": _arg(args, "pipeline_model_parallel_size", 1),
            "encoder_tensor_model_parallel_size": _arg(
                args, "encoder_tensor_model_parallel_size", 0
            ),
            "encoder_pipeline_model_parallel_size": _arg(
                args, "encoder_pipeline_model_parallel_size", 0
            ),
        },
        "checkpoint": {
            "save_optim": not _arg(args, "no_save_optim", False),
            "save_rng": not _arg(args, "no_save_rng", False),
            "fully_parallel_save": bool(_arg(args, "ckpt_fully_parallel_save", False)),
        },
    }


def _number(value: Any) -> Any:
    # Some writers store progress counters as 0-d tensors; TrainState holds plain numbers.
    return value.item() if isinstance(value, torch.Tensor) else value


def _get_train_state_from_state_dict(state_dict: dict[str, Any]) -> TrainState:
    """The ``TrainState`` of a Megatron-LM checkpoint (missing counters read as 0)."""
    from cairn_agent.state.train import TrainState

    args = state_dict.get(_ARGS_KEY)
    return TrainState(
        step=int(_number(state_dict.get("iteration", 0))),
        consumed_train_samples=int(_number(_arg(args, "consumed_train_samples", 0) or 0)),
        skipped_train_samples=int(_number(_arg(args, "skipped_train_samples", 0) or 0)),
        consumed_valid_samples=int(_number(_arg(args, "consumed_valid_samples", 0) or 0)),
        floating_point_operations_so_far=_number(
            state_dict.get("num_floating_point_operations_so_far", 0)
        ),
        do_train=False,
        do_valid=False,
        do_test=False,
    )


def _attention_layout(model: Any) -> tuple[int, int]:
    """(heads per partition, head size) of the first self-attention layer."""
    # DDP / Float16Module wrappers nest the real model under ``.module``.
    while hasattr(model, "module"):
        model = model.module
    attention = model.language_model.encoder.layers[0].self_attention
    return (
        int(attention.num_attention_heads_per_partition),
        int(attention.hidden_size_per_attention_head),
    )


def _transpose_first_dim(
    t: torch.Tensor, num_splits: int, num_splits_first: bool, model: Any
) -> torch.Tensor:
    """Reorder fused QKV rows of a pre-2.0 checkpoint into ``[heads, splits, head_size]`` order.

    Version 0 stored rows as ``[splits, heads, head_size]`` (``num_splits_first``), version 1
    as ``[heads, head_size, splits]``; both become ``[heads, splits, head_size]``, flattened
    back to the input shape.
    """
    heads, head_size = _attention_layout(model)
    shape = t.size()
    if shape[0] != num_splits * heads * head_size:
        raise ValueError(
            f"first dimension {shape[0]} is not splits*heads*head_size = "
            f"{num_splits}*{heads}*{head_size}; the model does not match the checkpoint"
        )
    if num_splits_first:
        reordered = t.view(num_splits, heads, head_size, *shape[1:]).transpose(0, 1)
    else:
        reordered = t.view(heads, head_size, num_splits, *shape[1:]).transpose(1, 2)
    return reordered.contiguous().view(*shape)
