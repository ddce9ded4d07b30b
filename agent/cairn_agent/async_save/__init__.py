"""Async saves through a persistent worker process per rank.

``AsyncSaveQueue.schedule`` returns once this rank's tensors are staged in reusable host
buffers and handed to the rank's worker; ``maybe_finalize`` (collective) commits and publishes
every save all ranks have finished, or raises ``AsyncSaveError`` on every rank.

The names are imported lazily: the worker process imports ``cairn_agent.async_save.worker``
and must not pay for megatron-core, which only the training process's planning needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cairn_agent.async_save.queue import AsyncSaveQueue
    from cairn_agent.async_save.request import AsyncRequest, QueueStats

__all__ = ["AsyncRequest", "AsyncSaveQueue", "QueueStats"]


def __getattr__(name: str) -> Any:
    if name == "AsyncSaveQueue":
        from cairn_agent.async_save import queue

        return queue.AsyncSaveQueue
    if name in __all__:
        from cairn_agent.async_save import request

        return getattr(request, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
