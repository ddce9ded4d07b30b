"""The agent's status entries, typed: its vocabulary, and a reader and writer for each entry.

The agent (training rank 0) writes these entries through ``to_status``; the operator and
``kubectl cairn`` read them through ``from_status``, which tolerates what an older or broken
agent may have written (it returns None, or a default, instead of raising). Timestamps stay
the RFC 3339 text of the wire (``cairn_agent.resource.times`` parses them). Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal, Self, TypeGuard, get_args

from cairn_agent.resource import contract
from cairn_agent.resource.spec import as_int

WorkerState = Literal["Idle", "Writing", "Stopped"]
"""``asyncWorker.state``: waiting for a save, writing one, or shut down (said goodbye)."""
WORKER_STATES: Final[tuple[WorkerState, ...]] = get_args(WorkerState)
QUIET_WORKER_STATES: Final[frozenset[WorkerState]] = frozenset({"Stopped"})
"""States in which the agent's silence is expected, so a stale heartbeat is no alarm."""

SavePhase = Literal["Staging", "Writing", "Finalizing", "Committing"]
"""``saveInProgress.phase``, in the order a save passes through them."""
SAVE_PHASES: Final[tuple[SavePhase, ...]] = get_args(SavePhase)

ResumeTier = Literal["persistent", "global", "local"]
"""``lastResume.tier``: persistent, global non-persistent, or node-local."""
RESUME_TIERS: Final[tuple[ResumeTier, ...]] = get_args(ResumeTier)


def is_worker_state(value: object) -> TypeGuard[WorkerState]:
    """Whether ``value`` is one of ``WORKER_STATES``."""
    return value in WORKER_STATES


def is_save_phase(value: object) -> TypeGuard[SavePhase]:
    """Whether ``value`` is one of ``SAVE_PHASES``."""
    return value in SAVE_PHASES


def _iteration(value: object) -> int | None:
    it = as_int(value)
    return it if it is not None and it >= 0 else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _text_or_empty(value: object) -> str:
    return _text(value) or ""


def _int_or_zero(value: object) -> int:
    return as_int(value) or 0


def _tier(value: object) -> ResumeTier | None:
    return value if value in RESUME_TIERS else None


def _phase(value: object) -> SavePhase | None:
    return value if is_save_phase(value) else None


def _worker_state(value: object) -> WorkerState | None:
    return value if is_worker_state(value) else None


def _wire(wire: str, read: Callable[[object], Any], *, required: bool = False) -> dict[str, Any]:
    """Field metadata: stored under ``wire`` in the status entry, read back with ``read``.

    ``required``: an entry whose value ``read`` turns into None is no entry at all.
    """
    return {"wire": wire, "read": read, "required": required}


class _Entry:
    """``to_status``/``from_status`` of a dataclass whose fields carry ``_wire`` metadata."""

    def to_status(self) -> dict[str, Any]:
        """The entry as the agent writes it (None values left out)."""
        values = ((f.metadata["wire"], getattr(self, f.name)) for f in fields(self))  # type: ignore[arg-type]
        return {wire: value for wire, value in values if value is not None}

    @classmethod
    def from_status(cls, value: object) -> Self | None:
        """The entry as written by any agent; None when it is not a mapping or lacks a key."""
        if not isinstance(value, Mapping):
            return None
        read: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            read[f.name] = f.metadata["read"](value.get(f.metadata["wire"]))
            if read[f.name] is None and f.metadata["required"]:
                return None
        return cls(**read)


@dataclass(frozen=True, kw_only=True)
class SaveInProgress(_Entry):
    """``status.saveInProgress``: the save in flight (the key is null when there is none)."""

    iteration: int = field(metadata=_wire("iteration", _iteration, required=True))
    phase: SavePhase | None = field(metadata=_wire("phase", _phase))
    """None when the agent wrote a phase outside ``SAVE_PHASES``."""
    started_at: str = field(metadata=_wire("startedAt", _text_or_empty))
    is_async: bool = field(metadata=_wire("async", bool))


@dataclass(frozen=True, kw_only=True)
class AsyncWorker(_Entry):
    """``status.asyncWorker``: the agent's heartbeat."""

    state: WorkerState | None = field(metadata=_wire("state", _worker_state))
    """None when the agent wrote a state outside ``WORKER_STATES``."""
    heartbeat_time: str = field(metadata=_wire("heartbeatTime", _text_or_empty))
    pid: int = field(metadata=_wire("pid", _int_or_zero))

    @property
    def quiet(self) -> bool:
        """Whether the agent said goodbye, so that its silence is expected."""
        return self.state in QUIET_WORKER_STATES


