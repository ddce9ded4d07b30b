"""Every reach of the test kit into KMock beyond its public API, in this one module.

KMock is pinned (``kmock==0.8`` in the ``sandbox`` extra of ``pyproject.toml``) because of what is
here: private names may change in any release. Before moving the pin, check each reach below
against the new release and run ``tests/emulator``. Everything else in the kit imports only
names that ``kmock/__init__.py`` exports.

Why no public API serves, per reach:

- ``StreamingError`` (``kmock._internal.rendering``): KMock wraps a failure that happens after a
  streaming response (a watch) sent its headers, so the server can end that stream instead of
  answering anew. ``CairnEmulator.__call__`` replaces ``Server.__call__`` (to bound the request
  log and route requests directly) and must unwrap it the same way; KMock exports no name for it.
- ``Bus``, ``ReactionMismatchError``, ``Response``: public names of ``kmock`` (its
  ``__init__`` imports them) that its ``__all__`` omits, so strict mypy needs an ignore; they are
  re-exported from here so that the ignore is written once.
- ``KubernetesEmulator._requests`` (the request log): KMock appends every request forever and
  offers no way to bound or append to it; the emulator keeps the last N (see ``record_request``).
- ``KubernetesEmulator._payloads`` and ``Reaction._source``/``_disabled``/``_requests``: KMock's
  dispatch (``Server._handle``) scans the whole request log once per reaction for each request;
  the emulator dispatches to user reactions itself (``try_reactions``) and needs to see them.
  ``View._source`` walks a reaction's filter chain to test one request (``reaction_sees``).
- ``KubernetesEmulator._errors``: unexpected failures are collected for ``emulator.errors`` only
  through ``Server.__call__``, which the emulator replaces (``record_error``).
- ``KubernetesEmulator._buses``: the per-resource event buses KMock's watches read; the emulator's
  watches publish to them (``buses``); there is no public accessor.
"""

from __future__ import annotations

from typing import Any

import aiohttp.web

# Exported by kmock/__init__ but left out of its __all__, which strict mypy goes by.
from kmock import (  # type: ignore[attr-defined]
    Bus,
    Filter,
    KubernetesEmulator,
    Priority,
    ReactionMismatchError,
    Request,
    Response,
    Root,
)
from kmock._internal.rendering import StreamingError

__all__ = [
    "Bus",
    "Response",
    "StreamingError",
    "buses",
    "recent_requests",
    "record_error",
    "record_request",
    "try_reactions",
]


def record_request(emulator: KubernetesEmulator, request: Request, *, limit: int) -> None:
    """Append ``request`` to KMock's request log, keeping only the newest ``limit``."""
    log: list[Request] = emulator._requests
    log.append(request)
    del log[:-limit]


def recent_requests(emulator: KubernetesEmulator) -> list[Request]:
    """A copy of the (bounded) request log, oldest first."""
    return list(emulator._requests)


def record_error(emulator: KubernetesEmulator, exc: Exception, *, limit: int) -> None:
    """Keep an unexpected failure for ``emulator.errors`` (bounded), when inside its context."""
    errors: list[list[Exception]] = emulator._errors
    if errors:
        errors[-1].append(exc)
        del errors[-1][:-limit]


def buses(emulator: KubernetesEmulator) -> dict[Any, Bus[Any]]:
    """KMock's event bus per resource (a defaultdict: a new resource gets a new bus)."""
    found: dict[Any, Bus[Any]] = emulator._buses
    return found


async def try_reactions(
    emulator: KubernetesEmulator, request: Request, *, log_limit: int
) -> aiohttp.web.StreamResponse | None:
    """The answer of the first user reaction (``emulator['get', ...] << 500``) that sees
    ``request``, as KMock would pick it; None when no reaction answers."""
    for reaction in _user_reactions(emulator):
        if _sees(reaction._source, request) and not reaction._disabled.is_set():
            try:
                answer: aiohttp.web.StreamResponse = await reaction(request)
            except ReactionMismatchError:
                reaction._disabled.set()
            except NotImplementedError:
                pass
            else:
                del reaction._requests[:-log_limit]
                return answer
    return None


def _user_reactions(emulator: KubernetesEmulator) -> list[Any]:
    # KMock's own fallbacks (priority -inf) are replaced by the emulator's routing: skip them.
    mine = [
        p for p in emulator._payloads if not (p.priorities and p.priorities[0] == float("-inf"))
    ]
    return sorted(mine, key=lambda p: tuple(-x for x in p.priorities))


def _sees(view: Any, request: Request) -> bool:
    """Whether a reaction's view sees the newest request.

    KMock answers this by scanning the view's whole request log; for the usual chains of plain
    filters over the root, checking the filters' criteria on this one request is the same."""
    node = view
    while not isinstance(node, Root):
        if type(node) is Filter:
            if not node.criteria(request):
                return False
        elif type(node) is not Priority:
            return request in view  # slices, groups, exclusions: history matters; scan (bounded)
        node = node._source
    return True
