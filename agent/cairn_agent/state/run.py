"""Cairn's per-run state: one typed object per ``GlobalState``, never attributes on it.

A Megatron-Bridge ``GlobalState`` is another library's object; Cairn keeps what it needs per
run (restart generation, the iteration resumed from, skipped checkpoints, the status reporter,
the applied policy, ...) here, keyed by the state object's identity and dropped when the state
object is garbage-collected. Cairn's own :class:`~cairn_agent.state.train.GlobalState` exposes
the same fields as attributes for convenience.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn_agent.resource.contract import ENV_GENERATION


def generation_from_env(environ: dict[str, str] | None = None) -> int:
    """Restart generation of this pod from ``CAIRN_GENERATION`` (0 when unset)."""
    raw = (os.environ if environ is None else environ).get(ENV_GENERATION, "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise ValueError(f"{ENV_GENERATION}={raw!r} must be a non-negative integer")
    return int(raw)


@dataclass(frozen=True)
class SavedObjects:
    """What the script last saved or loaded: a save the cluster asks for between the script's
    own saves (``spec.saveNow``, a preemption) is made of these."""

    model: list[Any]
    optimizer: Any
    scheduler: Any
    train_data_iterator: Any = None
    checkpointing_context: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class RetentionOverride:
    """In-job retention from the Checkpoint's spec (replaces the script's ``most_recent_k``)."""

    keep_last: int | None
    keep_every: int | None
    pinned: tuple[int, ...]
    dry_run: bool


@dataclass(kw_only=True)
class RunState:
    """What Cairn remembers about one training run between checkpoint calls."""

    generation: int = field(default_factory=generation_from_env)
    """Restart generation of this process (``CAIRN_GENERATION``); fences stale writers."""
    resumed_iteration: int | None = None
    """Iteration this process resumed from; retention never deletes it."""
    skipped_checkpoints: list[tuple[str, str]] = field(default_factory=list)
    """Checkpoints the last load skipped as unloadable: (directory, reason)."""
    dataloader_state_dir: str | None = None
    """Where the dataloader state of the resumed iteration lives."""
    gc_done_roots: set[Path] = field(default_factory=set)
    """Checkpoint roots whose staging leftovers this process already removed."""
    reporter: Any = None
    """The cluster status reporter (``cluster.reporter.StatusReporter``), once created."""
    control: Any = None
    """The step-boundary control (``flows.control.Control``), when the job names a Checkpoint."""
    objects: SavedObjects | None = None
    """What the script last saved or loaded (see :class:`SavedObjects`)."""
    save_stalls: dict[str, list[float]] = field(default_factory=dict)
    """Recent per-tier seconds saves blocked training (``status.saveStats``), newest last."""
    prewarmed: bool = False
    """The async save of this run was planned and its staging buffer mapped ahead of it."""
    save_started: dict[int, float] = field(default_factory=dict)
    """Monotonic start time of each persistent save not committed yet, by iteration."""
    retention: RetentionOverride | None = None
    """In-job retention the Checkpoint's spec sets, once the job applied it."""
    local_tier: Any = None
    """The node-local tier (``local.tier.LocalTier``) while an async local save is in flight."""


_RUNS: dict[int, RunState] = {}


def _forget(key: int) -> None:
    _RUNS.pop(key, None)


def run_of(state: Any) -> RunState:
    """The :class:`RunState` of ``state`` (created on first use)."""
    own = getattr(state, "_cairn_run", None)
    if isinstance(own, RunState):
        return own
    key = id(state)
    run = _RUNS.get(key)
    if run is None:
        run = RunState()
        _RUNS[key] = run
        # Keyed by identity (Bridge's state may be unhashable); dropped with the object.
        weakref.finalize(state, _forget, key)
    return run
