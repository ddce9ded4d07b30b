"""What every check shares: its verdict, the device it runs on, bit-exact comparison.

A check runs in a process of its own holding a one-rank process group (``gpu._rank``): NCCL
when CUDA is available, gloo otherwise. Tensors go on the device the group's backend asks for
(Cairn's own ``collective_device``), never on a hard-coded one, so each check reads the same
on both machines and only its skipped parts differ.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

Status = Literal["pass", "fail", "skip"]


@dataclass(kw_only=True)
class Verdict:
    """What one check found: parts that held or not, parts skipped (and why), figures."""

    parts: dict[str, bool] = field(default_factory=dict)
    """Sub-check name -> whether it held."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Sub-check name -> why it cannot run on this machine."""
    figures: dict[str, Any] = field(default_factory=dict)
    """Measured numbers and facts worth recording (sizes, timings, devices)."""
    lines: list[str] = field(default_factory=list)
    """One line of result per bounded part (``bounded``), printed under the check's line."""

    def check(self, name: str, held: bool) -> bool:
        """Record sub-check ``name``; returns ``held`` so callers can branch on it."""
        self.parts[name] = bool(held)
        return bool(held)

    def skip(self, name: str, reason: str) -> None:
        self.skipped[name] = reason

    @property
    def status(self) -> Status:
        if not all(self.parts.values()):
            return "fail"
        return "pass" if self.parts else "skip"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "parts": self.parts,
            "skipped": self.skipped,
            "figures": self.figures,
            "lines": self.lines,
        }

    def report(self) -> None:
        """Print the verdict as the last line on stdout, where the driver looks for it."""
        from gpu._rank import RESULT_PREFIX

        sys.stdout.flush()
        print(RESULT_PREFIX + json.dumps(self.to_json(), default=str), flush=True)


def bound_s(gpu_s: float) -> float:
    """A part's time bound: doubled without CUDA, as the driver doubles each check's."""
    return gpu_s * (1 if on_gpu() else 2)


@contextmanager
def bounded(verdict: Verdict, name: str, seconds: float) -> Iterator[list[str]]:
    """Run one part of a check under a time bound, and give it one line of result.

    The body appends what it showed to the yielded list (joined into the line). Past the
    bound (a hung collective cannot be interrupted) a watchdog records the part as failed,
    dumps every thread's stack to the log, prints the verdict so far and ends the process,
    so the driver still names the part that hung.
    """
    done = threading.Event()

    def watchdog() -> None:
        if done.wait(seconds):
            return
        verdict.check(f"{name}: finished within {seconds:.0f}s", False)
        verdict.lines.append(f"{name}: TIMED OUT after {seconds:.0f}s")
        faulthandler.dump_traceback(sys.stderr)
        verdict.report()
        os._exit(0)

    threading.Thread(target=watchdog, name=f"bound-{name}", daemon=True).start()
    before = set(verdict.parts)
    shown: list[str] = []
    started = time.perf_counter()
    raised: BaseException | None = None
    try:
        yield shown
    except BaseException as exc:  # recorded by gpu._rank as the check's failure
        raised = exc
        raise
    finally:
        done.set()
        took = time.perf_counter() - started
        verdict.figures.setdefault("seconds", {})[name] = round(took, 2)
        failed = [p for p, held in verdict.parts.items() if p not in before and not held]
        if raised is not None:
            failed.append(f"raised {type(raised).__name__}: {raised}"[:200])
        outcome = "FAILED " + "; ".join(failed) if failed else "ok"
        detail = f", {', '.join(shown)}" if shown and not failed else ""
        verdict.lines.append(f"{name}: {outcome}{detail} ({took:.1f}s, bound {seconds:.0f}s)")


def device() -> torch.device:
    """The device the default process group's backend wants tensors on (nccl -> cuda)."""
    from cairn_agent.engine.device import collective_device

    return collective_device()


def on_gpu() -> bool:
    return device().type == "cuda"


def synchronize() -> None:
    if on_gpu():
        torch.cuda.synchronize()


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same keys, and per key the same dtype, shape and bits (compared on the same device)."""
    if a.keys() != b.keys():
        return False
    return all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k].to(a[k]))
        for k in a
    )


def devices_of(tensors: dict[str, torch.Tensor]) -> list[str]:
    return sorted({str(t.device) for t in tensors.values()})


def randn(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Seeded random values made on the CPU (same bits everywhere), then moved to ``device()``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(dtype).to(device())
