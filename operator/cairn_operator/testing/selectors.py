"""Label and field selectors of list and watch requests (KMock ignores them and returns all).

Supported, as on the server: ``key``, ``!key``, ``key=value``, ``key==value``, ``key!=value``,
``key in (a,b)``, ``key notin (a,b)`` for labels; ``path=value`` / ``path!=value`` over dotted
object paths (``metadata.name``, ``status.phase``, ``involvedObject.name``) for fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kmock import KubernetesError

Predicate = Callable[[dict[str, Any]], bool]

_SET_TERM = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(selector: str) -> list[str]:
    # Commas inside "in (a,b)" do not separate terms.
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term.strip() for term in terms if term.strip()]


def _label_term(term: str) -> Callable[[dict[str, str]], bool]:
    match = _SET_TERM.match(term)
    if match:
        key, op, values = (
            match.group(1),
            match.group(2),
            {v.strip() for v in match.group(3).split(",")},
        )
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in term:
            key, value = (part.strip() for part in term.split(op, 1))
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        key = term[1:].strip()
        return lambda labels: key not in labels
    if not term or " " in term:
        raise KubernetesError(
            status=400, reason="BadRequest", message=f"unable to parse requirement: {term!r}"
        )
    return lambda labels: term in labels


def label_selector(selector: str | None) -> Predicate:
    """A predicate over objects for a ``labelSelector`` query parameter."""
    terms = [_label_term(term) for term in _split_terms(selector or "")]
    return lambda obj: all(term(obj.get("metadata", {}).get("labels") or {}) for term in terms)


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _field_term(term: str) -> Predicate:
    for op in ("!=", "==", "="):
        if op in term:
            path, value = (part.strip() for part in term.split(op, 1))
            if op == "!=":
                return lambda obj: _field_value(obj, path) != value
            return lambda obj: _field_value(obj, path) == value
    raise KubernetesError(
        status=400, reason="BadRequest", message=f"invalid field selector: {term!r}"
    )


def field_selector(selector: str | None) -> Predicate:
    """A predicate over objects for a ``fieldSelector`` query parameter."""
    terms = [_field_term(term) for term in _split_terms(selector or "")]
    return lambda obj: all(term(obj) for term in terms)


def request_filter(params: dict[str, str]) -> Predicate:
    """Both selectors of a request's query parameters combined."""
    labels = label_selector(params.get("labelSelector"))
    fields = field_selector(params.get("fieldSelector"))
    return lambda obj: labels(obj) and fields(obj)
