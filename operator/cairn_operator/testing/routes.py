"""Kubernetes API paths, parsed (``/api/v1/...`` and ``/apis/<group>/<version>/...``).

KMock cannot parse some paths the emulator must serve (``/api/v1/namespaces``, cluster-scoped).
``guess_action`` names the Kubernetes action of a request the way KMock does, so filters such as
``emulator['list', 'checkpoints']`` match requests the emulator parsed itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmock import action, method


@dataclass(frozen=True)
class Route:
    """A parsed Kubernetes API path."""

    group: str
    version: str | None
    namespace: str | None
    plural: str | None
    name: str | None
    subresource: str | None


def parse_route(path: str) -> Route | None:
    """Parse ``/api/v1/...`` and ``/apis/<group>/<version>/...``; None for other paths."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[1:]
    elif parts[:1] == ["apis"] and len(parts) >= 2:
        group, rest = parts[1], parts[2:]
    else:
        return None
    version, rest = (rest[0], rest[1:]) if rest else (None, [])
    namespace = None
    # /namespaces/<ns>/<plural>/... is namespaced; /namespaces[/<name>[/status]] is the resource.
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    rest += [None] * (3 - len(rest))  # type: ignore[list-item]
    return Route(
        group, version, namespace, rest[0], rest[1], "/".join(p for p in rest[2:] if p) or None
    )


def guess_action(route: Route | None, verb: method, query: dict[str, str]) -> action | None:
    """The Kubernetes action of a request (None for non-API paths and other combinations)."""
    if route is None:
        return None
    if verb == method.GET and query.get("watch") == "true":
        return action.WATCH
    if route.name is None:
        return {method.GET: action.LIST, method.POST: action.CREATE}.get(verb)
    return {
        method.GET: action.FETCH,
        method.PATCH: action.UPDATE,
        method.DELETE: action.DELETE,
    }.get(verb)
