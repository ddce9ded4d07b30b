"""The node-local tier: its save protocol (sync or async), its load protocol, what it holds.

Life of one local save (every rank; collective where noted):

1. ``save`` (collective): finish a save still in flight; tidy this rank's directory (dirty
   files, uncommitted parts, anything at or after the new iteration; the newest committed
   iteration stays); exchange parts inside the replication clique on the group's device, which
   also snapshots this rank's tensors; then write every part this rank holds (its own and its
   clique peers') as ``.dirty`` files renamed into place, inline or in a background thread.
2. ``finalize`` (collective; at once for a sync save, at ``maybe_finalize_async_save`` for an
   async one): ranks agree every part was written everywhere; then each rank writes its commit
   record; ranks agree again; only then does each rank remove its older iterations.

A crash before every commit record exists leaves the previous iteration restorable: the new
parts are invisible without their holder's record (``local.store``), and nothing older was
removed. A crash after some records exist is harmless too: every part was already complete.
So each rank holds at most ``replication_factor`` parts of two iterations while saving, and
of one at rest.

Load: the survey (one all-gather) says which iteration every rank can restore; nvrx's
``find_latest`` agrees; each rank then reads the parts nvrx's retrieval plan asks it for, all
ranks agree the reads worked (a one-rank failure never leaves a peer waiting in a receive),
and the planned parts move point to point.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn_agent.engine import dist
from cairn_agent.engine.collectives import agreed_outcome, all_agree, describe_error, run_agreed
from cairn_agent.errors import CheckpointCorruptError, CheckpointNotFoundError, CommitError
from cairn_agent.local import nodes as node_layout
from cairn_agent.local import survey as local_survey
from cairn_agent.local._nvrx_compat import (
    CairnLocalManager,
    CkptID,
    DeviceAgnosticClique,
    TensorAwareStateDict,
    build_cliques,
)
from cairn_agent.local.exchange import GroupExchange
from cairn_agent.local.store import PartStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TierSettings:
    """How the node-local tier is laid out (from ``CheckpointConfig``)."""

    local_dir: str
    """``non_persistent_local_ckpt_dir``; ``{node}`` in it becomes each node's name."""
    replication: bool = False
    """Keep copies of every rank's part on peer nodes."""
    replication_jump: int | None = None
    """Rank distance between copies; None: the ranks per node the launcher reports."""
    replication_factor: int = 2
    """Copies of each part, the original included."""

    def __post_init__(self) -> None:
        if not self.local_dir:
            raise ValueError("the local tier needs non_persistent_local_ckpt_dir")
        if self.replication_factor < 1:
            raise ValueError(f"replication_factor must be >= 1, got {self.replication_factor}")
        if self.replication_jump is not None and self.replication_jump < 1:
            raise ValueError(f"replication_jump must be >= 1, got {self.replication_jump}")

    @property
    def replicated(self) -> bool:
        return self.replication and self.replication_factor > 1


@dataclass
class _Writing:
    """One save whose parts are being written."""

    iteration: int
    parts: list[tuple[int, TensorAwareStateDict]]
    started_at: float
    thread: threading.Thread | None = None
    error: BaseException | None = None

    def write(self, store: PartStore) -> None:
        try:
            for origin, part in self.parts:
                store.write_part(self.iteration, origin, part)
        except BaseException as exc:  # noqa: BLE001 - surfaced to every rank at finalize
            self.error = exc
        finally:
            self.parts = []  # the snapshot buffers go as soon as they are on disk

    @property
    def done(self) -> bool:
        return self.thread is None or not self.thread.is_alive()


@dataclass(frozen=True, kw_only=True)
class Committed:
    """A local iteration committed by this job, as the status reports it."""

    iteration: int
    copies: int
    seconds: float
    part_files: int
    part_bytes: int
    """Files and bytes of this rank's directory after the commit."""


