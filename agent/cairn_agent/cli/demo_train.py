"""The training job of ``cairn demo``: a tiny data-parallel loop on CPU gloo ranks.

It checkpoints through the seed API (``cairn_agent.checkpointing``), the way
``examples/train_megatron_style.py`` does, with two additions the demo needs to show the cluster
side: rank 0 flushes its status reports at the moments the demo looks (after resuming, at exit),
and ``--hold`` pauses the ranks right after resuming until the demo releases them, so what the
operator did about the resume can be shown before new saves change it.

Run as ``python -m cairn_agent.cli.demo_train --save DIR ...``; it starts ``--world-size`` ranks.
Only the ranks import torch.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cairn_agent.errors import PreemptedExit

RANK0_PREFIX = "[rank 0] "
"""Lines the ranks print for the demo start with this (the demo shows only these)."""
HOLD_TIMEOUT_S = 300.0
LOADED_SUFFIX = ".loaded"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", type=Path, required=True, help="checkpoint root (save and load)")
    parser.add_argument("--steps", type=int, required=True, help="train until this step")
    parser.add_argument("--save-interval", type=int, required=True, help="save every N steps")
    parser.add_argument("--keep", type=int, default=2, help="keep the newest K checkpoints")
    parser.add_argument("--world-size", type=int, default=2, help="ranks to start")
    parser.add_argument(
        "--pace", type=float, default=0.0, help="seconds each step takes at least (a slower job)"
    )
    parser.add_argument(
        "--hold",
        type=Path,
        help=f"after resuming, create HOLD{LOADED_SUFFIX} and wait until HOLD exists",
    )
    return parser.parse_args(argv)


def say(message: str) -> None:
    import torch.distributed as dist

    if dist.get_rank() == 0:
        print(f"{RANK0_PREFIX}{message}", flush=True)


class _Brief(logging.Formatter):
    """One line per record: a message with a traceback inside keeps its first and last line."""

    def format(self, record: logging.LogRecord) -> str:
        lines = record.getMessage().splitlines() or [""]
        text = lines[0] if len(lines) == 1 else f"{lines[0]} [...] {lines[-1].strip()}"
        return f"{RANK0_PREFIX}{record.levelname} {text}"


def _logging_for_demo() -> None:
    """Cairn's warnings (a refused checkpoint, a fallback) go to stdout, marked as rank 0's."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Brief())
    cairn = logging.getLogger("cairn_agent")
    cairn.addHandler(handler)
    cairn.setLevel(logging.WARNING)
    cairn.propagate = False


def _build(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    import torch

    from cairn_agent.config import CheckpointConfig, ConfigContainer
    from cairn_agent.state.train import GlobalState

    torch.manual_seed(0)  # identical initial replicas on every rank
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    checkpoint = CheckpointConfig(
        save=str(args.save),
        load=str(args.save),
        save_interval=args.save_interval,
        most_recent_k=args.keep,
        async_save=False,
        # Checksum every file of a checkpoint before loading it: a flipped byte inside a
        # tensor would otherwise load silently (sizes still match, and DCP does not hash).
        verify_integrity=True,
    )
    return model, optimizer, None, GlobalState(ConfigContainer(checkpoint=checkpoint))


def _train_step(model: Any, optimizer: Any, step: int) -> float:
    import torch
    import torch.distributed as dist

    # The data of a step is a pure function of (step, rank): resuming needs no loader state.
    gen = torch.Generator().manual_seed(10_000 * dist.get_rank() + step)
    x = torch.randn(8, 16, generator=gen)
    loss = torch.nn.functional.mse_loss(model(x), x[:, :4].sum(dim=1, keepdim=True))
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    for param in model.parameters():  # data parallel: average gradients over ranks
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= dist.get_world_size()
    optimizer.step()
    return float(loss)


def _flush_reports(state: Any) -> None:
    """Send rank 0's pending status reports now (they are throttled, and lost at exit)."""
    from cairn_agent.cluster import reporting

    target = reporting.reporter(state)
    if target is not None and not target.flush(timeout=30.0):
        say("WARNING status reports still unsent after 30 s")


def _hold(state: Any, hold: Path) -> None:
    """Rank 0 flags that it resumed and waits for the release file; the others wait for it."""
    import torch.distributed as dist

    if dist.get_rank() == 0:
        _flush_reports(state)
        Path(f"{hold}{LOADED_SUFFIX}").touch()
        deadline = time.monotonic() + HOLD_TIMEOUT_S
        while not hold.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"nobody created {hold} within {HOLD_TIMEOUT_S:.0f}s")
            time.sleep(0.1)
    dist.barrier()


def train(args: argparse.Namespace) -> None:
    """One rank's loop: resume, train to ``--steps``, save when the effective policy says so.

    The cadence comes from ``checkpointing.save_due``: the script's ``--save-interval`` until the
    Checkpoint's spec sets one, then the spec's, switched at the same step on every rank.
    """
    from cairn_agent.checkpointing import load_checkpoint, save_checkpoint, save_due

    model, optimizer, scheduler, state = _build(args)
    start, flops = load_checkpoint(state, [model], optimizer, scheduler)
    state.train_state.step = start
    say(f"resumed from iteration {start}" if start else "no checkpoint yet: starting at step 0")
    if args.hold is not None:
        _hold(state, args.hold)
    saved: list[int] = []
    last_loss = float("nan")
    for step in range(start + 1, args.steps + 1):
        began = time.monotonic()
        loss = _train_step(model, optimizer, step)
        state.train_state.step = step
        flops += 1_000
        state.train_state.floating_point_operations_so_far = flops
        try:
            due = save_due(state)
        except PreemptedExit as stop:
            # Cairn made the final save at this boundary; say what this run saved, then exit 143.
            say(f"{stop} (exit {stop.code}); saved before: {saved}")
            raise
        if due.persistent:
            save_checkpoint(state, [model], optimizer, scheduler, int(flops))
        if due.persistent or due.saved:
            saved.append(step)
        last_loss = loss
        time.sleep(max(0.0, args.pace - (time.monotonic() - began)))
    say(f"trained steps {start + 1}..{args.steps} (loss {last_loss:.4f}), saved {saved}")
    _flush_reports(state)


def rank_main(rank: int, world_size: int, store: str, args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    if rank == 0:
        _logging_for_demo()
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        train(args)
    finally:
        dist.destroy_process_group()


def _forward_sigterm(procs: list[Any]) -> None:
    """A SIGTERM to the launcher (what the kubelet sends a container) reaches every rank, as
    torchrun forwards it; the ranks then save the step they reached and exit 143."""

    def forward(signum: int, frame: Any) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="cairn-demo-store-") as tmp:
        store = str(Path(tmp) / "store")
        procs = [
            ctx.Process(target=rank_main, args=(r, args.world_size, store, args))
            for r in range(args.world_size)
        ]
        for proc in procs:
            proc.start()
        _forward_sigterm(procs)
        for proc in procs:
            proc.join()
    failed = {r: p.exitcode for r, p in enumerate(procs) if p.exitcode != 0}
    if failed and set(failed.values()) == {PreemptedExit.CODE}:
        print("every rank saved and stopped on SIGTERM", file=sys.stderr)
        return PreemptedExit.CODE
    if failed:
        print(f"ranks failed (rank: exit code): {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
