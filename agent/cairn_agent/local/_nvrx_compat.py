"""The one module that reaches into nvidia-resiliency-ext (nvrx) beyond its documented surface.

Pinned: ``nvidia-resiliency-ext==0.4.1`` (``pyproject.toml``, extra ``agent``). When the pin
moves, re-read the nvrx sources named below; nothing else in Cairn depends on them.

What Cairn takes from nvrx, and why each reach is needed:

- ``LocalCheckpointManager`` is subclassed (:class:`CairnLocalManager`). nvrx's own storage
  hooks ``_my_ckpt_ids``/``_save``/``_load``/``_cleanup``/``_cleanup_failed_save`` (abstract,
  underscored methods of ``BaseCheckpointManager`` meant for subclasses) are overridden so a
  part counts only when its holder's commit record lists it and its checksum matches. nvrx's
  file names (``_filename_from_template``), its ``local_ckpt_dir`` (``<root>/<session>/<rank>``)
  and its ``find_latest`` (newest iteration every rank's part is available for, one
  all-gather) are used unchanged.
- ``save``/``load`` are routed to Cairn's protocol (``local.tier``): nvrx 0.4.1's ``save``
  synchronizes a CUDA stream when async and publishes a part as soon as it is renamed, and its
  ``load`` lets one rank's read failure leave its peers blocked in a receive. Cairn keeps the
  same call shapes so Megatron-Bridge-style callers of the context's manager still work.
- ``CliqueReplicationStrategy`` is subclassed (:class:`DeviceAgnosticClique`): its
  ``retrieve_plan`` (bookkeeping plus one object all-gather) is nvrx's; ``replicate`` and
  ``retrieve_execute`` are replaced because nvrx 0.4.1 moves every tensor through ``.cuda()``
  there (``GroupWrapper.all_gather_batch`` placeholders, ``isend_state_dict``/
  ``irecv_state_dict``). The replacements live in ``local.exchange`` and run on the group's
  device (gloo: CPU tensors; NCCL: CUDA tensors).
- ``parse_group_sequence`` (group_utils) computes the cliques, so ``replication_jump`` and
  ``replication_factor`` mean exactly what they mean in nvrx.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import torch.distributed as dist
from nvidia_resiliency_ext.checkpointing.local.base_state_dict import TensorAwareStateDict
from nvidia_resiliency_ext.checkpointing.local.ckpt_managers.local_manager import (
    LocalCheckpointManager,
)
from nvidia_resiliency_ext.checkpointing.local.replication.group_utils import (
    ExchangePlan,
    GroupWrapper,
    parse_group_sequence,
)
from nvidia_resiliency_ext.checkpointing.local.replication.strategies import (
    CliqueReplicationStrategy,
    ReplicationStrategy,
)

log = logging.getLogger(__name__)

PINNED_VERSION = "0.4.1"
"""The nvidia-resiliency-ext release this module was written against."""

CkptID = tuple[int, int, str]
"""nvrx's checkpoint id: ``(iteration, origin rank, session id)``."""

__all__ = [
    "PINNED_VERSION",
    "CairnLocalManager",
    "CkptID",
    "DeviceAgnosticClique",
    "ExchangePlan",
    "ReplicationStrategy",
    "TensorAwareStateDict",
    "clique_ranks",
]


def _warn_if_unpinned() -> None:
    try:
        found = metadata.version("nvidia-resiliency-ext")
    except metadata.PackageNotFoundError:
        return
    if found != PINNED_VERSION:
        log.warning(
            "nvidia-resiliency-ext %s is installed; Cairn's local tier was written against %s "
            "(cairn_agent/local/_nvrx_compat.py names the internals it relies on)",
            found,
            PINNED_VERSION,
        )


_warn_if_unpinned()


