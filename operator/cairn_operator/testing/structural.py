"""What the API server does to a custom object with a structural schema *before* validating it.

In the API server's order: null values of non-nullable fields are dropped, unknown fields are
pruned (except under ``x-kubernetes-preserve-unknown-fields``), then defaults are applied. The
object's root ``apiVersion``, ``kind`` and ``metadata`` are never pruned by the CRD's schema (the
server treats ObjectMeta itself). Pure functions over plain JSON values; never mutate the input.
"""

from __future__ import annotations

import copy
from typing import Any

Schema = dict[str, Any]

_ROOT_KEPT = frozenset({"apiVersion", "kind", "metadata"})


def drop_nulls(value: Any, schema: Schema) -> Any:
    """Return ``value`` without the nulls that the schema does not declare ``nullable``."""
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            sub = _property_schema(schema, key)
            if item is None and not (sub or {}).get("nullable", False):
                continue
            result[key] = drop_nulls(item, sub) if sub is not None else item
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [drop_nulls(item, schema["items"]) for item in value]
    return value


def prune(value: Any, schema: Schema) -> Any:
    """Return ``value`` without the fields its schema does not declare (the server's pruning)."""
    return _prune(value, schema, root=True, path="", removed=[])


def pruned_paths(value: Any, schema: Schema) -> list[str]:
    """The dotted paths of the fields :func:`prune` would remove, in document order."""
    removed: list[str] = []
    _prune(value, schema, root=True, path="", removed=removed)
    return removed


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Return ``value`` with the schema's defaults filled in, recursively (a default of ``{}``
    on an absent object lets the defaults of its own fields apply, as on the server)."""
    if isinstance(value, dict):
        result = dict(value)
        for key, sub in (schema.get("properties") or {}).items():
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = apply_defaults(result[key], sub)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def normalize(value: Any, schema: Schema) -> Any:
    """Drop nulls, prune, then default: the object as the server would store it."""
    return apply_defaults(prune(drop_nulls(value, schema), schema), schema)


def _property_schema(schema: Schema, key: str) -> Schema | None:
    properties = schema.get("properties")
    if isinstance(properties, dict) and key in properties:
        sub: Schema = properties[key]
        return sub
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        return additional
    return None


def _prune(value: Any, schema: Schema, *, root: bool, path: str, removed: list[str]) -> Any:
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            _prune(item, schema["items"], root=False, path=f"{path}[{i}]", removed=removed)
            for i, item in enumerate(value)
        ]
    if not isinstance(value, dict):
        return value
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields", False))
    result: dict[str, Any] = {}
    for key, item in value.items():
        child_path = f"{path}.{key}" if path else key
        if root and key in _ROOT_KEPT:
            result[key] = item
            continue
        sub = _property_schema(schema, key)
        if sub is None:
            if preserve:
                result[key] = item
            else:
                removed.append(child_path)
            continue
        result[key] = _prune(item, sub, root=False, path=child_path, removed=removed)
    return result
