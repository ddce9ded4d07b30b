"""The first async save of a run blocks for its copy only: planned and mapped ahead of it."""

from __future__ import annotations

from pathlib import Path

import torch
from cairn_agent import checkpointing
from cairn_agent.config import CheckpointConfig, ConfigContainer
from cairn_agent.engine.dist import single_process_group
from cairn_agent.state.train import GlobalState


def test_the_first_step_boundary_plans_the_first_save_so_it_neither_plans_nor_maps(
    tmp_path: Path,
) -> None:
    cfg = CheckpointConfig(save=str(tmp_path), load=str(tmp_path), async_save=True)
    state = GlobalState(ConfigContainer(checkpoint=cfg))
    model = torch.nn.Linear(8, 8)
    optimizer = torch.optim.Adam(model.parameters())
    with single_process_group():
        checkpointing.load_checkpoint(state, [model], optimizer, None)
        model(torch.randn(2, 8)).sum().backward()
        optimizer.step()  # the optimizer state exists from here: the structure of every save
        state.train_state.step = 1
        checkpointing.maybe_finalize_async_save(state, cfg)  # the step boundary
        queue = state.async_calls_queue
        assert queue is not None
        before = queue.stats()
        assert before.arenas_created == 1 and before.saves_staged == 0
        checkpointing.save_checkpoint(state, [model], optimizer, None, 0.0)
        after = queue.stats()
        checkpointing.maybe_finalize_async_save(state, cfg, blocking=True, terminate=True)
    # The save reused the plan and the buffer: no new plan, no new buffer, no new worker.
    assert (after.replans, after.arenas_created, after.workers_started) == (
        before.replans,
        before.arenas_created,
        before.workers_started,
    )
    assert after.saves_staged == 1
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "1"
