"""Every reach into megatron-core's private API, in one place (pinned: megatron-core==0.16.1).

Re-check when the pin moves; tests/engine and tests/api exercise each one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# megatron-core's own save strips what cannot be serialised from ``content_metadata`` before
# writing ``common.pt``; Cairn writes common.pt itself and must store the same form so that
# megatron-core's load reads it back identically. There is no public equivalent.
from megatron.core.dist_checkpointing.utils import (
    _clean_metadata_for_serialization as clean_metadata_for_serialization,
)


def rerun_state_machine_initialised() -> bool:
    """Whether the run created megatron-core's rerun state machine.

    Its public getter creates one (and warns) when none exists; only the module global tells
    whether the run has one whose state is worth saving.
    """
    from megatron.core import rerun_state_machine as rsm

    machine: Any = getattr(rsm, "_GLOBAL_RERUN_STATE_MACHINE", None)
    return machine is not None


@contextmanager
def read_through(factory: Callable[[Any], Any]) -> Iterator[None]:
    """Within the block, megatron-core's ``torch_dist`` load reads through ``factory(dir)``.

    Its load strategy builds its caching DCP reader inside ``load`` from a module function and
    takes no reader argument; the function is swapped for the block and restored after.
    """
    from megatron.core.dist_checkpointing.strategies import torch as strategies

    original = strategies._get_filesystem_reader

    def reader(checkpoint_dir: Any, cache_metadata: bool = False) -> Any:
        return factory(checkpoint_dir) if cache_metadata else original(checkpoint_dir)

    strategies._get_filesystem_reader = reader
    try:
        yield
    finally:
        strategies._get_filesystem_reader = original


__all__ = ["clean_metadata_for_serialization", "read_through", "rerun_state_machine_initialised"]
