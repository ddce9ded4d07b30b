"""One rank of the preemption soak's training job (``bench.preemption`` starts two per run).

A small data-parallel MLP on CPU gloo ranks that checkpoints through the seed API
(``cairn_agent.checkpointing``) with ``save_due`` at every step boundary, as a script keeping its
own cadence does, and ``save_on_sigterm``. It reports to the driver through a queue: the
iteration it resumed from, then how it ended: the step Cairn stopped it at on SIGTERM (with the
code and message of ``PreemptedExit`` and when the process was about to exit), or a normal end.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

WIDTH = 512
LAYERS = 4
BATCH = 8


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """What one run (both ranks) is asked to do."""

    root: str
    """Checkpoint root (save and load)."""
    store: str
    """gloo file store of this run (a fresh path per run)."""
    env: dict[str, str]
    """Environment the ranks add to their own (Checkpoint, kubeconfig, generation, grace)."""
    save_interval: int
    """Periodic persistent saves every N steps."""
    async_save: bool
    """Periodic saves are async (the final save is always committed before exit)."""
    pace_s: float
    """Each step takes at least this long (a real step is not free)."""
    max_steps: int
    """Steps to train after resuming before ending normally (the runs that are not preempted)."""


def rank_main(rank: int, world: int, cfg: RunConfig, reports: Any) -> None:
    """Process entry point: join the gloo group, train until stopped, report to ``reports``."""
    os.environ.update(cfg.env, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    _quiet(rank)
    dist.init_process_group("gloo", init_method=f"file://{cfg.store}", rank=rank, world_size=world)
    try:
        _train(rank, cfg, reports)
    finally:
        dist.destroy_process_group()


def _quiet(rank: int) -> None:
    """Megatron-core's warnings about optional libraries and Cairn's own warnings (each
    preemption logs one) would drown the soak's lines; ``CAIRN_BENCH_DEBUG=1`` shows Cairn's
    log at INFO instead."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    if os.environ.get("CAIRN_BENCH_DEBUG"):
        fmt = f"%(asctime)s r{rank} %(name)s %(message)s"
        logging.basicConfig(level=logging.INFO, format=fmt)
    else:
        logging.getLogger("cairn_agent").setLevel(logging.ERROR)


def _build(cfg: RunConfig) -> tuple[Any, Any, Any]:
    import torch
    from cairn_agent.config import CheckpointConfig, ConfigContainer
    from cairn_agent.state.train import GlobalState

    torch.manual_seed(0)  # identical initial replicas on every rank
    layers: list[Any] = []
    for _ in range(LAYERS):
        layers += [torch.nn.Linear(WIDTH, WIDTH), torch.nn.GELU()]
    model = torch.nn.Sequential(*layers[:-1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    checkpoint = CheckpointConfig(
        save=cfg.root,
        load=cfg.root,
        save_interval=cfg.save_interval,
        async_save=cfg.async_save,
        most_recent_k=3,
        save_on_sigterm=True,
    )
    return model, optimizer, GlobalState(ConfigContainer(checkpoint=checkpoint))


def _train_step(model: Any, optimizer: Any, step: int) -> None:
    import torch
    import torch.distributed as dist

    # The data of a step is a pure function of (step, rank): resuming needs no loader state.
    gen = torch.Generator().manual_seed(10_000 * dist.get_rank() + step)
    x = torch.randn(BATCH, WIDTH, generator=gen)
    loss = torch.nn.functional.mse_loss(model(x), x.flip(1))
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= dist.get_world_size()
    optimizer.step()


def _train(rank: int, cfg: RunConfig, reports: Any) -> None:
    from cairn_agent import checkpointing
    from cairn_agent.errors import PreemptedExit

    model, optimizer, state = _build(cfg)
    start, flops = checkpointing.load_checkpoint(state, [model], optimizer, None)
    state.train_state.step = step = start
    reports.put({"event": "resumed", "rank": rank, "iteration": start, "pid": os.getpid()})
    try:
        while step < start + cfg.max_steps:
            began = time.monotonic()
            step += 1
            _train_step(model, optimizer, step)
            state.train_state.step = step
            flops += 1_000
            state.train_state.floating_point_operations_so_far = flops
            if checkpointing.save_due(state).persistent:
                checkpointing.save_checkpoint(state, [model], optimizer, None, flops)
            checkpointing.maybe_finalize_async_save(state, state.cfg.checkpoint, blocking=False)
            time.sleep(max(0.0, cfg.pace_s - (time.monotonic() - began)))
        checkpointing.maybe_finalize_async_save(
            state, state.cfg.checkpoint, blocking=True, terminate=True
        )
    except PreemptedExit as stop:
        reports.put(
            {
                "event": "stopped",
                "rank": rank,
                "step": int(state.train_state.step),
                "code": stop.code,
                "message": str(stop),
                "exit_at": time.monotonic(),
            }
        )
        raise
    reports.put({"event": "finished", "rank": rank, "step": step})
