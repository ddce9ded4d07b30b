"""The one adapter over run configs: Cairn's ``ConfigContainer`` or a Megatron-Bridge one.

Bridge's configs differ between releases (fields appear, sections are optional), so every
probe of a config of unknown shape happens here, once, and the flows read typed attributes.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn_agent.config import ConfigContainer
from cairn_agent.storage import layout

logger = logging.getLogger(__name__)


def _field(obj: Any, name: str, default: Any) -> Any:
    value = getattr(obj, name, default) if obj is not None else default
    return default if value is None else value


@dataclass(frozen=True, kw_only=True)
class RunConfigView:
    """What save and load need to know about the run, read from its config."""

    tensor_parallel: int
    """Tensor-model-parallel size of the model (1 when the config has no model section)."""
    pipeline_parallel: int
    """Pipeline-model-parallel size of the model."""
    distributed_optimizer: bool
    """Whether the optimizer is megatron-core's distributed optimizer."""
    optim_fully_reshardable: bool
    """``dist_ckpt_optim_fully_reshardable`` (newer Bridge releases only)."""
    optim_reshardable_mem_efficient: bool
    """``distrib_optim_fully_reshardable_mem_efficient`` (newer Bridge releases only)."""
    writers_per_rank: int
    """Shard files each rank writes (``storage_writers_per_rank``; older configs: one)."""
    verify_integrity: bool
    """Deep (checksum) verification of a checkpoint before loading it."""
    peft: Any
    """The PEFT config, or None for a full-model run."""
    dataloader_save: str | None
    """Configured dataloader-state save directory, if any."""
    dataloader_load: str | None
    """Configured dataloader-state load directory, if any."""

    @property
    def layout(self) -> tuple[int, int]:
        """``(tp, pp)`` of the running model."""
        return (self.tensor_parallel, self.pipeline_parallel)


def view(cfg: Any) -> RunConfigView:
    """Read ``cfg`` (Cairn's or Bridge's ``ConfigContainer``) once."""
    ckpt = cfg.checkpoint
    model = getattr(cfg, "model", None)
    dataset = getattr(cfg, "dataset", None)
    return RunConfigView(
        tensor_parallel=int(_field(model, "tensor_model_parallel_size", 1)),
        pipeline_parallel=int(_field(model, "pipeline_model_parallel_size", 1)),
        distributed_optimizer=bool(
            _field(getattr(cfg, "optimizer", None), "use_distributed_optimizer", False)
        ),
        optim_fully_reshardable=bool(_field(ckpt, "dist_ckpt_optim_fully_reshardable", False)),
        optim_reshardable_mem_efficient=bool(
            _field(ckpt, "distrib_optim_fully_reshardable_mem_efficient", False)
        ),
        writers_per_rank=int(_field(ckpt, "storage_writers_per_rank", 1)),
        verify_integrity=bool(_field(ckpt, "verify_integrity", False)),
        peft=getattr(cfg, "peft", None),
        dataloader_save=_field(dataset, "dataloader_save", None),
        dataloader_load=_field(dataset, "dataloader_load", None),
    )


def run_config_bytes(cfg: Any) -> bytes | None:
    """``run_config.yaml`` content of our ``ConfigContainer`` or of a Bridge one."""
    if isinstance(cfg, ConfigContainer):
        return cfg.to_yaml().encode("utf-8")
    if not callable(getattr(cfg, "to_yaml", None)):
        logger.warning("config %s has no to_yaml(); run_config.yaml not saved", type(cfg).__name__)
        return None
    # Bridge's ConfigContainer.to_yaml(path) writes a file (and prints when given none).
    with tempfile.TemporaryDirectory(prefix="cairn-run-config-") as tmp:
        path = Path(tmp) / layout.RUN_CONFIG_FILENAME
        cfg.to_yaml(str(path))
        return path.read_bytes()
