"""Checkpoint state of a plain ``torch.optim`` optimizer, keyed by parameter *name*.

``torch.optim.Optimizer.state_dict()`` keys per-parameter state by position in its param
groups. That is fragile across code changes and says nothing about resharding, so Cairn saves
it keyed by the parameter's name in the model instead:

- per-parameter tensors of one or more dimensions (Adam's moments, ...) become replicated
  ``ShardedTensor`` leaves under ``optimizer.state.<param name>.<state key>`` (DCP shards);
- everything else (0-d ``step`` tensors, scalars, ``param_groups`` with names instead of
  positions) stays in ``common.pt``, together with ``state_layout`` (flat key ->
  ``[param name, state key, shape, dtype]``) from which the load template is rebuilt even when
  the fresh optimizer has no state yet.

megatron-core optimizers are not handled here: they produce sharded state dicts themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cairn_agent.engine.sharded_dict import to_sharded_state_dict

STATE_PREFIX = "optimizer.state."
_LAYOUT = "state_layout"
_SCALARS = "state_scalars"
_TENSORS = "state"
_GROUPS = "param_groups"


def is_torch_optimizer(optimizer: Any) -> bool:
    """True for a plain ``torch.optim`` optimizer (no megatron-core sharded_state_dict)."""
    return isinstance(optimizer, torch.optim.Optimizer) and not hasattr(
        optimizer, "sharded_state_dict"
    )


def parameter_names(
    model: Sequence[torch.nn.Module], optimizer: torch.optim.Optimizer
) -> list[str]:
    """Name of every optimizer parameter, in the optimizer's own order.

    Names come from the model (``model<i>.`` prefixed when there are several chunks); a
    parameter the model does not own is named by its position (``group<g>.<j>``).
    """
    by_id: dict[int, str] = {}
    for index, chunk in enumerate(model):
        prefix = f"model{index}." if len(model) > 1 else ""
        for name, param in chunk.named_parameters():
            by_id.setdefault(id(param), f"{prefix}{name}")
    names = []
    for g, group in enumerate(optimizer.param_groups):
        for j, param in enumerate(group["params"]):
            names.append(by_id.get(id(param), f"group{g}.{j}"))
    if len(set(names)) != len(names):
        raise ValueError(
            "two optimizer parameters share a name; give each parameter its own module"
        )
    return names


def _split_state(
    state: Mapping[int, Mapping[str, Any]], names: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]], dict[str, list[Any]]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    state_layout: dict[str, list[Any]] = {}
    for index, per_param in state.items():
        name = names[index]
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                flat = f"{name}.{key}"
                tensors[flat] = value
                state_layout[flat] = [
                    name,
                    key,
                    list(value.shape),
                    str(value.dtype).removeprefix("torch."),
                ]
            else:
                scalars.setdefault(name, {})[key] = value
    return tensors, scalars, state_layout


def named_state_dict(
    model: Sequence[torch.nn.Module], optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """The optimizer's sharded checkpoint section (see the module docstring)."""
    names = parameter_names(model, optimizer)
    plain = optimizer.state_dict()
    tensors, scalars, state_layout = _split_state(plain["state"], names)
    groups = [{**group, "params": [names[i] for i in group["params"]]} for group in plain[_GROUPS]]
    return {
        _GROUPS: groups,
        _SCALARS: scalars,
        _LAYOUT: state_layout,
        _TENSORS: to_sharded_state_dict(tensors, STATE_PREFIX),
    }


def load_template(saved: Mapping[str, Any]) -> dict[str, Any]:
    """Sharded template of a saved optimizer section, from its ``common.pt`` part."""
    state_layout: Mapping[str, list[Any]] = saved.get(_LAYOUT, {})
    empty = {
        flat: torch.empty(tuple(shape), dtype=getattr(torch, dtype))
        for flat, (_, _, shape, dtype) in state_layout.items()
    }
    return {
        _GROUPS: saved.get(_GROUPS, []),
        _SCALARS: saved.get(_SCALARS, {}),
        _LAYOUT: dict(state_layout),
        _TENSORS: to_sharded_state_dict(empty, STATE_PREFIX),
    }


def _index_of(name_to_index: Mapping[str, int], name: str) -> int:
    if name not in name_to_index:
        raise RuntimeError(
            f"the checkpoint has optimizer state for parameter {name!r}, which this model's "
            "optimizer does not have; load with load_optim=False (or finetune=True) after "
            "changing the model"
        )
    return name_to_index[name]


def load_named_state_dict(
    model: Sequence[torch.nn.Module], optimizer: torch.optim.Optimizer, loaded: Mapping[str, Any]
) -> None:
    """Restore ``optimizer`` from a loaded section written by :func:`named_state_dict`."""
    name_to_index = {name: i for i, name in enumerate(parameter_names(model, optimizer))}
    state: dict[int, dict[str, Any]] = {}
    tensors: Mapping[str, torch.Tensor] = loaded.get(_TENSORS, {})
    for flat, (name, key, _, _) in loaded.get(_LAYOUT, {}).items():
        state.setdefault(_index_of(name_to_index, name), {})[key] = tensors[flat]
    for name, scalars in loaded.get(_SCALARS, {}).items():
        state.setdefault(_index_of(name_to_index, name), {}).update(scalars)
    groups = [
        {**group, "params": [_index_of(name_to_index, n) for n in group["params"]]}
        for group in loaded[_GROUPS]
    ]
    optimizer.load_state_dict({"state": state, _GROUPS: groups})