def clique_ranks(
    replication_jump: int, replication_factor: int, world_size: int
) -> list[list[int]]:
    """nvrx's replication cliques: ``n, n+J, ..., n+(F-1)J`` for each ``n`` (sorted).

    ``ValueError`` (saying what to change) where nvrx would fail an assertion.
    """
    if replication_jump < 1 or replication_factor < 1:
        raise ValueError(
            f"replication_jump={replication_jump} and replication_factor={replication_factor} "
            "must both be >= 1"
        )
    if world_size % (replication_jump * replication_factor):
        raise ValueError(
            f"cannot split {world_size} ranks into replication cliques of "
            f"replication_factor={replication_factor} ranks spaced replication_jump="
            f"{replication_jump} apart: the world size must be a multiple of jump x factor "
            f"({replication_jump * replication_factor}); change replication_factor or "
            "replication_jump"
        )
    return [
        list(group)
        for group in parse_group_sequence(
            replication_jump=replication_jump,
            replication_factor=replication_factor,
            world_size=world_size,
        )
    ]


class PartExchange(Protocol):
    """Device-agnostic movement of checkpoint parts inside one clique (``local.exchange``)."""

    def all_gather_parts(self, part: TensorAwareStateDict) -> list[TensorAwareStateDict]: ...

    def execute(
        self, plan: ExchangePlan, my_data: Mapping[CkptID, TensorAwareStateDict]
    ) -> dict[CkptID, TensorAwareStateDict]: ...


class DeviceAgnosticClique(CliqueReplicationStrategy):  # type: ignore[misc]
    """nvrx's clique replication with the tensor exchange on the clique group's own device."""

    def __init__(self, group: dist.ProcessGroup, exchange: PartExchange) -> None:
        super().__init__(group, target_device="cpu")
        self._exchange = exchange

    @property
    def group_ranks(self) -> list[int]:
        """Global ranks of this rank's clique (itself included), in group order."""
        return list(self.local_group.ranks)

    def replicate(
        self, local_ckpt: TensorAwareStateDict, id_: CkptID
    ) -> tuple[list[TensorAwareStateDict], list[CkptID]]:
        """Every clique member's part, and its id, as in nvrx (``local_ckpt`` is left hollow)."""
        parts = self._exchange.all_gather_parts(local_ckpt)
        ids: list[CkptID] = self.local_group.all_gather_object(id_)
        return parts, ids

    def retrieve_execute(
        self, plan: ExchangePlan, my_data: Mapping[CkptID, TensorAwareStateDict]
    ) -> dict[CkptID, TensorAwareStateDict]:
        """Send and receive the planned parts point to point, on the group's device."""
        return self._exchange.execute(plan, my_data)


def build_cliques(
    replication_jump: int, replication_factor: int, exchange_for: Callable[[Any], PartExchange]
) -> DeviceAgnosticClique:
    """Create every clique's process group (collective: all ranks, same order) and this rank's
    strategy. The groups use the default backend, i.e. the job's own (gloo or NCCL)."""
    groups = [
        dist.new_group(ranks)
        for ranks in clique_ranks(replication_jump, replication_factor, dist.get_world_size())
    ]
    mine = GroupWrapper.from_list_of_groups(groups).group
    return DeviceAgnosticClique(mine, exchange_for(mine))


class PartStorage(Protocol):
    """What the manager's storage hooks delegate to (``local.store.PartStore``)."""

    def committed_parts(self, origins: Iterable[int] | None) -> list[tuple[int, int]]: ...

    def read_part(self, iteration: int, origin: int) -> TensorAwareStateDict: ...

    def write_part(self, iteration: int, origin: int, part: TensorAwareStateDict) -> Any: ...

    def remove_older(self, iteration: int) -> None: ...

    def remove_iteration(self, iteration: int) -> None: ...


class PartNames:
    """nvrx's part file names, parsed with the pattern nvrx itself matches them with."""

    def __init__(self, manager: LocalCheckpointManager) -> None:
        self._manager = manager

    def file_name(self, iteration: int, origin: int, dirty: bool = False) -> str:
        name: str = self._manager._filename_from_template(
            iteration, origin, ".dirty" if dirty else ""
        )
        return name

    def parse(self, name: str) -> tuple[int, int] | None:
        """``(iteration, origin)`` of a clean part file name, else None."""
        if not name.endswith("_local.pt") or not name.startswith("iter_"):
            return None
        try:
            iteration, origin, _ = self._manager._filename_to_id(name)
        except ValueError:
            return None
        if self.file_name(iteration, origin) != name:
            return None
        return int(iteration), int(origin)


