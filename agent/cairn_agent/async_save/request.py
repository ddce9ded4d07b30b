"""What the async queue is given (``AsyncRequest``) and what it reports (``QueueStats``).

Apart from the queue, so the finalize step and callers can name them without importing the
queue's machinery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cairn_agent.engine.save import SaveTarget


@dataclass(frozen=True, kw_only=True)
class AsyncRequest:
    """One async save as the facade schedules it."""

    sharded_state_dict: dict[str, Any]
    """megatron-core sharded state dict (``ShardedTensor``/``ShardedObject`` leaves + common)."""
    target: SaveTarget
    """Where and as what the save is committed."""
    thread_count: int = 1
    """Write threads of the worker, i.e. DCP files per rank."""
    on_commit: Callable[[], None] | None = None
    """Runs on every rank after the save is committed and published (e.g. retention)."""

    def __post_init__(self) -> None:
        if self.thread_count < 1:
            raise ValueError(f"thread_count must be >= 1, got {self.thread_count}")


@dataclass(frozen=True)
class QueueStats:
    """What the queue reuses across saves (for status reporting and tests)."""

    worker_pid: int | None
    """Pid of the live worker, None when none is running."""
    workers_started: int
    arenas_created: int
    """Staging arenas allocated so far (1 while the structure never changed)."""
    saves_staged: int
    """Saves staged into the current arena."""
    arena_data_ptr: int
    """Address of the current arena in this process (stable while it is reused)."""
    worker_arena_data_ptr: int
    """Address of the current arena in the worker."""
    worker_attaches: int
    """How many times a worker mapped an arena."""
    replans: int
    """How many times the global plan was (re)built."""
