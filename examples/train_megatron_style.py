"""A tiny data-parallel training loop that checkpoints with Cairn the way Megatron-Bridge does.

It uses only the seed API (``cairn_agent.checkpointing``: ``CheckpointConfig``, ``GlobalState``,
``save_checkpoint``, ``load_checkpoint``, ``maybe_finalize_async_save``), so the same loop runs
with Megatron-Bridge's module swapped in. Run it twice with more steps the second time and it
resumes where the first run stopped::

    python examples/train_megatron_style.py --save /tmp/cairn-example --steps 20
    python examples/train_megatron_style.py --save /tmp/cairn-example --steps 40   # resumes at 20
    cairn inspect /tmp/cairn-example

Launching: under ``torchrun`` each process is one rank and joins through ``env://``
(``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``, set by torchrun)::

    torchrun --standalone --nproc-per-node 2 examples/train_megatron_style.py --save /tmp/run

run as a plain script it starts ``--world-size`` CPU ranks itself. Everything runs on CPU with
the gloo backend. The last line names a fingerprint of the parameters: two runs that reach the
same step with the same fingerprint trained bit-identically.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from cairn_agent.checkpointing import (
    load_checkpoint,
    maybe_finalize_async_save,
    save_checkpoint,
    save_due,
)
from cairn_agent.config import CheckpointConfig, ConfigContainer
from cairn_agent.state.train import GlobalState

BATCH = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", type=Path, required=True, help="checkpoint root (save and load)")
    parser.add_argument("--steps", type=int, default=20, help="train until this step")
    parser.add_argument("--save-interval", type=int, default=10, help="save every N steps")
    parser.add_argument("--keep", type=int, default=3, help="keep the newest K checkpoints")
    parser.add_argument("--async-save", action="store_true", help="save in the background")
    parser.add_argument("--world-size", type=int, default=2, help="ranks to start (no torchrun)")
    return parser.parse_args(argv)


def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The data of a step is a pure function of (step, rank): resuming needs no loader state."""
    gen = torch.Generator().manual_seed(10_000 * rank + step)
    x = torch.randn(BATCH, 16, generator=gen)
    return x, x[:, :4].sum(dim=1, keepdim=True)


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, Any, Any, GlobalState]:
    torch.manual_seed(0)  # identical initial replicas on every rank
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1.0 + 0.05 * s))
    checkpoint = CheckpointConfig(
        save=str(args.save),
        load=str(args.save),
        save_interval=args.save_interval,
        most_recent_k=args.keep,
        async_save=args.async_save,
    )
    return model, optimizer, scheduler, GlobalState(ConfigContainer(checkpoint=checkpoint))


def train_step(model: torch.nn.Module, optimizer: Any, scheduler: Any, step: int) -> float:
    x, y = batch(step, dist.get_rank())
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    for param in model.parameters():  # data parallel: average gradients over ranks
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= dist.get_world_size()
    optimizer.step()
    scheduler.step()
    return float(loss)


def train(args: argparse.Namespace) -> None:
    """One rank's loop: resume, train to ``--steps``, save when a save is due.

    ``save_due`` answers from the effective policy: ``--save-interval`` until the job's
    Checkpoint (``CAIRN_CHECKPOINT``) sets ``spec.save.interval``, which then applies from the
    next step on every rank. It also answers the cluster's save requests and SIGTERM itself.
    """
    model, optimizer, scheduler, state = build(args)
    start, flops = load_checkpoint(state, [model], optimizer, scheduler)
    state.train_state.step = start
    log(f"resuming from iteration {start}" if start else "no checkpoint yet: starting at step 0")
    for step in range(start + 1, args.steps + 1):
        loss = train_step(model, optimizer, scheduler, step)
        state.train_state.step = step
        flops += 1_000
        state.train_state.floating_point_operations_so_far = flops
        if save_due(state).persistent:
            save_checkpoint(state, [model], optimizer, scheduler, int(flops))
            done = "scheduled" if args.async_save else "saved"
            log(f"step {step}: loss {loss:.5f}, checkpoint {done}")
        maybe_finalize_async_save(state, state.cfg.checkpoint)
    # Drain the background saves before exiting, or the last one is lost.
    maybe_finalize_async_save(state, state.cfg.checkpoint, blocking=True, terminate=True)
    log(f"done at step {args.steps}; parameters sha256 {fingerprint(model)}")


def fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def log(message: str) -> None:
    if dist.get_rank() == 0:
        print(f"[rank 0/{dist.get_world_size()}] {message}", flush=True)


def rank_main(rank: int, world_size: int, store: str, args: argparse.Namespace) -> None:
    """Entry of a rank this script started itself (no torchrun)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        train(args)
    finally:
        dist.destroy_process_group()


def main() -> None:
    args = parse_args()
    if "RANK" in os.environ and "MASTER_ADDR" in os.environ:  # launched by torchrun
        torch.set_num_threads(1)  # torchrun starts one process per rank: don't oversubscribe
        dist.init_process_group("gloo", init_method="env://")
        try:
            train(args)
        finally:
            dist.destroy_process_group()
        return
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="cairn-example-store-") as tmp:
        store = str(Path(tmp) / "store")
        procs = [
            ctx.Process(target=rank_main, args=(r, args.world_size, store, args))
            for r in range(args.world_size)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
    failed = [r for r, proc in enumerate(procs) if proc.exitcode != 0]
    if failed:
        raise SystemExit(
            f"ranks {failed} failed (exit codes {[procs[r].exitcode for r in failed]})"
        )


if __name__ == "__main__":
    main()
