"""State dicts the engine tests save and load, built the same way on every rank.

Everything is seeded, so a rank can rebuild exactly what another rank (or an earlier process)
saved and compare bit for bit. Imported inside spawned ranks only.
"""

from __future__ import annotations

from typing import Any

import torch

ROWS_PER_RANK = 3
COLS = 5
ITERATION = 7


def global_weight(world_size: int) -> torch.Tensor:
    """The full tensor whose row blocks the ranks hold (rank r: rows [3r, 3r+3))."""
    gen = torch.Generator().manual_seed(11)
    return torch.randn(ROWS_PER_RANK * world_size, COLS, generator=gen)


def replicated_value() -> torch.Tensor:
    return torch.arange(6, dtype=torch.float64).reshape(2, 3) / 7


def mcore_state(rank: int, world_size: int, *, empty: bool = False) -> dict[str, Any]:
    """A megatron-core sharded state: a row-sharded tensor, a replicated one, an object, commons.

    With ``empty`` the tensors are zeros and the object None: a load template.
    """
    from megatron.core.dist_checkpointing import ShardedObject, ShardedTensor

    rows = global_weight(world_size)[rank * ROWS_PER_RANK : (rank + 1) * ROWS_PER_RANK].clone()
    replicated = replicated_value()
    if empty:
        rows, replicated = torch.zeros_like(rows), torch.zeros_like(replicated)
    return {
        "weight": ShardedTensor.from_rank_offsets("layer.weight", rows, (0, rank, world_size)),
        "scale": ShardedTensor.from_rank_offsets("layer.scale", replicated, replica_id=rank),
        "rng_state": ShardedObject(
            "rng_state", None if empty else {"seed": 100 + rank}, (world_size,), (rank,)
        ),
        "checkpoint_version": 3.0,
        "iteration": ITERATION,
        "opt_param_scheduler": {"max_lr": 0.1, "num_steps": ITERATION},
    }


def linear_and_adam(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """An ``nn.Linear`` with an Adam optimizer that has taken one step (so it has state)."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def dtensor_full(rows: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(rows)
    return torch.randn(rows, 4, generator=gen)


def tiny_gpt(seed: int) -> Any:
    """A 2-layer megatron-core GPTModel on CPU (local layer spec, no TransformerEngine).

    ``parallel_state.initialize_model_parallel`` must have run. Same seed, same weights.
    """
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_config import TransformerConfig

    torch.manual_seed(seed)
    config = TransformerConfig(
        num_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        use_cpu_initialization=True,
        pipeline_dtype=torch.float32,
    )
    return GPTModel(
        config=config,
        transformer_layer_spec=get_gpt_layer_local_spec(),
        vocab_size=64,
        max_sequence_length=16,
    )


def bridge_like_state(
    model: Any, rank: int, world_size: int, *, seed: int, iteration: int
) -> dict[str, Any]:
    """What Megatron-Bridge saves, in miniature: model, an RNG ShardedObject, common values."""
    from megatron.core.dist_checkpointing import ShardedObject

    return {
        "model": model.sharded_state_dict(),
        "rng_state": ShardedObject("rng_state", {"seed": seed + rank}, (world_size,), (rank,)),
        "checkpoint_version": 3.0,
        "iteration": iteration,
    }


def same_parameters(a: Any, b: Any) -> bool:
    pairs = zip(a.named_parameters(), b.named_parameters(), strict=True)
    return all(na == nb and torch.equal(pa, pb) for (na, pa), (nb, pb) in pairs)
