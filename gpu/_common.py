"""What every check shares: its verdict, the device it runs on, bit-exact comparison.

A check runs in a process of its own holding a one-rank process group (``gpu._rank``): NCCL
when CUDA is available, gloo otherwise. Tensors go on the device the group's backend asks for
(Cairn's own ``collective_device``), never on a hard-coded one, so each check reads the same
on both machines and only its skipped parts differ.
"""

from __future__ import annotations

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
        }


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
