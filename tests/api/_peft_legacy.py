"""Rank bodies of the PEFT (adapter-only) and Megatron-LM checkpoint tests.

Module level so ``run_ranks`` can spawn them. Results travel as bytes (see ``_bodies.pack``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from cairn_agent import checkpointing
from cairn_agent.state.peft import LoRAAdapterFilter

from tests.api._bodies import pack
from tests.api._workload import Job, peek_random
from tests.helpers_api.legacy_fixture import write_megatron_lm_checkpoint

ADAPTER_KEYS = ("lora_a.weight", "lora_b.weight")
LEGACY_ITERATION = 42
LEGACY_PROGRESS = (1344, 2, 64, 4.2e12)
"""consumed train, skipped train and consumed valid samples, and flops of the legacy checkpoint."""


class AdapterNet(torch.nn.Module):
    """The workload's MLP as frozen-able ``base``, plus optional low-rank ``lora_a``/``lora_b``."""

    def __init__(self) -> None:
        super().__init__()
        self.base = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
        )
        self.lora_a: torch.nn.Linear | None = None
        self.lora_b: torch.nn.Linear | None = None

    def add_adapters(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)  # leaves the global RNG (checkpointed) alone
        self.lora_a = torch.nn.Linear(4, 2, bias=False)
        self.lora_b = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            for layer in (self.lora_a, self.lora_b):
                layer.weight.copy_(0.1 * torch.randn(layer.weight.shape, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x)
        if self.lora_a is not None and self.lora_b is not None:
            out = out + self.lora_b(self.lora_a(x))
        return out


class PeftJob(Job):
    """The workload job on an ``AdapterNet``; ``start_peft`` switches it to adapter training."""

    def __init__(self, rank: int, init_seed: int, **ckpt: Any) -> None:
        super().__init__(rank, init_seed, **ckpt)
        torch.manual_seed(init_seed)
        self.net = AdapterNet()
        self.model = self.net  # type: ignore[assignment]
        self._new_optimizer()

    def _new_optimizer(self) -> None:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=0.01)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0 / (1 + s))

    def start_peft(self, adapter_seed: int) -> None:
        """Add adapters, freeze the base, train adapters only and save adapter-only checkpoints."""
        self.net.add_adapters(adapter_seed)
        self.net.base.requires_grad_(False)
        self._new_optimizer()
        self.state.cfg.peft = LoRAAdapterFilter()

    def adam(self) -> dict[str, list[torch.Tensor]]:
        return {
            name: [self.optimizer.state[p][k].clone() for k in ("step", "exp_avg", "exp_avg_sq")]
            for name, p in self.model.named_parameters()
            if p.requires_grad
        }


def _snapshot(job: PeftJob) -> dict[str, Any]:
    ts = job.state.train_state
    return {
        "params": job.params(),
        "adam": job.adam(),
        "lr": job.scheduler.get_last_lr(),
        "draws": peek_random(),
        "progress": (ts.step, ts.consumed_train_samples, job.flops),
        "data_pos": job.data.pos,
    }


def peft_save_and_resume(rank: int, world: int, root_a: str, root_b: str) -> bytes:
    """Full base checkpoint in A; adapter-only fine-tuning checkpoint in B; resume base+B."""
    base_job = PeftJob(rank, 0, save=root_a)
    base_job.step()
    base_job.save()
    base = {k: v for k, v in base_job.params().items() if k.startswith("base.")}

    # Fine-tuning starts from A's weights (load holds nothing yet), then trains adapters only.
    tune = PeftJob(rank, 1, save=root_b, load=root_b, pretrained_checkpoint=root_a)
    pretrained = tune.load()
    tune.start_peft(adapter_seed=11)
    tune.step()
    tune.save()
    at_save = _snapshot(tune)

    # A fresh job: base weights from A (weights only), adapters attached, then the PEFT resume.
    resumed = PeftJob(rank, 2, load=root_b)
    checkpointing._load_model_weights_from_checkpoint(root_a, [resumed.model])
    resumed.start_peft(adapter_seed=22)
    before_resume = resumed.params()
    loaded = resumed.load()
    return pack(
        {
            "base": base,
            "pretrained": pretrained,
            "at_save": at_save,
            "before_resume": before_resume,
            "loaded": loaded,
            "resumed": _snapshot(resumed),
        }
    )


def legacy_tensors() -> dict[str, torch.Tensor]:
    """Model weights for the workload's MLP under its checkpoint keys, unlike any Job's init."""
    gen = torch.Generator().manual_seed(4242)
    shapes = {k: v.shape for k, v in Job(0, 0).model.state_dict().items()}
    return {key: torch.randn(shape, generator=gen) for key, shape in shapes.items()}


def load_megatron_lm(rank: int, world: int, root: str) -> bytes:
    """Write a Megatron-LM checkpoint with megatron-core, then resume from it through the facade."""
    tensors = legacy_tensors()
    draws_at_save = peek_random()  # the fixture saves the RNG state as it is now
    consumed, skipped, valid, flops = LEGACY_PROGRESS
    iteration_dir = write_megatron_lm_checkpoint(
        root,
        LEGACY_ITERATION,
        tensors=tensors,
        consumed_train_samples=consumed,
        skipped_train_samples=skipped,
        consumed_valid_samples=valid,
        num_floating_point_operations_so_far=flops,
        ckpt_fully_parallel_save=True,
    )
    job = Job(rank, 5, load=root)
    # Megatron-LM's default: one RNG state for all data-parallel ranks (rank 0's is saved).
    job.state.cfg.rng.data_parallel_random_init = False
    loaded = job.load()
    ts = job.state.train_state
    return pack(
        {
            "iteration_dir": str(Path(iteration_dir)),
            "tensors": tensors,
            "draws_at_save": draws_at_save,
            "loaded": loaded,
            "params": job.params(),
            "train_state": (
                ts.step,
                ts.consumed_train_samples,
                ts.skipped_train_samples,
                ts.consumed_valid_samples,
                ts.floating_point_operations_so_far,
            ),
            "optimizer_state": len(job.optimizer.state),
            "version": checkpointing.get_checkpoint_version(),
            "draws": peek_random(),
        }
    )