@dataclass
class LocalTier:
    """The manager, its clique strategy, the node map and the save in flight."""

    manager: CairnLocalManager
    nodes: node_layout.NodeMap
    replication_factor: int
    _writing: _Writing | None = None
    last_commit: Committed | None = field(default=None)

    @classmethod
    def build(cls, settings: TierSettings) -> LocalTier:
        """The tier of this rank. Collective (node map; clique groups when replicated)."""
        nodes = node_layout.gather_node_map(settings.local_dir)
        root = Path(nodes.dirs[dist.get_rank()])
        strategy: DeviceAgnosticClique | None = None
        if settings.replicated:
            jump = settings.replication_jump or node_layout.default_jump(nodes)
            strategy = build_cliques(jump, settings.replication_factor, GroupExchange)
            node_layout.check_clique_spans_nodes(strategy.group_ranks, nodes)
        manager = CairnLocalManager(root, strategy, PartStore)
        factor = settings.replication_factor if strategy is not None else 1
        tier = cls(manager, nodes, factor)
        manager.on_save = tier.save
        manager.on_load = tier.load
        log.info(
            "rank %d: local checkpoints in %s (node %s), %d cop%s per part%s",
            dist.get_rank(),
            manager.local_ckpt_dir,
            nodes.nodes[dist.get_rank()],
            factor,
            "y" if factor == 1 else "ies",
            f", clique {strategy.group_ranks}" if strategy is not None else "",
        )
        return tier

    @property
    def store(self) -> PartStore:
        store = self.manager.store
        if not isinstance(store, PartStore):
            raise TypeError(f"the local manager's store is a {type(store).__name__}")
        return store

    @property
    def strategy(self) -> DeviceAgnosticClique | None:
        strategy = self.manager.repl_strategy
        return strategy if isinstance(strategy, DeviceAgnosticClique) else None

    @property
    def in_flight(self) -> int | None:
        """Iteration of the save not yet finalized, if any."""
        return None if self._writing is None else self._writing.iteration

    # --- save ---------------------------------------------------------------------------------
    def save(self, part: TensorAwareStateDict, iteration: int, is_async: bool = False) -> None:
        """Save ``part`` as this rank's part of ``iteration`` (steps 1-2 above). Collective."""
        if self._writing is not None:
            self.finalize(blocking=True)
        dropped = self.store.prepare(iteration)
        if any(it >= iteration for it in dropped):
            log.warning(
                "rank %d: removed local iterations %s at or after %d: they belong to a run this "
                "job resumed from further back",
                dist.get_rank(),
                [it for it in dropped if it >= iteration],
                iteration,
            )
        writing = _Writing(iteration, self._parts(part, iteration), time.monotonic())
        self._writing = writing
        if not is_async:
            writing.write(self.store)
            self.finalize(blocking=True)
            return
        writing.thread = threading.Thread(
            target=writing.write, args=(self.store,), name=f"cairn-local-{iteration}", daemon=True
        )
        writing.thread.start()

    def _parts(self, part: TensorAwareStateDict, iteration: int) -> list[tuple[int, Any]]:
        strategy = self.strategy
        if strategy is None:
            # A private copy, as the clique exchange makes one: training may change the live
            # state while an async save writes it. Tensors get a host copy; the rest (e.g.
            # Adam's step counters, tensors in the common state, bumped in place) a deep copy.
            tensors = part.pop_tensors()  # first: it records each tensor's own device
            frozen = copy.deepcopy(part)
            frozen.insert_tensors(tensors)
            frozen.copy_tensors_to_cpu(non_blocking=False)
            return [(dist.get_rank(), frozen)]
        copies, ids = strategy.replicate(part, self.manager.ckpt_id(iteration))
        return [(origin, copy) for copy, (_, origin, _) in zip(copies, ids, strict=True)]

    def finalize(self, blocking: bool) -> int | None:
        """Commit the save in flight once written everywhere; its iteration, else None.

        Collective. Non-blocking: returns None at once unless every rank finished writing.
        Raises ``CommitError`` on every rank when a write failed on any rank (the new
        iteration's files are removed; the previous iteration stays).
        """
        writing = self._writing
        if writing is None or not all_agree(blocking or writing.done):
            return None
        if writing.thread is not None:
            writing.thread.join()
        self._writing = None
        self._agree_written(writing)
        details = {"holder": dist.get_rank(), "node": self.nodes.nodes[dist.get_rank()]}
        run_agreed(
            f"commit local iteration {writing.iteration}",
            lambda: self.store.commit(writing.iteration, details),
        )
        # Every rank's record is durable (run_agreed is a barrier): older iterations may go.
        self.store.remove_older(writing.iteration)
        self.manager.forget_latest()
        files, size = self.store.usage()
        self.last_commit = Committed(
            iteration=writing.iteration,
            copies=self.replication_factor,
            seconds=time.monotonic() - writing.started_at,
            part_files=files,
            part_bytes=size,
        )
        log.info(
            "rank %d: committed local iteration %d (%d cop%s of each part)",
            dist.get_rank(),
            writing.iteration,
            self.replication_factor,
            "y" if self.replication_factor == 1 else "ies",
        )
        return writing.iteration

    def _agree_written(self, writing: _Writing) -> None:
        if all_agree(writing.error is None):
            return
        self.store.remove_iteration(writing.iteration)
        where = f"rank {dist.get_rank()}"
        if writing.error is not None:
            raise CommitError(
                f"local iteration {writing.iteration}: writing its parts failed on {where}: "
                f"{describe_error(writing.error)}; the previous local iteration is kept"
            ) from writing.error
        raise CommitError(
            f"local iteration {writing.iteration}: writing its parts failed on another rank "
            f"({where} succeeded); the previous local iteration is kept"
        )

    # --- load ---------------------------------------------------------------------------------
    def survey(self) -> local_survey.Survey:
        """What every rank can restore (collective); nvrx's ``find_latest`` is primed to match."""
        if self._writing is not None:
            self.finalize(blocking=True)
        origins = self.manager.clique or [dist.get_rank()]
        parts = self.store.committed_parts(origins)
        found = local_survey.gather(parts, self.store.problems)
        self.manager.forget_latest()
        latest = self.manager.find_latest()
        if latest != found.restorable:  # the same listing, read twice: a bug if they differ
            raise RuntimeError(
                f"nvrx find_latest() says {latest}, Cairn's survey {found.restorable}"
            )
        return found

    def load(self) -> tuple[TensorAwareStateDict, CkptID]:
        """This rank's part of the surveyed iteration, from its disk or a peer. Collective."""
        iteration = self.manager.chosen_iteration
        if iteration < 0:
            raise CheckpointNotFoundError(
                "no local iteration to load: survey() (or find_latest()) first found none"
            )
        wanted = self.manager.ckpt_id(iteration)
        strategy = self.strategy
        if strategy is None:
            return self.manager.load_part(wanted), wanted
        plan = strategy.retrieve_plan(self.manager.available_ids(), [wanted])
        mine, error, ok = agreed_outcome(
            lambda: {k: self.manager.load_part(k) for k in plan.required_ids()}
        )
        if not ok or mine is None:
            raise error or CheckpointCorruptError(
                Path(self.manager.local_ckpt_dir),
                f"another rank could not read the local parts of iteration {iteration}",
            )
        received = strategy.retrieve_execute(plan, mine)
        restored = "own copy" if wanted in mine else "a replica from a peer"
        log.info("rank %d: local iteration %d from its %s", dist.get_rank(), iteration, restored)
        return received[wanted], wanted

    # --- status -------------------------------------------------------------------------------
    def node_names(self, ranks: list[int] | None = None) -> list[str]:
        """Distinct nodes of ``ranks`` (default: every rank), in rank order."""
        chosen = range(len(self.nodes.nodes)) if ranks is None else ranks
        return list(dict.fromkeys(self.nodes.nodes[r] for r in chosen))
