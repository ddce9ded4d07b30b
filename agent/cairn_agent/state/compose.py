"""The one place that composes a save's state dict and a load's template.

Both are built by :func:`cairn_agent.state.model.generate_state_dict` from the same inputs, so
what a save writes and what a load asks for cannot drift apart: model sections, optimizer and
scheduler, RNG, rerun state, the content metadata megatron-core uses to pick layouts, and the
PEFT adapter filter.
"""

from __future__ import annotations

from typing import Any

from cairn_agent.engine._mcore_compat import rerun_state_machine_initialised
from cairn_agent.state.model import SAVED_OPTIMIZER_KWARG, generate_state_dict
from cairn_agent.state.peft import apply_peft_adapter_filter_to_state_dict
from cairn_agent.state.rng import get_rng_state
from cairn_agent.state.run_config import RunConfigView, view
from cairn_agent.state.train import GlobalState


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
    run = view(state.cfg)
    return build_sharded_state_dict_metadata(
        run.distributed_optimizer,
        state.cfg.checkpoint.fully_parallel_save,
        fully_reshardable=run.optim_fully_reshardable,
        mem_efficient=run.optim_reshardable_mem_efficient,
    )


def rerun_state(train_data_iterator: Any) -> dict[str, Any] | None:
    """megatron-core's rerun state machine state, when the run initialised one."""
    from megatron.core import rerun_state_machine as rsm

    if not rerun_state_machine_initialised():
        return None  # asking would implicitly create one (and warn); nothing to save
    state: dict[str, Any] | None = rsm.get_rerun_state_machine().state_dict(
        data_iterator=train_data_iterator, ckpt_format="torch_dist"
    )
    return state


def is_peft_resume(state: GlobalState) -> bool:
    """Resuming an adapter (PEFT) run: only adapter weights are in the checkpoint."""
    return view(state.cfg).peft is not None and not state.cfg.checkpoint.finetune


def save_state_dict(
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
    peft = view(cfg).peft
    if peft is not None:
        state_dict = apply_peft_adapter_filter_to_state_dict(state_dict, peft)
    state_dict["content_metadata"] = metadata
    return state_dict


def load_template(
    state: GlobalState,
    parts: tuple[bool, bool, bool],
    model: list[Any],
    optimizer: Any,
    scheduler: Any,
    *,
    metadata: dict[str, Any] | None,
    saved_optimizer: Any,
) -> dict[str, Any]:
    """The template a load reads into; ``parts`` is ``(model, optimizer, rng)`` to include.

    ``metadata`` is the checkpoint's own content metadata when it has some (it decides the
    optimizer layout the files hold); ``saved_optimizer`` its common optimizer part, from which
    a plain torch optimizer's template is shaped.
    """
    with_model, with_optim, with_rng = parts
    metadata = metadata or metadata_for(state)
    rng = get_rng_state(state.cfg.rng.data_parallel_random_init) if with_rng else None
    optim_kwargs = {
        "is_loading": True,
        "metadata": metadata,
        SAVED_OPTIMIZER_KWARG: saved_optimizer,
    }
    template = generate_state_dict(
        state.cfg.checkpoint,
        model if with_model else [],
        optimizer if with_optim else None,
        scheduler if with_optim else None,
        rng,
        optim_sd_kwargs=optim_kwargs,
        model_sd_kwargs={"metadata": metadata},
    )
    if is_peft_resume(state):
        template = apply_peft_adapter_filter_to_state_dict(template, state.cfg.peft)
    return template


def parallel_layout(run: RunConfigView, world_size: int) -> dict[str, int]:
    """The parallel layout recorded in a checkpoint's manifest."""
    return {"tp": run.tensor_parallel, "pp": run.pipeline_parallel, "world_size": world_size}
