"""Rank bodies of the seed-API tests (module level so ``run_ranks`` can spawn them)."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from cairn_agent.engine import dist
from cairn_agent.storage import layout
from cairn_agent.storage.listing import committed_iterations
from cairn_agent.storage.tracker import read_tracker

from tests.api._local import global_non_persistent_resume, local_resume
from tests.api._workload import Job, peek_random


def pack(obj: Any) -> bytes:
    """Results as bytes: tensors sent through a multiprocessing queue live in shared memory
    that vanishes when the rank process exits, so they travel serialized instead."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def unpack(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=False)


class _UnpicklableScheduler:
    """A scheduler whose state cannot be written: makes the save fail inside the commit."""

    def state_dict(self) -> dict[str, Any]:
        return {"fn": lambda: 0}


def _adam_state(job: Job) -> list[list[torch.Tensor]]:
    return [
        [job.optimizer.state[p][k].clone() for k in ("step", "exp_avg", "exp_avg_sq")]
        for p in job.model.parameters()
    ]


def save_and_continue(rank: int, world: int, root: str) -> bytes:
    """Train 3 steps saving each (most_recent_k=2), then 3 more; then a save that fails."""
    job = Job(rank, init_seed=0, save=root, load=root, most_recent_k=2)
    leftover = Path(root) / layout.staging_dir_name("iter_0000099", 0, "deadbeef")
    if rank == 0:
        leftover.mkdir(parents=True)  # an interrupted save of an earlier run
    dist.barrier()
    listings = []
    for _ in range(3):
        job.step()
        job.save()
        listings.append(committed_iterations(Path(root)))
    at_save = {
        "params": job.params(),
        "adam": _adam_state(job),
        "lr": job.scheduler.get_last_lr(),
        "draws": peek_random(),
    }
    for _ in range(3):
        job.step()
    failure = None
    try:
        from cairn_agent import checkpointing

        checkpointing.save_checkpoint(
            job.state, [job.model], job.optimizer, _UnpicklableScheduler(), job.flops
        )
    except Exception as exc:  # noqa: BLE001 - reported to the test
        failure = type(exc).__name__
    tracker = read_tracker(Path(root))
    return pack(
        {
            "listings": listings,
            "at_save": at_save,
            "final": job.params(),
            "failure": failure,
            "after_failure": committed_iterations(Path(root)),
            "leftover_removed": not leftover.exists(),
            "tracker": None if tracker is None else tracker.iteration,
        }
    )


def resume_and_continue(rank: int, world: int, root: str) -> bytes:
    """Fresh process group: load, compare, train 3 more; then weights-only loads."""
    from cairn_agent.checkpointing import _load_model_weights_from_checkpoint

    job = Job(rank, init_seed=99, load=root)
    iteration, flops = job.load()
    ts = job.state.train_state
    resumed = {
        "iteration": iteration,
        "flops": flops,
        "step": ts.step,
        "consumed": ts.consumed_train_samples,
        "data_pos": job.data.pos,
        "params": job.params(),
        "adam": _adam_state(job),
        "lr": job.scheduler.get_last_lr(),
        "draws": peek_random(),
    }
    for _ in range(3):
        job.step()
    inference = Job(rank, init_seed=7).model
    result = _load_model_weights_from_checkpoint(root, [inference])
    raw = _load_model_weights_from_checkpoint(
        str(layout.iteration_dir(root, 3)), [Job(rank, init_seed=8).model], return_state_dict=True
    )
    assert raw is not None
    return pack(
        {
            "resumed": resumed,
            "final": job.params(),
            "weights_only": dict(inference.state_dict()),
            "weights_only_result": result,
            "returned": {k: v.clone() for k, v in raw["model"].items()},
        }
    )


def _copy(root: str, dst: Path) -> Path:
    if dist.get_rank() == 0:
        shutil.copytree(root, dst)
    dist.barrier()
    return dst


def _outcome(fn: Any) -> str:
    try:
        return repr(fn())
    except Exception as exc:  # noqa: BLE001 - the test compares error types
        return type(exc).__name__


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_options(rank: int, world: int, root: str, scratch: str) -> bytes:
    """ckpt_step, load_optim=False, finetune, pretrained, missing, corrupt tracker/iteration."""
    from cairn_agent.checkpointing import read_metadata

    out: dict[str, Any] = {}
    job = Job(rank, 5, load=root, ckpt_step=2)
    out["ckpt_step"] = (job.load(), job.state.train_state.step)
    job = Job(rank, 5, load=root, load_optim=False)
    out["no_optim"] = (job.load(), len(job.optimizer.state), job.params())
    job = Job(rank, 5, load=root, finetune=True)
    out["finetune"] = (
        job.load(),
        job.state.train_state.consumed_train_samples,
        len(job.optimizer.state),
        job.params(),
    )
    empty = Path(scratch) / "empty"
    empty.mkdir(exist_ok=True)
    job = Job(rank, 5, load=str(empty), pretrained_checkpoint=root)
    out["pretrained"] = (job.load(), job.state.cfg.checkpoint.finetune, job.params())
    out["missing"] = _outcome(lambda: Job(rank, 5, load=str(empty)).load())
    out["missing_exit"] = _outcome(
        lambda: Job(rank, 5, load=str(empty), exit_on_missing_checkpoint=True).load()
    )
    garbage = _copy(root, Path(scratch) / "garbage")
    if rank == 0:
        layout.tracker_path(garbage).write_text("not-a-number")
    dist.barrier()
    out["garbage_load"] = _outcome(lambda: Job(rank, 5, load=str(garbage)).load())
    out["garbage_read_metadata"] = _outcome(
        lambda: read_metadata(str(layout.tracker_path(garbage)))
    )
    out["read_metadata"] = read_metadata(str(layout.tracker_path(root)))
    corrupt = _copy(root, Path(scratch) / "corrupt")
    if rank == 0:
        shard = layout.iteration_dir(corrupt, 3) / layout.distcp_file_name(0, 0)
        shard.write_bytes(shard.read_bytes()[:-5])
    dist.barrier()
    records = _Records()
    logging.getLogger("cairn_agent").addHandler(records)
    job = Job(rank, 5, load=str(corrupt))
    out["fallback"] = (job.load(), job.state.skipped_checkpoints, records.messages)
    foreign = _copy(root, Path(scratch) / "foreign")
    if rank == 0:  # what Megatron-LM itself writes: no manifest, train state or run config
        iter3 = layout.iteration_dir(foreign, 3)
        for name in (
            layout.MANIFEST_FILENAME,
            layout.TRAIN_STATE_FILENAME,
            layout.RUN_CONFIG_FILENAME,
        ):
            (iter3 / name).unlink()
    dist.barrier()
    job = Job(rank, 5, load=str(foreign))
    out["foreign"] = (job.load(), job.state.train_state.consumed_train_samples, job.params())
    out["local"] = local_resume(rank, Path(scratch) / "np_root", Path(scratch) / "np_local")
    out["global_np"] = global_non_persistent_resume(rank, Path(scratch) / "np_global")
    return pack(out)
