"""Rank body: a megatron-core GPTModel (CPU, local layer spec) through save and load."""

from __future__ import annotations

from typing import Any

import torch
from cairn_agent.config import CheckpointConfig, ConfigContainer
from cairn_agent.state.train import GlobalState, TrainState
from cairn_agent.storage import layout

from tests.api._bodies import pack


class BridgeLikeConfig:
    """Stands in for Megatron-Bridge's ConfigContainer: same attribute names, own to_yaml."""

    def __init__(self, checkpoint: CheckpointConfig) -> None:
        base = ConfigContainer()
        self.checkpoint = checkpoint
        self.rng, self.model, self.optimizer = base.rng, base.model, base.optimizer
        self.dataset = None
        self.peft = None

    def to_yaml(self, yaml_path: str | None = None) -> None:
        if yaml_path is not None:
            with open(yaml_path, "w", encoding="utf-8") as handle:
                handle.write("written_by: bridge-like config\n")


class BridgeLikeState:
    """Stands in for Megatron-Bridge's GlobalState: only ``cfg`` and ``train_state``."""

    def __init__(self, cfg: BridgeLikeConfig) -> None:
        self.cfg = cfg
        self.train_state = TrainState()


def build_gpt(seed: int) -> Any:
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.models.gpt.gpt_model import GPTModel
    from megatron.core.transformer.transformer_config import TransformerConfig

    if not ps.model_parallel_is_initialized():
        ps.initialize_model_parallel(1, 1)
    torch.manual_seed(seed)
    config = TransformerConfig(
        num_layers=2,
        hidden_size=16,
        num_attention_heads=2,
        use_cpu_initialization=True,
        pipeline_dtype=torch.float32,
    )
    return GPTModel(
        config=config,
        transformer_layer_spec=get_gpt_layer_local_spec(),
        vocab_size=32,
        max_sequence_length=8,
    )


def _adam_with_state(model: torch.nn.Module) -> torch.optim.Adam:
    # megatron-core's forward needs CUDA; fake gradients give Adam real moments on CPU.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    for param in model.parameters():
        param.grad = torch.randn(param.shape, generator=gen)
    optimizer.step()
    return optimizer


def _snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "params": {
            k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)
        },
        "adam": [
            [optimizer.state[p][k].clone() for k in ("step", "exp_avg", "exp_avg_sq")]
            for p in model.parameters()
        ],
    }


def gpt_round_trip(rank: int, world: int, root: str) -> bytes:
    from cairn_agent.checkpointing import load_checkpoint, save_checkpoint
    from megatron.core import dist_checkpointing

    model = build_gpt(seed=0)
    optimizer = _adam_with_state(model)
    # The training script keeps its own (Bridge) state and config objects: only the
    # checkpointing import changed.
    state = BridgeLikeState(BridgeLikeConfig(CheckpointConfig(save=root)))
    state.train_state.step = 1
    save_checkpoint(state, [model], optimizer, None, 10)
    saved = _snapshot(model, optimizer)

    fresh = build_gpt(seed=5)
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    resumed = GlobalState(ConfigContainer(checkpoint=CheckpointConfig(load=root)))
    iteration, _ = load_checkpoint(resumed, [fresh], fresh_optimizer, None)

    # megatron-core's own loader (the compatibility oracle) reads what Cairn wrote.
    oracle = build_gpt(seed=7)
    loaded = dist_checkpointing.load(
        {"model": oracle.sharded_state_dict()}, str(layout.iteration_dir(root, 1))
    )
    oracle.load_state_dict(loaded["model"])
    run_config = (layout.iteration_dir(root, 1) / layout.RUN_CONFIG_FILENAME).read_text()
    return pack(
        {
            "run_config": run_config,
            "iteration": iteration,
            "saved": saved,
            "resumed": _snapshot(fresh, fresh_optimizer),
            "oracle": {
                k: v.detach().clone() for k, v in oracle.state_dict().items() if torch.is_tensor(v)
            },
        }
    )
