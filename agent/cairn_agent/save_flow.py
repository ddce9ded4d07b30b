"""``save_checkpoint`` as a short list of steps (sync commit, or scheduled on the async queue).

Ordering constraints, and why they hold:

- Dataloader state is written before the model checkpoint is committed, so a published
  tracker never points at an iteration whose dataloader state is missing.
- ``train_state.pt`` and ``run_config.yaml`` travel inside the commit (staging dir), and
  ``latest_train_state.pt`` is published by the engine just before the tracker: a crash at any
  point leaves either the old or the new checkpoint fully advertised, never a half of one.
- Retention runs only after the tracker is durable (sync: after ``save_sync`` returned on all
  ranks; async: as the queue's ``on_commit``), through the storage planner, which never
  deletes the tracker's target, the resume point, or anything newer than this save.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cairn_agent import reporting
from cairn_agent.config import CheckpointConfig, ConfigContainer
from cairn_agent.dataloader_state import maybe_save_dataloader_state
from cairn_agent.engine import dist
from cairn_agent.engine.save import SaveTarget, save_sync
from cairn_agent.errors import CairnError
from cairn_agent.model_state import generate_state_dict
from cairn_agent.peft import apply_peft_adapter_filter_to_state_dict
from cairn_agent.rng import get_rng_state
from cairn_agent.state import GlobalState
from cairn_agent.storage import layout
from cairn_agent.storage.gc import collect_leftovers
from cairn_agent.storage.listing import committed_iterations
from cairn_agent.storage.retention import RetentionPolicy, apply_retention, plan_retention

logger = logging.getLogger(__name__)

NON_PERSISTENT_DEFAULT_KEEP = 2


@dataclass(frozen=True)
class SaveDestination:
    """Where one save goes and how many checkpoints that root keeps (None = all)."""

    root: Path
    non_persistent: bool
    keep_last: int | None


def destination(ckpt: CheckpointConfig, non_persistent_ckpt: bool) -> SaveDestination:
    """The root a (non-)persistent global save writes to, with its retention count."""
    if ckpt.save is None:
        raise ValueError(
            "save_checkpoint called but checkpoint.save is None; set it to a directory"
        )
    k = ckpt.most_recent_k
    if not non_persistent_ckpt:
        return SaveDestination(Path(ckpt.save), False, None if k < 0 else k)
    if ckpt.non_persistent_ckpt_type != "global":
        raise ValueError(
            f"non-persistent save with non_persistent_ckpt_type={ckpt.non_persistent_ckpt_type!r}: "
            "set it to 'global' (node-local saves go through nvidia-resiliency-ext)"
        )
    root = layout.non_persistent_dir(ckpt.save, ckpt.non_persistent_global_ckpt_dir)
    return SaveDestination(root, True, NON_PERSISTENT_DEFAULT_KEEP if k < 0 else max(1, k))


def build_sharded_state_dict_metadata(
    use_distributed_optimizer: bool,
    fully_parallel_save: bool,
    *,
    fully_reshardable: bool = False,
    mem_efficient: bool = False,
) -> dict[str, Any]:
    """Content metadata megatron-core modules and optimizers read to pick their layout."""
    metadata: dict[str, Any] = {}
    if use_distributed_optimizer and fully_reshardable:
        metadata["distrib_optim_sharding_type"] = "fully_reshardable"
        metadata["distrib_optim_fully_reshardable_mem_efficient"] = mem_efficient
    elif use_distributed_optimizer:
        # Fully parallel saves store each parameter separately, which reshards across TP/PP.
        metadata["distrib_optim_sharding_type"] = (
            "fully_sharded_model_space" if fully_parallel_save else "dp_reshardable"
        )
    metadata["singleton_local_shards"] = False
    metadata["chained_optim_avoid_prefix"] = True
    return metadata


def metadata_for(state: GlobalState) -> dict[str, Any]:
    """Content metadata of this run's saves and load templates."""
    ckpt = state.cfg.checkpoint
    return build_sharded_state_dict_metadata(
        bool(getattr(state.cfg.optimizer, "use_distributed_optimizer", False)),
        ckpt.fully_parallel_save,
        fully_reshardable=bool(getattr(ckpt, "dist_ckpt_optim_fully_reshardable", False)),
        mem_efficient=bool(getattr(ckpt, "distrib_optim_fully_reshardable_mem_efficient", False)),
    )