@dataclass(frozen=True, kw_only=True)
class LastResume(_Entry):
    """``status.lastResume``: where the job last resumed from."""

    iteration: int = field(metadata=_wire("iteration", _iteration, required=True))
    source: str = field(metadata=_wire("source", _text_or_empty))
    """The tier: persistent, or a non-persistent one."""
    time: str = field(metadata=_wire("time", _text_or_empty))
    generation: int = field(metadata=_wire("generation", _int_or_zero))
    tier: ResumeTier | None = field(default=None, metadata=_wire("tier", _tier))
    """Which tier was read (None from agents that predate tiers)."""
    reason: str | None = field(default=None, metadata=_wire("reason", _text))
    """Why a newer tier was passed over (e.g. a local iteration whose part has no copy left)."""


MAX_LOCAL_NODES: Final = 32
"""``localTier.nodes`` lists at most this many nodes (``nodeCount`` has them all)."""


def _names(value: object) -> list[str]:
    return [str(v) for v in value][:MAX_LOCAL_NODES] if isinstance(value, list) else []


@dataclass(frozen=True, kw_only=True)
class LocalTier(_Entry):
    """``status.localTier``: the node-local tier's newest restorable iteration and its copies."""

    iteration: int = field(metadata=_wire("iteration", as_int, required=True))
    """Newest local iteration every rank can restore; -1 when there is none."""
    replicas: int = field(default=0, metadata=_wire("replicas", _int_or_zero))
    """Intact copies of its least-replicated part (1: no spare copy left)."""
    replication_factor: int = field(default=1, metadata=_wire("replicationFactor", _int_or_zero))
    nodes: list[str] = field(default_factory=list, metadata=_wire("nodes", _names))
    """Nodes that hold its parts (at most ``MAX_LOCAL_NODES``)."""
    node_count: int = field(default=0, metadata=_wire("nodeCount", _int_or_zero))
    bytes_per_rank: int = field(default=0, metadata=_wire("bytesPerRank", _int_or_zero))
    """Bytes of parts in rank 0's local directory (every copy it holds)."""
    updated_at: str = field(default="", metadata=_wire("updatedAt", _text_or_empty))
    problem: str | None = field(default=None, metadata=_wire("problem", _text))
    """What made a newer local iteration unrestorable, if anything."""


@dataclass(frozen=True, kw_only=True)
class SavedIteration(_Entry):
    """One entry of ``status.savedIterations``: a committed checkpoint."""

    iteration: int = field(metadata=_wire("iteration", _iteration, required=True))
    committed_at: str | None = field(default=None, metadata=_wire("committedAt", _text))
    bytes: int = field(default=0, metadata=_wire("bytes", _int_or_zero))
    """Total size of its files."""
    files: int = field(default=0, metadata=_wire("files", _int_or_zero))
    manifest_digest: str | None = field(default=None, metadata=_wire("manifestDigest", _text))
    verified: bool = field(default=False, metadata=_wire("verified", bool))
    """Whether the agent verified it against its manifest."""


@dataclass(frozen=True, kw_only=True)
class CorruptIteration(_Entry):
    """One entry of ``status.corruptIterations``: a checkpoint that failed a check on load."""

    iteration: int = field(metadata=_wire("iteration", as_int, required=True))
    file: str = field(metadata=_wire("file", lambda v: "?" if v is None else str(v)))
    check: str = field(metadata=_wire("check", lambda v: "failed a check" if v is None else str(v)))
    time: str | None = field(metadata=_wire("time", _text))

    def describe(self) -> str:
        """``file: check``."""
        return f"{self.file}: {self.check}"


def saved_iterations(status: Mapping[str, Any]) -> list[SavedIteration]:
    """The committed iterations the agent reported (plus ``latestCommittedIteration``), sorted."""
    found: dict[int, SavedIteration] = {}
    for item in status.get(contract.SAVED_ITERATIONS) or ():
        entry = SavedIteration.from_status(item)
        if entry is not None:
            found[entry.iteration] = entry
    latest = latest_committed(status)
    if latest is not None and latest not in found:
        found[latest] = SavedIteration(iteration=latest)
    return [found[it] for it in sorted(found)]


def latest_committed(status: Mapping[str, Any]) -> int | None:
    """``status.latestCommittedIteration`` (the tracker's target, as reported), if valid."""
    latest = as_int(status.get(contract.LATEST_COMMITTED))
    return latest if latest is not None and latest >= 0 else None


def corrupt_iterations(status: Mapping[str, Any]) -> dict[int, str]:
    """Iteration -> "file: check" for every iteration the agent reported corrupt."""
    entries = (
        CorruptIteration.from_status(c) for c in status.get(contract.CORRUPT_ITERATIONS) or ()
    )
    return {c.iteration: c.describe() for c in entries if c is not None}


def newest_verified(saved: list[SavedIteration], corrupt: Mapping[int, str]) -> int | None:
    """The newest verified iteration not reported corrupt."""
    good = [s.iteration for s in saved if s.verified and s.iteration not in corrupt]
    return max(good) if good else None
