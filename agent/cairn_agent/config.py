"""Typed configuration of the seed-API facade (Megatron-Bridge field names and defaults).

``CheckpointConfig`` mirrors Megatron-Bridge's ``CheckpointConfig`` field for field so a Bridge
user can construct it with the same keywords. The other dataclasses hold the few pieces of the
rest of a Bridge ``ConfigContainer`` that save and load read (RNG, parallel layout, optimizer,
dataset paths). Every dataclass validates itself in ``__post_init__`` and says what to change.

The dataclasses are mutable on purpose: Bridge training scripts set fields after construction
(e.g. ``cfg.checkpoint.load = ...``); call ``finalize()`` to re-validate after such edits.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

NonPersistentType = Literal["global", "local"]
StrictHandling = Literal[
    "assume_ok_unexpected",
    "log_unexpected",
    "log_all",
    "raise_unexpected",
    "raise_all",
    "return_unexpected",
    "return_all",
    "ignore_all",
]
_STRICTNESS_VALUES = frozenset(StrictHandling.__args__)  # type: ignore[attr-defined]
SUPPORTED_CKPT_FORMATS = ("torch_dist",)


def _positive_or_none(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be a positive number of steps or None, got {value}")


IoPriority = Literal["idle", "low", "normal"]
"""``idle``: the disk serves the writer only when nobody else asks (CFQ/BFQ idle class);
``low``: best-effort class at its lowest level; ``normal``: unchanged."""
CpuAffinity = Literal["auto", "inherit"]
_IO_PRIORITIES = ("idle", "low", "normal")


@dataclass(frozen=True, kw_only=True)
class WriterSettings:
    """Priority and placement of one rank's async writer process."""

    nice: int = 10
    """Added CPU niceness (0..19): the writer loses to training threads for a core."""
    io_priority: IoPriority = "low"
    """I/O scheduling class of the writer (``idle``, ``low`` or ``normal``)."""
    cpu_affinity: CpuAffinity | tuple[int, ...] = "auto"
    """``auto``: pin the writer to cores beyond those training threads need, when there are
    any (otherwise ``inherit``); ``inherit``: the training process's cores; or explicit core
    ids, each one this process may run on."""

    def __post_init__(self) -> None:
        valid_int = isinstance(self.nice, int) and not isinstance(self.nice, bool)
        if not valid_int or not 0 <= self.nice <= 19:
            raise ValueError(
                f"WriterSettings.nice={self.nice!r}: use an int in 0..19 (a process may only "
                "lower its own priority; 10 is the default)"
            )
        if self.io_priority not in _IO_PRIORITIES:
            raise ValueError(
                f"WriterSettings.io_priority={self.io_priority!r}: use one of {_IO_PRIORITIES}"
            )
        if isinstance(self.cpu_affinity, str):
            if self.cpu_affinity not in ("auto", "inherit"):
                raise ValueError(
                    f"WriterSettings.cpu_affinity={self.cpu_affinity!r}: use 'auto', 'inherit' "
                    "or a tuple of core ids"
                )
            return
        _check_cores(tuple(self.cpu_affinity))

    def worker_cores(self, training_threads: int, local_ranks: int) -> tuple[int, ...] | None:
        """The cores the writer should run on, or None to inherit the training process's."""
        if self.cpu_affinity == "inherit":
            return None
        if isinstance(self.cpu_affinity, tuple):
            return self.cpu_affinity
        allowed = sorted(os.sched_getaffinity(0))
        spare = allowed[training_threads * local_ranks :]
        # Every local rank's writer shares the spare cores: writes are mostly waits on the
        # disk, so one spare core keeps up with several writers.
        return tuple(spare) or None


def _check_cores(cores: tuple[int, ...]) -> None:
    allowed = os.sched_getaffinity(0)
    if not cores or any(isinstance(c, bool) or not isinstance(c, int) for c in cores):
        raise ValueError(
            f"WriterSettings.cpu_affinity={cores!r}: give a non-empty tuple of int core ids, "
            "'auto' or 'inherit'"
        )
    outside = sorted(set(cores) - allowed)
    if outside:
        raise ValueError(
            f"WriterSettings.cpu_affinity: cores {outside} are not available to this process "
            f"(allowed: {sorted(allowed)}); pick cores from that set or use 'auto'"
        )