def rerun_state(train_data_iterator: Any) -> dict[str, Any] | None:
    """megatron-core's rerun state machine state, when the run initialised one."""
    try:
        from megatron.core import rerun_state_machine as rsm
    except ImportError:
        return None
    if getattr(rsm, "_GLOBAL_RERUN_STATE_MACHINE", None) is None:
        return None  # asking would implicitly create one (and warn); nothing to save
    state: dict[str, Any] | None = rsm.get_rerun_state_machine().state_dict(
        data_iterator=train_data_iterator, ckpt_format="torch_dist"
    )
    return state


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def writers_per_rank(ckpt: Any) -> int:
    """Shard files per rank (older Bridge configs lack the field: one)."""
    return int(getattr(ckpt, "storage_writers_per_rank", 1))


def run_config_bytes(cfg: Any) -> bytes | None:
    """``run_config.yaml`` content of our ``ConfigContainer`` or of a Bridge one."""
    if isinstance(cfg, ConfigContainer):
        return cfg.to_yaml().encode("utf-8")
    if not callable(getattr(cfg, "to_yaml", None)):
        logger.warning("config %s has no to_yaml(); run_config.yaml not saved", type(cfg).__name__)
        return None
    # Bridge's ConfigContainer.to_yaml(path) writes a file (and prints when given none).
    with tempfile.TemporaryDirectory(prefix="cairn-run-config-") as tmp:
        path = Path(tmp) / layout.RUN_CONFIG_FILENAME
        cfg.to_yaml(str(path))
        return path.read_bytes()


def parallel_layout(state: GlobalState) -> dict[str, int]:
    model = state.cfg.model
    return {
        "tp": int(getattr(model, "tensor_model_parallel_size", 1)),
        "pp": int(getattr(model, "pipeline_model_parallel_size", 1)),
        "world_size": dist.get_world_size(),
    }


def save_target(state: GlobalState, dest: SaveDestination, num_flops: float) -> SaveTarget:
    """The engine's commit target, with train state and run config as rank-0 files."""
    train_state = state.train_state.state_dict()
    train_state["floating_point_operations_so_far"] = torch.tensor(
        float(num_flops), dtype=torch.float64
    )
    train_bytes = _torch_bytes(train_state)
    iter_files = {layout.TRAIN_STATE_FILENAME: train_bytes}
    config_bytes = run_config_bytes(state.cfg)
    if config_bytes is not None:
        iter_files[layout.RUN_CONFIG_FILENAME] = config_bytes
    return SaveTarget(
        root=dest.root,
        iteration=state.train_state.step,
        generation=state.generation,
        layout=parallel_layout(state),
        iter_files=iter_files,
        root_files={layout.LATEST_TRAIN_STATE_FILENAME: train_bytes},
    )


def apply_keep_last(state: GlobalState, dest: SaveDestination, iteration: int) -> list[int]:
    """Rank 0: delete committed iterations beyond ``keep_last`` in ``dest.root``, safely."""
    if dest.keep_last is None or dist.get_rank() != 0:
        return []
    committed = committed_iterations(dest.root)
    protected = {iteration} | (
        {state.resumed_iteration} if state.resumed_iteration is not None else set()
    )
    plan = plan_retention(
        committed,
        RetentionPolicy(keep_last=dest.keep_last),
        protected=protected,
        newest_verified=iteration,
        max_iteration=iteration,
    )
    if plan.delete:
        logger.info(
            "rank 0: retention after iteration %d in %s deletes %s",
            iteration,
            dest.root,
            list(plan.delete),
        )
    return apply_retention(dest.root, plan, generation=state.generation)