SaveHook = Callable[[TensorAwareStateDict, int, bool], None]
LoadHook = Callable[[], tuple[TensorAwareStateDict, CkptID]]


class CairnLocalManager(LocalCheckpointManager):  # type: ignore[misc]
    """nvrx's manager whose storage hooks verify commit records and checksums.

    ``store_factory`` builds the per-rank store from the rank directory and nvrx's names;
    ``on_save``/``on_load`` are Cairn's agreed save and load protocols (``local.tier``).
    """

    def __init__(
        self,
        root: Path,
        repl_strategy: DeviceAgnosticClique | None,
        store_factory: Callable[[Path, PartNames], PartStorage],
    ) -> None:
        super().__init__(root, session_id="", repl_strategy=repl_strategy)
        self.store = store_factory(Path(self.local_ckpt_dir), PartNames(self))
        self.on_save: SaveHook | None = None
        self.on_load: LoadHook | None = None

    # --- identity and bookkeeping shared with nvrx's find_latest ---------------------------
    @property
    def clique(self) -> list[int] | None:
        """Global ranks whose parts this rank may hold (None: no replication, only its own)."""
        strategy = self.repl_strategy
        return strategy.group_ranks if isinstance(strategy, DeviceAgnosticClique) else None

    def ckpt_id(self, iteration: int, origin: int | None = None) -> CkptID:
        """nvrx's id of ``origin``'s part (default: this rank's) of ``iteration``."""
        return (iteration, self.rank if origin is None else origin, self.session_id)

    @property
    def chosen_iteration(self) -> int:
        """The iteration nvrx's last ``find_latest`` chose (-1: none, or not run yet)."""
        latest: int = self.latest_iteration
        return latest

    def forget_latest(self) -> None:
        """Drop nvrx's cached ``find_latest`` answer (a save or cleanup changed the parts)."""
        self.latest_iteration = -1

    def available_ids(self) -> Sequence[Sequence[CkptID]]:
        """Per global rank, the ids ``find_latest`` saw (nvrx keeps them for its plan)."""
        found: Sequence[Sequence[CkptID]] = self.globally_available_ids
        return found

    # --- nvrx's storage hooks -----------------------------------------------------------------
    def _my_ckpt_ids(self) -> list[CkptID]:
        self._ensure_dir()
        origins = self.clique if self.clique is not None else [self.rank]
        return [self.ckpt_id(it, origin) for it, origin in self.store.committed_parts(origins)]

    def _load(self, ckpt_id: CkptID) -> TensorAwareStateDict:
        iteration, origin, _ = ckpt_id
        return self.store.read_part(iteration, origin)

    def _save(self, state_dict: TensorAwareStateDict, ckpt_id: CkptID) -> None:
        iteration, origin, _ = ckpt_id
        self._ensure_dir()
        self.store.write_part(iteration, origin, state_dict)

    def _cleanup(self, iteration: int) -> None:
        self.store.remove_older(iteration)

    def _cleanup_failed_save(self, iteration: int) -> None:
        self.store.remove_iteration(iteration)

    def load_part(self, ckpt_id: CkptID) -> TensorAwareStateDict:
        """nvrx's ``_load_fn``: read one part (verified), tensors back on their devices."""
        part: TensorAwareStateDict = self._load_fn(ckpt_id)
        return part

    # --- nvrx's public entry points, routed to Cairn's agreed protocols ----------------------
    def save(
        self, state_dict: TensorAwareStateDict, iteration: int, is_async: bool = False
    ) -> None:
        """Save through Cairn's protocol (async saves are finalized by the facade)."""
        if self.on_save is None:
            raise RuntimeError("this manager was not built by cairn_agent.local.tier")
        self.on_save(state_dict, iteration, is_async)

    def load(self) -> tuple[TensorAwareStateDict, CkptID]:
        """Load this rank's part of the iteration ``find_latest`` chose (agreed on every rank)."""
        if self.on_load is None:
            raise RuntimeError("this manager was not built by cairn_agent.local.tier")
        return self.on_load()