@dataclass(kw_only=True)
class CheckpointConfig:
    """What to save, where, how often, and what to load (Megatron-Bridge ``CheckpointConfig``)."""

    save: str | None = None
    """Root directory of persistent checkpoints; None disables saving."""
    save_interval: int | None = None
    """Save a persistent checkpoint every this many steps (``step % save_interval == 0``)."""
    most_recent_k: int = -1
    """Keep only the newest k committed persistent checkpoints; -1 keeps all."""
    save_optim: bool = True
    """Save optimizer and LR-scheduler state."""
    save_rng: bool = True
    """Save the python/numpy/torch RNG states."""
    load: str | None = None
    """Root directory (or one iteration directory) to resume from; None starts fresh."""
    load_optim: bool = True
    """Restore optimizer and LR-scheduler state when resuming."""
    load_main_params_from_ckpt: bool = False
    """Take fp32 main params from the checkpoint's model weights (needs load_optim=False)."""
    load_rng: bool = True
    """Restore RNG states when resuming (skipped when the TP/PP layout changed)."""
    non_persistent_save_interval: int | None = None
    """Save a non-persistent checkpoint every this many steps."""
    non_persistent_ckpt_type: NonPersistentType | None = None
    """``"global"`` (same format, separate root) or ``"local"`` (node-local, nvidia-resiliency-ext)."""
    non_persistent_global_ckpt_dir: str | None = None
    """Root of global non-persistent checkpoints; default ``<save>/non_persistent``."""
    non_persistent_local_ckpt_dir: str | None = None
    """Node-local directory of local non-persistent checkpoints; ``{node}`` in it becomes the
    node's name (``$CAIRN_LOCAL_DIR``, when set, overrides it per node)."""
    non_persistent_local_ckpt_algo: Literal["fully_parallel", "atomic"] = "fully_parallel"
    """Algorithm nvidia-resiliency-ext uses to build local checkpoints."""
    finetune: bool = False
    """Load weights only: no optimizer, no RNG, and the step restarts at 0."""
    pretrained_checkpoint: str | None = None
    """Weights to finetune from when ``load`` holds no resumable checkpoint."""
    ckpt_step: int | None = None
    """Load exactly this iteration instead of the tracker's (needs ``load``)."""
    use_checkpoint_args: bool = False
    """Megatron-LM compatibility flag; accepted and ignored."""
    exit_on_missing_checkpoint: bool = False
    """Raise ``CheckpointNotFoundError`` instead of starting fresh when nothing can be loaded."""
    ckpt_format: Literal["torch_dist"] = "torch_dist"
    """On-disk format; Cairn writes and reads ``torch_dist``."""
    ckpt_convert_format: str | None = None
    """Megatron-LM conversion target format; accepted for compatibility, not used."""
    ckpt_convert_save: str | None = None
    """Megatron-LM conversion output directory; accepted for compatibility, not used."""
    fully_parallel_save: bool = True
    """Spread the writing of replicated shards over data-parallel ranks."""
    async_save: bool = False
    """Write tensors in a background worker; commit happens at ``maybe_finalize_async_save``."""
    use_persistent_ckpt_worker: bool = True
    """Keep one background worker process alive between async saves (needed by async_save)."""
    fully_parallel_load: bool = False
    """Spread the reading of replicated shards over data-parallel ranks."""
    ckpt_assume_constant_structure: bool = False
    """Reuse save plans between saves, assuming the state-dict structure never changes."""
    strict_fsdp_dtensor_load: bool = False
    """Strict key matching for fsdp_dtensor loads; accepted for compatibility."""
    dist_ckpt_strictness: StrictHandling = "assume_ok_unexpected"
    """How key mismatches between the checkpoint and the model are handled at load."""
    dist_ckpt_optim_fully_reshardable: bool = False
    """Store the distributed optimizer in a layout reshardable across TP/PP."""
    distrib_optim_fully_reshardable_mem_efficient: bool = False
    """Memory-efficient variant of the fully reshardable optimizer layout."""
    save_tokenizer_assets: bool = True
    """Save tokenizer files with each checkpoint (when the run has a tokenizer)."""
    replication: bool = False
    """Replicate local non-persistent checkpoints to peer nodes."""
    replication_jump: int | None = None
    """Rank distance between replicas; None: the ranks per node the launcher reports."""
    replication_factor: int = 2
    """Number of copies of each local checkpoint, including the original."""
    storage_writers_per_rank: int = 1
    """Shard files each rank writes per checkpoint (``__<rank>_<i>.distcp``)."""
    verify_integrity: bool = False
    """Check every file's checksum before loading (size checks always run)."""
    async_writer: WriterSettings = field(default_factory=lambda: WriterSettings())
    """Cairn addition: CPU and I/O priority and cores of the async writer process, so training
    keeps its cores (``nice``, ``io_priority``, ``cpu_affinity``; validated at construction)."""
    save_on_sigterm: bool = False
    """Cairn addition: on SIGTERM, save this step and exit (code 143) at the next step boundary.
    Always on for a job that names a Checkpoint (``CAIRN_CHECKPOINT``); see docs/preemption.md."""
    custom_manager_class: str | None = None
    """Fully qualified class (``"package.module.Class"``) that ``create_checkpoint_manager``
    builds instead of ``DefaultCheckpointManager`` (newer Megatron-Bridge API); in a Bridge
    config, ``"cairn_agent.bridge.CairnCheckpointManager"`` routes the run through Cairn."""

    def __post_init__(self) -> None:
        self.finalize()

    def finalize(self) -> None:
        """Validate the fields together; call again after mutating the config."""
        self._check_formats()
        self._check_intervals()
        self._check_load()
        self._check_async()
        self._check_non_persistent()
        self._check_manager_class()

    def _check_formats(self) -> None:
        if self.ckpt_format not in SUPPORTED_CKPT_FORMATS:
            raise ValueError(
                f"ckpt_format={self.ckpt_format!r} is not supported; use 'torch_dist' "
                "(Megatron-compatible sharded format)"
            )
        if self.dist_ckpt_strictness not in _STRICTNESS_VALUES:
            raise ValueError(
                f"dist_ckpt_strictness={self.dist_ckpt_strictness!r} is unknown; use one of "
                f"{sorted(_STRICTNESS_VALUES)}"
            )
        if (
            self.dist_ckpt_optim_fully_reshardable
            and self.distrib_optim_fully_reshardable_mem_efficient
        ):
            raise ValueError(
                "distrib_optim_fully_reshardable_mem_efficient cannot be combined with "
                "dist_ckpt_optim_fully_reshardable; enable only one"
            )

    def _check_intervals(self) -> None:
        _positive_or_none("save_interval", self.save_interval)
        _positive_or_none("non_persistent_save_interval", self.non_persistent_save_interval)
        if self.storage_writers_per_rank < 1:
            raise ValueError(
                f"storage_writers_per_rank must be >= 1, got {self.storage_writers_per_rank}"
            )
        if self.most_recent_k == 0 or self.most_recent_k < -1:
            raise ValueError(
                f"most_recent_k={self.most_recent_k}: use -1 to keep all checkpoints or a positive k"
            )

    def _check_load(self) -> None:
        if self.load_main_params_from_ckpt and self.load_optim:
            raise ValueError(
                "load_main_params_from_ckpt=True needs load_optim=False (main params come from "
                "the model weights, not the optimizer state)"
            )
        if self.ckpt_step is not None and self.load is None:
            raise ValueError("ckpt_step is set but load is None; set load to the checkpoint root")
        if self.ckpt_step is not None and self.ckpt_step < 0:
            raise ValueError(f"ckpt_step must be >= 0, got {self.ckpt_step}")

    def _check_async(self) -> None:
        if not self.async_save:
            return
        if self.save is None:
            raise ValueError("async_save=True needs save (a checkpoint root to write to)")
        if not self.use_persistent_ckpt_worker:
            raise ValueError("async_save=True needs use_persistent_ckpt_worker=True")
        if self.most_recent_k != -1 and self.most_recent_k < 2:
            raise ValueError(
                f"most_recent_k={self.most_recent_k} with async_save: use >= 2 (the newest "
                "checkpoint may still be saving) or -1 to keep all"
            )

    def _check_non_persistent(self) -> None:
        if self.non_persistent_ckpt_type == "None":  # type: ignore[comparison-overlap]
            self.non_persistent_ckpt_type = None  # older Bridge configs spell "no type" this way
        if self.non_persistent_ckpt_type not in (None, "global", "local"):
            raise ValueError(
                f"non_persistent_ckpt_type={self.non_persistent_ckpt_type!r} is not supported; "
                "use 'global', 'local' or None"
            )
        if self.non_persistent_ckpt_type == "local" and not self.non_persistent_local_ckpt_dir:
            raise ValueError(
                "non_persistent_ckpt_type='local' needs non_persistent_local_ckpt_dir (a node-local path)"
            )
        if self.replication_jump is not None and self.replication_jump < 1:
            raise ValueError(
                f"replication_jump must be >= 1 (usually ranks per node), got "
                f"{self.replication_jump}; or leave it None for the launcher's ranks per node"
            )
        if self.replication_factor < 1:
            raise ValueError(f"replication_factor must be >= 1, got {self.replication_factor}")

    def _check_manager_class(self) -> None:
        name = self.custom_manager_class
        if name is None:
            return
        module, _, cls = name.rpartition(".")
        if not module or not cls or not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(
                f"custom_manager_class={name!r} is not a fully qualified class name; write it "
                "as 'package.module.ClassName' (e.g. 'cairn_agent.bridge.CairnCheckpointManager')"
            )