def retention_callback(
    state: GlobalState, dest: SaveDestination, iteration: int
) -> Callable[[], None]:
    """Report and retention, to run once the tracker of ``iteration`` is durable (never raises)."""

    def run() -> None:
        if not dest.non_persistent:
            reporting.saved(state, layout.iteration_dir(dest.root, iteration), iteration)
            reporting.save_phase(state, None, None, is_async=state.cfg.checkpoint.async_save)
        try:
            reporting.deleted(state, apply_keep_last(state, dest, iteration))
        except (CairnError, OSError) as exc:
            # Tolerated: the new checkpoint is committed and published; an old one surviving
            # one more round costs only disk space, whereas raising would stop training.
            logger.error(
                "rank %d: retention after iteration %d failed: %s", dist.get_rank(), iteration, exc
            )

    return run


def build_state_dict(
    state: GlobalState,
    model: list[Any],
    optimizer: Any,
    opt_param_scheduler: Any,
    train_data_iterator: Any,
) -> dict[str, Any]:
    """The sharded state dict of this save: model, optimizer, scheduler, RNG, rerun state."""
    cfg = state.cfg
    ckpt = cfg.checkpoint
    rng = get_rng_state(cfg.rng.data_parallel_random_init) if ckpt.save_rng else None
    metadata = metadata_for(state)
    state_dict = generate_state_dict(
        ckpt,
        model,
        optimizer,
        opt_param_scheduler,
        rng,
        iteration=state.train_state.step,
        optim_sd_kwargs={"metadata": metadata},
        model_sd_kwargs={"metadata": metadata},
        rerun_state=rerun_state(train_data_iterator),
    )
    if getattr(cfg, "peft", None) is not None:
        state_dict = apply_peft_adapter_filter_to_state_dict(state_dict, cfg.peft)
    state_dict["content_metadata"] = metadata
    return state_dict


def collect_leftovers_once(state: GlobalState, root: Path) -> None:
    """Rank 0, before the first save into ``root`` by this process: remove staging leftovers.

    Safe here: no save of this process into ``root`` has started yet, and a stale writer of an
    older restart generation could not have published its staging dir anyway (fence).
    """
    if dist.get_rank() != 0 or root in state.gc_done_roots:
        return
    state.gc_done_roots.add(root)
    try:
        removed = collect_leftovers(root)
    except OSError as exc:
        # Tolerated: leftovers only cost disk space; the next start-up GC retries.
        logger.warning("rank 0: start-up GC of %s failed: %s", root, exc)
        return
    if removed:
        logger.info(
            "rank 0: removed %d leftovers of interrupted saves under %s", len(removed), root
        )


def dataloader_save_dir(state: GlobalState) -> str | None:
    configured = getattr(getattr(state.cfg, "dataset", None), "dataloader_save", None)
    save = state.cfg.checkpoint.save
    return configured or (str(Path(save) / layout.DATALOADER_SUBDIR) if save else None)


def save(
    state: GlobalState,
    model: list[Any],
    optimizer: Any,
    opt_param_scheduler: Any,
    num_flops: float,
    *,
    non_persistent_ckpt: bool,
    train_data_iterator: Any,
    schedule_async: Callable[[Any], None],
) -> None:
    """One global save: dataloader state, state dict, commit (sync) or schedule (async)."""
    ckpt = state.cfg.checkpoint
    dest = destination(ckpt, non_persistent_ckpt)
    iteration = state.train_state.step
    collect_leftovers_once(state, dest.root)
    maybe_save_dataloader_state(train_data_iterator, iteration, dataloader_save_dir(state))
    state_dict = build_state_dict(state, model, optimizer, opt_param_scheduler, train_data_iterator)
    target = save_target(state, dest, num_flops)
    on_commit = retention_callback(state, dest, iteration)
    if ckpt.async_save:
        from cairn_agent.async_save import AsyncRequest

        schedule_async(
            AsyncRequest(
                sharded_state_dict=state_dict,
                target=target,
                thread_count=writers_per_rank(ckpt),
                on_commit=on_commit,
            )
        )
        if not dest.non_persistent:
            reporting.save_phase(state, iteration, "Writing", is_async=True)
        logger.info(
            "rank %d: scheduled async save of iteration %d to %s",
            dist.get_rank(),
            iteration,
            dest.root,
        )
        return
    final = save_sync(state_dict, target, thread_count=writers_per_rank(ckpt))
    on_commit()
    dist.barrier()
    logger.info("rank %d: saved iteration %d to %s", dist.get_rank(), iteration, final)
