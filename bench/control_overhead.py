"""What following a Checkpoint costs the training loop: step time with one over without.

The example loop (``examples/train_megatron_style.py``: its model, its ``train_step``, its
``save_due`` / ``save_checkpoint`` / ``maybe_finalize_async_save`` per step) runs on 2 gloo CPU
ranks, in one run, with two ``GlobalState``s side by side:

- **with**: the job names a Checkpoint in a sandbox API server (``CAIRN_CHECKPOINT``): rank 0
  watches it and reports status, and every step boundary is an agreement of the ranks (one
  all-reduce of three integers, a broadcast only when the policy changed);
- **without**: the same loop, no Checkpoint (every Cairn control call is a no-op);
- **all_reduce_floor**: *without* plus one bare all-reduce of three integers per step, the
  least any per-step agreement of the ranks costs (``one_all_reduce_us_per_step``): what is
  left of the overhead beyond it is Cairn's own Python.

Both states train identical replicas (same model, same data, same save interval) in blocks of
``BLOCK_STEPS`` steps that alternate ABBA-wise over ``REPS`` repetitions, so drift of a shared,
busy machine hits both alike. Each step is timed on each rank; a condition's step time is the
median over its steps of the slower rank's time (saves included, so the median is a step
without one). Writes ``bench/results/control.json`` with ``step_time_ratio`` = with / without
(goal <= 1.01) and the absolute overhead per step. Run: ``python -m bench.control_overhead``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "control.json"
EXAMPLE = REPO / "examples" / "train_megatron_style.py"
WORLD = 2
REPS = int(os.environ.get("CAIRN_BENCH_CONTROL_REPS", "20"))
BLOCK_STEPS = 100
SAVE_INTERVAL = 50
GOAL = 1.01
CHECKPOINT = "bench-control"
CONDITIONS = ("with", "without", "all_reduce_floor")


def _example() -> ModuleType:
    """The example script as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("train_megatron_style", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Loop:
    """One condition: the example's model, optimizer, scheduler and GlobalState, and its step."""

    def __init__(self, example: ModuleType, root: Path) -> None:
        from cairn_agent.checkpointing import load_checkpoint

        self.example = example
        args = argparse.Namespace(
            save=root, save_interval=SAVE_INTERVAL, keep=2, async_save=False, steps=0
        )
        self.model, self.optimizer, self.scheduler, self.state = example.build(args)
        self.step, self.flops = load_checkpoint(
            self.state, [self.model], self.optimizer, self.scheduler
        )

    def run(self, steps: int, *, extra_all_reduce: bool = False) -> list[float]:
        """``steps`` steps of the example loop; each one's wall time. ``extra_all_reduce``
        adds one all-reduce of three integers per step: the floor of any per-step agreement."""
        import torch
        import torch.distributed as dist
        from cairn_agent.checkpointing import maybe_finalize_async_save, save_checkpoint, save_due

        times = []
        state = self.state
        for _ in range(steps):
            started = time.perf_counter()
            self.step += 1
            self.example.train_step(self.model, self.optimizer, self.scheduler, self.step)
            state.train_state.step = self.step
            self.flops += 1_000
            state.train_state.floating_point_operations_so_far = self.flops
            if save_due(state).persistent:
                save_checkpoint(state, [self.model], self.optimizer, self.scheduler, self.flops)
            maybe_finalize_async_save(state, state.cfg.checkpoint)
            if extra_all_reduce:
                dist.all_reduce(torch.zeros(3, dtype=torch.int64), op=dist.ReduceOp.MAX)
            times.append(time.perf_counter() - started)
        return times

    def close(self) -> None:
        from cairn_agent.checkpointing import maybe_finalize_async_save

        maybe_finalize_async_save(
            self.state, self.state.cfg.checkpoint, blocking=True, terminate=True
        )


def _rank(rank: int, store: str, workdir: str, env: dict[str, str], queue: Any) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
        example = _example()
        # The governed state is created (and its control started) while the job names its
        # Checkpoint; the plain one after the name is gone, so it follows nothing.
        os.environ.update(env)
        governed = Loop(example, Path(workdir) / "with")
        for name in env:
            del os.environ[name]
        plain = Loop(example, Path(workdir) / "without")
        times: dict[str, list[float]] = {name: [] for name in CONDITIONS}
        for loop in (governed, plain):  # warm-up: first-touch costs, the first saves
            loop.run(SAVE_INTERVAL + 1)
        for rep in range(REPS):
            order = CONDITIONS if rep % 2 == 0 else CONDITIONS[::-1]
            for condition in order:
                loop = governed if condition == "with" else plain
                dist.barrier()
                times[condition].extend(
                    loop.run(BLOCK_STEPS, extra_all_reduce=condition == "all_reduce_floor")
                )
        governed.close()
        plain.close()
        dist.barrier()
        dist.destroy_process_group()
        queue.put((rank, times))
    except BaseException:  # noqa: BLE001 - the launcher reports it
        import traceback

        queue.put((rank, {"error": traceback.format_exc()}))


def _manifest() -> dict[str, Any]:
    """The job's Checkpoint: the example's own interval, so both conditions save alike."""
    persistent = {"claimName": "ckpt-pvc", "mountPath": "/ckpt", "path": f"/ckpt/{CHECKPOINT}"}
    return {
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "Checkpoint",
        "metadata": {"name": CHECKPOINT, "namespace": "default"},
        "spec": {
            "storage": {"persistent": persistent},
            "save": {"interval": SAVE_INTERVAL},
            "retention": {"keepLast": 2},
        },
    }


def _slowest(per_rank: list[dict[str, list[float]]], condition: str) -> list[float]:
    """Per step, the slower rank's time (a data-parallel step is as slow as its slowest rank)."""
    return [max(values) for values in zip(*(r[condition] for r in per_rank), strict=True)]


def measure() -> dict[str, Any]:
    from cairn_operator.testing import Sandbox

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with Sandbox() as sandbox, tempfile.TemporaryDirectory(prefix="cairn-bench-control-") as tmp:
        sandbox.create(_manifest())
        env = {
            "CAIRN_CHECKPOINT": f"default/{CHECKPOINT}",
            "KUBECONFIG": str(sandbox.write_kubeconfig(Path(tmp) / "kubeconfig")),
        }
        store = str(Path(tmp) / "store")
        procs = [ctx.Process(target=_rank, args=(r, store, tmp, env, queue)) for r in range(WORLD)]
        for proc in procs:
            proc.start()
        results = dict(queue.get(timeout=1800) for _ in range(WORLD))
        for proc in procs:
            proc.join(60)
        status = sandbox.get("checkpoints", CHECKPOINT).get("status") or {}
    errors = [r["error"] for r in results.values() if "error" in r]
    if errors:
        raise RuntimeError("\n".join(errors))
    per_rank = [results[r] for r in range(WORLD)]
    with_s = statistics.median(_slowest(per_rank, "with"))
    without_s = statistics.median(_slowest(per_rank, "without"))
    floor_s = statistics.median(_slowest(per_rank, "all_reduce_floor"))
    applied = (status.get("appliedPolicy") or {}).get("observedGeneration")
    return {
        "step_time_ratio": round(with_s / without_s, 4),
        "goal": GOAL,
        "meets_goal": with_s / without_s <= GOAL,
        "median_step_s_with_checkpoint": round(with_s, 6),
        "median_step_s_without": round(without_s, 6),
        "overhead_us_per_step": round((with_s - without_s) * 1e6, 1),
        "one_all_reduce_us_per_step": round((floor_s - without_s) * 1e6, 1),
        "steps_per_condition": REPS * BLOCK_STEPS,
        "reps": REPS,
        "block_steps": BLOCK_STEPS,
        "world": WORLD,
        "save_interval": SAVE_INTERVAL,
        "loop": "examples/train_megatron_style.py (gloo, CPU)",
        "checkpoint_followed": applied == 1,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    result = measure()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not result["checkpoint_followed"]:
        print("warning: the governed state never reported its applied policy", file=sys.stderr)


if __name__ == "__main__":
    main()
