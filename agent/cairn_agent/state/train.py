"""Training progress (``TrainState``) and the per-process state save and load use (``GlobalState``).

``TrainState`` is serialized exactly as Megatron-Bridge does (0-d tensors, one per field) so
``train_state.pt`` / ``latest_train_state.pt`` are interchangeable with Bridge's:
``TrainState.state_dict()`` has the dtypes of Bridge's (>= 0.5) ``TrainState.state_dict()``
(int64 counters, float64 FLOPs, bool flags), and :func:`train_state_file_dict` is what Bridge
writes to those files, where the FLOPs counter is stored as float32 (every Bridge release).
Bridge <= 0.4 wrote int32 counters; loading reads values, not dtypes, so both load here and
files written here load in either generation of Bridge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from cairn_agent.config import ConfigContainer
from cairn_agent.state.run import RunState

if TYPE_CHECKING:
    from cairn_agent.async_save import AsyncSaveQueue

logger = logging.getLogger(__name__)

_TENSOR_DTYPES: dict[str, torch.dtype] = {
    "step": torch.int64,
    "consumed_train_samples": torch.int64,
    "skipped_train_samples": torch.int64,
    "consumed_valid_samples": torch.int64,
    "floating_point_operations_so_far": torch.float64,
    "do_train": torch.bool,
    "do_valid": torch.bool,
    "do_test": torch.bool,
}
_PYTHON_TYPES: dict[torch.dtype, type] = {torch.int64: int, torch.float64: float, torch.bool: bool}
# Bridge's save path re-creates the FLOPs tensor as float32 just before writing train_state.pt.
FILE_FLOPS_DTYPE = torch.float32


@dataclass(kw_only=True)
class TrainState:
    """Training progress saved with every checkpoint (Megatron-Bridge ``TrainState``)."""

    step: int = 0
    """Completed optimizer steps; equals the ``iter_N`` suffix of the checkpoint."""
    consumed_train_samples: int = 0
    """Training samples consumed so far; the data sampler resumes from here."""
    skipped_train_samples: int = 0
    """Training samples skipped (e.g. by loss-spike handling)."""
    consumed_valid_samples: int = 0
    """Validation samples consumed so far."""
    floating_point_operations_so_far: float = 0.0
    """Model FLOPs executed so far."""
    do_train: bool = False
    """Whether training is enabled for this run."""
    do_valid: bool = False
    """Whether validation is enabled for this run."""
    do_test: bool = False
    """Whether testing is enabled for this run."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every field as a 0-d tensor (int64 counters, float64 FLOPs, bool flags)."""
        return {
            name: torch.tensor(getattr(self, name), dtype=dtype)
            for name, dtype in _TENSOR_DTYPES.items()
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore every field; a missing key raises ``KeyError`` naming it."""
        missing = [name for name in _TENSOR_DTYPES if name not in state_dict]
        if missing:
            raise KeyError(f"train state is missing {missing}")
        for name, dtype in _TENSOR_DTYPES.items():
            value = state_dict[name]
            value = value.item() if isinstance(value, torch.Tensor) else value
            setattr(self, name, _PYTHON_TYPES[dtype](value))


def train_state_file_dict(train_state: Any, num_flops: float) -> dict[str, torch.Tensor]:
    """The content of ``train_state.pt``/``latest_train_state.pt``, dtype for dtype as Bridge's.

    ``train_state`` may be Cairn's or Bridge's ``TrainState`` (its own ``state_dict()`` is used).
    """
    content = dict(train_state.state_dict())
    content["floating_point_operations_so_far"] = torch.tensor(
        float(num_flops), dtype=FILE_FLOPS_DTYPE
    )
    return content


class GlobalState:
    """Everything save and load need besides the model: config, progress, rank, async queue.

    Bridge code builds it empty and assigns ``cfg`` later; both styles work here.
    """

    def __init__(
        self, cfg: ConfigContainer | None = None, train_state: TrainState | None = None
    ) -> None:
        self._cfg = cfg
        self.train_state = train_state if train_state is not None else TrainState()
        self._async_calls_queue: AsyncSaveQueue | None = None
        self._cairn_run = RunState()

    @property
    def generation(self) -> int:
        """Restart generation of this process (``CAIRN_GENERATION``)."""
        return self._cairn_run.generation

    @property
    def resumed_iteration(self) -> int | None:
        """Iteration this process resumed from (None before a load, or after a finetune load)."""
        return self._cairn_run.resumed_iteration

    @property
    def skipped_checkpoints(self) -> list[tuple[str, str]]:
        """Checkpoints the last load skipped as unloadable: (directory, reason)."""
        return self._cairn_run.skipped_checkpoints

    @property
    def dataloader_state_dir(self) -> str | None:
        """Where the dataloader state of the resumed iteration lives."""
        return self._cairn_run.dataloader_state_dir

    @property
    def cfg(self) -> ConfigContainer:
        if self._cfg is None:
            raise ValueError("GlobalState.cfg is not set; assign a ConfigContainer first")
        return self._cfg

    @cfg.setter
    def cfg(self, value: ConfigContainer) -> None:
        self._cfg = value

    @property
    def rank(self) -> int:
        return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0

    @property
    def world_size(self) -> int:
        return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1

    @property
    def async_calls_queue(self) -> AsyncSaveQueue | None:
        """The async save queue, created on first use when ``cfg.checkpoint.async_save``."""
        if (
            self._async_calls_queue is None
            and self._cfg is not None
            and self.cfg.checkpoint.async_save
        ):
            from cairn_agent.async_save import AsyncSaveQueue  # torch-heavy; only when async is on

            ckpt = self.cfg.checkpoint
            self._async_calls_queue = AsyncSaveQueue(
                persistent=ckpt.use_persistent_ckpt_worker,
                writer=getattr(ckpt, "async_writer", None),
            )
            logger.info("rank %d: async checkpoint queue created", self.rank)
        return self._async_calls_queue

    def initialize_async_checkpoint_worker(self) -> None:
        """Start the persistent async worker now rather than at the first save (Bridge API)."""
        ckpt = self.cfg.checkpoint
        if ckpt.save is not None and ckpt.async_save and ckpt.use_persistent_ckpt_worker:
            queue = self.async_calls_queue
            if queue is not None:
                # Start the worker now, so the first save does not wait for its start-up.
                queue.start_worker()

    def close_async_queue(self) -> None:
        """Close the async queue (after its last finalize); a later save creates a new one."""
        if self._async_calls_queue is not None:
            self._async_calls_queue.close()
            self._async_calls_queue = None