@dataclass(kw_only=True)
class RngConfig:
    """RNG settings that decide how RNG state is saved (Bridge ``RNGConfig``)."""

    seed: int = 1234
    """Base random seed of the run."""
    data_parallel_random_init: bool = False
    """Each data-parallel rank has its own RNG stream, so each rank's state is saved."""


@dataclass(kw_only=True)
class ModelConfig:
    """The parallel layout save and load compare between runs (Bridge ``cfg.model`` fields)."""

    tensor_model_parallel_size: int = 1
    """Tensor-parallel group size."""
    pipeline_model_parallel_size: int = 1
    """Pipeline-parallel group size."""
    context_parallel_size: int = 1
    """Context-parallel group size."""
    expert_model_parallel_size: int = 1
    """Expert-parallel group size."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be >= 1, got {getattr(self, f.name)}")


@dataclass(kw_only=True)
class OptimizerConfig:
    """Optimizer settings that change the checkpoint layout."""

    use_distributed_optimizer: bool = False
    """Optimizer state is sharded over data-parallel ranks (megatron-core DistributedOptimizer)."""


@dataclass(kw_only=True)
class DatasetConfig:
    """Where dataloader state goes (Bridge ``cfg.dataset`` fields)."""

    dataloader_save: str | None = None
    """Root of saved dataloader state; default ``<save>/energon``."""
    dataloader_load: str | None = None
    """Root of dataloader state to restore; default ``<load>/energon``."""


@dataclass(kw_only=True)
class ConfigContainer:
    """The run configuration save and load read; written as ``run_config.yaml``."""

    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint settings."""
    rng: RngConfig = field(default_factory=RngConfig)
    """RNG settings."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Parallel layout of the model."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Optimizer layout settings."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    """Dataloader state paths."""
    peft: Any = None
    """A PEFT config with ``adapter_key_filter(name)``; None for full training."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view of the config (``peft`` as its class name)."""
        out: dict[str, Any] = {
            f.name: dataclasses.asdict(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "peft"
        }
        out["peft"] = None if self.peft is None else type(self.peft).__name__
        return out

    def to_yaml(self, yaml_path: str | Path | None = None) -> str:
        """The config as YAML; also written to ``yaml_path`` when given."""
        text: str = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if yaml_path is not None:
            Path(yaml_path).write_text(text, encoding="utf-8")
        return text
