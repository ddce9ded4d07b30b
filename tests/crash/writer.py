"""One rank of the crash tests' training job: resume, then save every ``step`` iterations.

Each rank runs :func:`main` in a process forked by ``tests.crash.zygote`` (so restarts cost a
fork, not a torch import). The job does what a restarted training job does: rank 0 claims its
restart generation and collects leftovers, every rank loads ``load_candidates(root)[0]`` with
the engine and checks it bit for bit (values are a pure function of the iteration), then it
saves iterations ``resume + step, resume + 2*step, ...`` synchronously or through the async
queue, with keep-last-N retention after each commit, exactly like ``save_flow.apply_keep_last``.

Everything the test needs to know comes back as JSON lines in ``events-r<rank>.jsonl``:
``start``, ``resumed``, ``saved`` (published), ``retention``, ``stale``, ``error``, ``done``.
Pause points (``pause_io.PauseIO``) stop the writer where the test wants to kill it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from cairn_agent.engine.dist import broadcast_object
from cairn_agent.engine.load import load_checkpoint_dir
from cairn_agent.engine.save import SaveTarget, save_sync
from cairn_agent.engine.sharded_dict import to_sharded_state_dict
from cairn_agent.errors import StaleGenerationError
from cairn_agent.storage import layout
from cairn_agent.storage.gc import collect_leftovers
from cairn_agent.storage.generation import claim_generation
from cairn_agent.storage.listing import committed_iterations
from cairn_agent.storage.resolve import load_candidates
from cairn_agent.storage.retention import RetentionPolicy, apply_retention, plan_retention
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor

from tests.crash.pause_io import PauseIO

log = logging.getLogger(__name__)

ROWS, COLS = 96, 64
"""Global shape of the row-sharded tensor (each rank holds ROWS / world rows)."""


# --- the state: a pure function of (iteration, rank, world) ---------------------------------


def global_weight(iteration: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(10_000 + iteration)
    return torch.randn(ROWS, COLS, generator=gen)


def expected_plain(iteration: int, rank: int, world: int) -> dict[str, Any]:
    """What a rank must hold after loading ``iteration``."""
    return {
        "w": global_weight(iteration).chunk(world)[rank].clone(),
        "b": torch.arange(17, dtype=torch.float64) * 0.5 + iteration,
        "h": (torch.arange(12, dtype=torch.float32) + iteration).to(torch.bfloat16),
        "obj": {"iteration": iteration, "rank": rank},
        "iteration": iteration,
        "note": f"iteration {iteration}",
    }


def sharded_state(iteration: int, rank: int, world: int, *, empty: bool = False) -> dict[str, Any]:
    """The sharded state dict saved at ``iteration`` (zeros / None with ``empty``: a template)."""
    plain = expected_plain(iteration, rank, world)
    w, obj = plain.pop("w"), plain.pop("obj")
    if empty:
        w = torch.zeros_like(w)
        plain = {
            k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else v for k, v in plain.items()
        }
    sd = to_sharded_state_dict(plain)  # b, h replicated; iteration, note common
    sd["w"] = ShardedTensor.from_rank_offsets("w", w, (0, rank, world))
    sd["obj"] = ShardedObject("obj", None if empty else obj, (world,), (rank,), replica_id=0)
    return sd


def mismatch(loaded: dict[str, Any], iteration: int, rank: int, world: int) -> str | None:
    """None when ``loaded`` is bit-exactly the state of ``iteration``, else what differs."""
    expected = expected_plain(iteration, rank, world)
    if set(loaded) != set(expected):
        return f"keys {sorted(loaded)} != {sorted(expected)}"
    for key, want in expected.items():
        got = loaded[key]
        if isinstance(want, torch.Tensor):
            same = (
                isinstance(got, torch.Tensor) and got.dtype == want.dtype and torch.equal(got, want)
            )
        else:
            same = got == want
        if not same:
            return f"{key}: loaded {got!r} differs from the state of iteration {iteration}"
    return None


# --- events -----------------------------------------------------------------------------------


class Events:
    """Append-only JSON lines; a kill can only truncate the last line, which readers skip."""

    def __init__(self, run_dir: Path, rank: int) -> None:
        self._path = run_dir / f"events-r{rank}.jsonl"

    def emit(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"ev": kind, "t": time.time(), **fields}) + "\n"
        with open(self._path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()


# --- the job ----------------------------------------------------------------------------------


class Job:
    """One rank's run: startup (claim, GC, resume check) then the save loop."""

    def __init__(self, rank: int, world: int, cfg: dict[str, Any]) -> None:
        self.rank, self.world, self.cfg = rank, world, cfg
        self.root = Path(cfg["root"])
        self.run_dir = Path(cfg["run_dir"])
        self.generation = int(cfg["generation"])
        self.step = int(cfg.get("step", 10))
        self.stop_after: int | None = cfg.get("stop_after")
        self.keep_last = int(cfg.get("keep_last", 2))
        self.events = Events(self.run_dir, rank)
        rules = cfg.get("pauses", {}).get(str(rank), [])
        self.io = PauseIO(str(self.run_dir), f"r{rank}", rules)
        self.resumed: int | None = None

    def startup(self) -> int:
        """Claim, GC, resume; returns the first iteration to save."""
        if self.rank == 0:
            if self.cfg.get("claim_at_start", True):
                claim_generation(self.root, self.generation, self.io)
            if self.cfg.get("gc_at_start", True):
                removed = collect_leftovers(self.root, self.io, below_generation=self.generation)
                self.events.emit("gc", removed=[p.name for p in removed])
        choice = None
        if self.rank == 0:
            candidates = load_candidates(self.root)
            if candidates:
                first = candidates[0]
                choice = (first.iteration, str(first.path), first.source)
        choice = broadcast_object(choice, 0)
        if choice is None:
            self.events.emit("resumed", iteration=None)
            return self.step
        iteration, path, source = choice
        loaded = load_checkpoint_dir(
            sharded_state(0, self.rank, self.world, empty=True), Path(path)
        )
        wrong = mismatch(loaded, iteration, self.rank, self.world)
        self.events.emit(
            "resumed", iteration=iteration, source=source, exact=wrong is None, wrong=wrong
        )
        if wrong is not None:
            raise RuntimeError(f"resume point {path} does not hold iteration {iteration}: {wrong}")
        self.resumed = iteration
        return iteration + self.step

    def iterations(self, start: int) -> range:
        stop = self.stop_after if self.stop_after is not None else 10**9
        return range(start, stop + 1, self.step)

    def target(self, iteration: int) -> SaveTarget:
        marker = json.dumps({"iteration": iteration}).encode("ascii")
        return SaveTarget(
            root=self.root,
            iteration=iteration,
            generation=self.generation,
            layout={"dp": self.world},
            iter_files={layout.TRAIN_STATE_FILENAME: marker},
            root_files={layout.LATEST_TRAIN_STATE_FILENAME: marker},
        )

    def retention(self, iteration: int) -> None:
        """Rank 0, after ``iteration`` is published: keep-last-N, like ``save_flow``."""
        if self.rank != 0:
            return
        protected = {iteration} | ({self.resumed} if self.resumed is not None else set())
        plan = plan_retention(
            committed_iterations(self.root),
            RetentionPolicy(keep_last=self.keep_last),
            protected=protected,
            newest_verified=iteration,
            max_iteration=iteration,
        )
        self.io.point(f"before_retention:{iteration}")
        try:
            deleted = apply_retention(self.root, plan, generation=self.generation, io=self.io)
        except StaleGenerationError as exc:
            self.events.emit("stale", where=f"retention:{iteration}", error=str(exc))
            raise
        self.events.emit("retention", iteration=iteration, deleted=deleted)

    def run_sync(self, start: int) -> None:
        for iteration in self.iterations(start):
            self.io.point(f"before_save:{iteration}")
            try:
                save_sync(
                    sharded_state(iteration, self.rank, self.world),
                    self.target(iteration),
                    io=self.io,
                )
            except StaleGenerationError as exc:
                self.events.emit("stale", where=f"save:{iteration}", error=str(exc))
                raise
            if self.rank == 0:
                self.events.emit("saved", iteration=iteration)
            self.retention(iteration)

    def run_async(self, start: int) -> None:
        from cairn_agent.async_save import AsyncRequest, AsyncSaveQueue
        from cairn_agent.async_save.settings import WriterSettings

        worker_rules = self.cfg.get("worker_pauses", {}).get(str(self.rank), [])
        worker_io = PauseIO(str(self.run_dir), f"w{self.rank}", worker_rules)
        queue = AsyncSaveQueue(
            persistent=True, io=self.io, worker_io=worker_io, writer=WriterSettings(nice=0)
        )
        for iteration in self.iterations(start):
            self.io.point(f"before_save:{iteration}")
            queue.schedule(
                AsyncRequest(
                    sharded_state_dict=sharded_state(iteration, self.rank, self.world),
                    target=self.target(iteration),
                    on_commit=lambda it=iteration: self.on_async_commit(it),
                )
            )
            self.events.emit("scheduled", iteration=iteration)
            self.io.point(f"after_schedule:{iteration}")
            queue.maybe_finalize(blocking=False)
        queue.close()

    def on_async_commit(self, iteration: int) -> None:
        if self.rank == 0:
            self.events.emit("saved", iteration=iteration)
        self.retention(iteration)


def main(rank: int, world: int, cfg: dict[str, Any]) -> int:
    """Run one rank; returns the exit status (the zygote's child exits with it)."""
    torch.set_num_threads(1)
    job = Job(rank, world, cfg)
    job.events.emit("start", pid=os.getpid(), pgid=os.getpgid(0), generation=job.generation)
    status = 0
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{cfg['store']}", rank=rank, world_size=world
        )
        start = job.startup()
        if cfg.get("mode", "sync") == "async":
            job.run_async(start)
        else:
            job.run_sync(start)
        job.events.emit("done")
    except StaleGenerationError:
        status = 3
    except BaseException as exc:  # noqa: BLE001 - reported to the test through the events
        job.events.emit("error", error=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc())
        status = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return status
