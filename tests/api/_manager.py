"""Rank bodies of the checkpoint-manager tests: a loop that checkpoints only through the
manager protocol, as Megatron-Bridge's newer ``train()`` does, with Bridge-shaped objects."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from cairn_agent.config import ConfigContainer
from cairn_agent.engine import dist
from cairn_agent.state.train import TrainState
from cairn_agent.storage.listing import committed_iterations
from cairn_agent.storage.tracker import read_tracker

from tests.api._bodies import pack
from tests.api._workload import BATCH, Job

MANAGER_PATH = "cairn_agent.bridge.CairnCheckpointManager"
SAVE_EVERY = 2
BRIDGE_MODEL = {"num_layers": 2, "hidden_size": 8, "tensor_model_parallel_size": 1}


@dataclasses.dataclass
class BridgeLikeCheckpointConfig:
    """Bridge's ``CheckpointConfig`` shape: shared field names plus Bridge-only ones."""

    save: str | None = None
    load: str | None = None
    save_interval: int | None = None
    async_save: bool = False
    most_recent_k: int = -1
    ckpt_step: int | None = None
    custom_manager_class: str | None = None
    hf_source_path: str | None = None  # Bridge-only: Cairn has no such field
    also_save_hf_checkpoint: bool = False  # Bridge-only


class BridgeLikeConfig:
    """Bridge's ``ConfigContainer`` shape; ``to_yaml(path)`` writes its full dump like Bridge's."""

    def __init__(self, checkpoint: BridgeLikeCheckpointConfig) -> None:
        base = ConfigContainer()
        self.checkpoint = checkpoint
        self.rng, self.optimizer = base.rng, base.optimizer
        self.rng.data_parallel_random_init = True
        self.model = base.model
        self.dataset = None
        self.peft = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": dataclasses.asdict(self.checkpoint),
            "model": {"_target_": "megatron.bridge.models.GPTModelProvider", **BRIDGE_MODEL},
            "rng": dataclasses.asdict(self.rng),
        }

    def to_yaml(self, yaml_path: str | None = None) -> None:
        if yaml_path is None:
            print(yaml.safe_dump(self.to_dict(), default_flow_style=False))
            return
        with open(yaml_path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(self.to_dict(), handle, default_flow_style=False)


class BridgeLikeState:
    """Bridge's ``GlobalState`` shape: ``cfg`` and ``train_state`` only."""

    def __init__(self, cfg: BridgeLikeConfig) -> None:
        self.cfg = cfg
        self.train_state = TrainState()


class RecordingCallbacks:
    """Bridge's ``CallbackManager`` surface; records the tracker each ``on_checkpoint_save`` saw."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.user_state: dict[str, Any] = {}
        self.tracker_at_fire: list[int | None] = []

    def has_callbacks(self, event_name: str) -> bool:
        return event_name == "on_checkpoint_save"

    def fire(self, event_name: str, context: Any) -> None:
        assert context.user_state is self.user_state and context.model
        tracker = read_tracker(self.root)
        self.tracker_at_fire.append(None if tracker is None else tracker.iteration)


class HalfManager:
    """Has ``save`` and ``load`` but no ``finalize_async_saves``."""

    def __init__(self, checkpoint_config: Any) -> None:
        self.checkpoint_config = checkpoint_config

    def save(self, ctx: Any, callback_manager: Any = None) -> None:
        pass

    def load(self, ctx: Any) -> tuple[int, float]:
        return 0, 0.0


NOT_A_CLASS = "a string where a class should be"


def _manager_loop(job: Job, state: BridgeLikeState, steps: int, root: str) -> dict[str, Any]:
    """Bridge's loop, reduced: create the manager, load, train, save, finalize every step."""
    from cairn_agent.checkpointing import (
        CheckpointLoadContext,
        CheckpointSaveContext,
        create_checkpoint_manager,
    )

    manager = create_checkpoint_manager(state.cfg.checkpoint)  # resolved from its class path
    callbacks = RecordingCallbacks(root)
    manager.load(CheckpointLoadContext(state, [job.model], job.optimizer, job.scheduler))
    resumed_at = state.train_state.step  # Bridge reads the state, not the return value
    job.flops = state.train_state.floating_point_operations_so_far
    # Megatron's samplers resume from consumed_train_samples, not from an iterator state.
    job.data.pos = state.train_state.consumed_train_samples // (BATCH * dist.get_world_size())
    saved: list[int] = []
    for _ in range(resumed_at, steps):
        job.step()
        if state.train_state.step % SAVE_EVERY == 0:
            ctx = CheckpointSaveContext(
                state, [job.model], job.optimizer, job.scheduler, int(job.flops), job.data
            )
            manager.save(ctx, callbacks)
            saved.append(state.train_state.step)
        manager.finalize_async_saves(state, blocking=False)
    manager.finalize_async_saves(state, blocking=True, terminate=True)
    tracker = read_tracker(Path(root))
    return {
        "manager": type(manager).__name__,
        "resumed_at": resumed_at,
        "saved": saved,
        "tracker_at_fire": callbacks.tracker_at_fire,
        "committed": committed_iterations(Path(root)),
        "tracker": None if tracker is None else tracker.iteration,
        "params": job.params(),
        "flops": job.flops,
    }


def train_through_manager(
    rank: int,
    world: int,
    save: str,
    load: str | None,
    steps: int,
    async_save: bool,
    ckpt_step: int | None,
) -> bytes:
    """One run of the manager loop with a Bridge-shaped state; returns what the test checks."""
    job = Job(rank, init_seed=0)  # identical initial replicas; the state below replaces Job's
    checkpoint = BridgeLikeCheckpointConfig(
        save=save,
        load=load,
        async_save=async_save,
        ckpt_step=ckpt_step,
        custom_manager_class=MANAGER_PATH,
    )
    state = BridgeLikeState(BridgeLikeConfig(checkpoint))
    job.state = state  # type: ignore[assignment]
    result = _manager_loop(job, state, steps, save)
    dist.barrier()
    return pack(result)
