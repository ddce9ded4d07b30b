"""Watch streams with the API server's resourceVersion semantics.

KMock's watch sends every existing object, then live events, and can lose events written between
its snapshot and its subscription. Here a watch subscribes first, then takes its snapshot (or,
given a ``resourceVersion``, replays the recent events after it from a bounded window: 410 Gone
when that is too old, as on the server), skips live events already covered, and ends after
``timeoutSeconds``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any

from kmock import resource

from cairn_operator.testing import selectors, table
from cairn_operator.testing._kmock_compat import Bus
from cairn_operator.testing.registry import Served
from cairn_operator.testing.store import Event, ObjectStore

_CLOSE: Event = {"type": "CLOSE", "object": {"metadata": {"resourceVersion": "0"}}}


class WatchHub:
    """Publishes write events and serves watch streams over them."""

    def __init__(
        self, store: ObjectStore, buses: dict[resource, Bus[Event]], *, window: int
    ) -> None:
        self._store = store
        self._buses = buses
        self._window: collections.deque[tuple[int, resource, Event]] = collections.deque(
            maxlen=window
        )

    async def publish(self, served: Served, events: list[Event]) -> None:
        """Hand the events of one write to current watchers and to the resume window."""
        for event in events:
            rv = int(event["object"]["metadata"]["resourceVersion"])
            self._window.append((rv, served.key, event))
            await self._buses[served.key].put(event)

    async def close_all(self) -> None:
        """End every open watch stream (before the server shuts down, which waits for them)."""
        for bus in list(self._buses.values()):
            await bus.put(_CLOSE)

    async def stream(
        self,
        served: Served,
        namespace: str | None,
        name: str | None,
        params: dict[str, str],
        *,
        as_table: bool,
    ) -> AsyncIterator[Any]:
        """The watch events of one request, as JSON-able items (first an empty chunk)."""
        keep = selectors.request_filter(params)

        def matches(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            return (
                (namespace is None or meta.get("namespace") == namespace)
                and (name is None or meta.get("name") == name)
                and keep(obj)
            )

        bus = self._buses[served.key]
        marker = await bus.mark()
        try:
            # The snapshot and its resourceVersion are taken with no await in between; later
            # events on the bus at or below it are already part of the snapshot.
            initial, sent_rv = self._initial(
                served, namespace, params.get("resourceVersion"), matches
            )
            yield b""  # send the headers now, even if nothing happens for a while
            for event in initial:
                yield _render(served, event, as_table)
            async for event in _live(bus, marker, params.get("timeoutSeconds")):
                rv = int(event["object"]["metadata"]["resourceVersion"])
                if rv > sent_rv and matches(event["object"]):
                    yield _render(served, event, as_table)
        finally:
            await bus.unmark(marker)

    def _initial(
        self,
        served: Served,
        namespace: str | None,
        since: str | None,
        matches: Callable[[dict[str, Any]], bool],
    ) -> tuple[list[Event], int]:
        current = self._store.resource_version
        if not since or since == "0":
            objs = self._store.select(served, namespace, matches)
            return [{"type": "ADDED", "object": obj} for obj in objs], current
        start = int(since)
        window_full = len(self._window) == self._window.maxlen
        if window_full and self._window and start < self._window[0][0] - 1:
            gone = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "reason": "Expired",
                "code": 410,
                "message": f"too old resource version: {start}",
            }
            return [{"type": "ERROR", "object": gone}], current
        replay = [
            ev
            for rv, key, ev in self._window
            if key == served.key and rv > start and matches(ev["object"])
        ]
        return replay, current


def _render(served: Served, event: Event, as_table: bool) -> Event:
    if not as_table or event["type"] == "ERROR":
        return event
    columns = served.crd.printer_columns if served.crd else ()
    return {"type": event["type"], "object": table.to_table([event["object"]], columns, {})}


async def _live(bus: Bus[Event], marker: Any, timeout: str | None) -> AsyncIterator[Event]:
    stream = bus.stream(since=marker)
    loop = asyncio.get_running_loop()
    deadline = None if not timeout else loop.time() + float(timeout)
    try:
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            try:
                event = await asyncio.wait_for(anext(stream), remaining)
            except TimeoutError:
                return
            if event is _CLOSE:
                return
            yield event
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
