"""CEL validation rules (``x-kubernetes-validations``) of a CRD schema, evaluated with celpy.

The API server evaluates each rule with ``self`` bound to the value at the rule's schema node.
A *transition rule* (one that mentions ``oldSelf``) runs only on an update, and only where the
old object has a value at the same place; list items are paired with their old selves only in
``x-kubernetes-list-type: map`` lists (by the map keys), as on the server. A rule that evaluates
to false yields the rule's ``message`` in the server's error format.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

Schema = dict[str, Any]

_OLD_SELF = re.compile(r"\boldSelf\b")


@dataclass(frozen=True, kw_only=True)
class CelRule:
    """One compiled ``x-kubernetes-validations`` entry."""

    rule: str
    """The CEL expression; true means valid."""
    message: str
    """What the user is told when the rule is false."""
    transition: bool
    """Whether the rule reads ``oldSelf`` (evaluated on updates only)."""


@dataclass(frozen=True, kw_only=True)
class CelViolation:
    """A rule that did not hold, at a place in the object."""

    path: str
    """Dotted path of the value the rule was evaluated on (``spec.storage.persistent``)."""
    rule: CelRule
    value_type: str
    """JSON type of that value, as the server names it in the error (``object``, ``string``)."""

    def __str__(self) -> str:
        return f'{self.path}: Invalid value: "{self.value_type}": {self.rule.message}'


@functools.lru_cache(maxsize=256)
def _program(rule: str) -> Any:
    # Compiling parses with lark (milliseconds); each distinct rule text is compiled once.
    env = celpy.Environment()
    return env.program(env.compile(rule))


def compile_rule(entry: dict[str, Any]) -> CelRule:
    """Compile one ``x-kubernetes-validations`` entry; raises ``ValueError`` naming the rule
    if it does not parse."""
    text = str(entry["rule"])
    try:
        _program(text)
    except CELParseError as exc:
        raise ValueError(f"CEL rule {text!r} does not parse: {exc}") from exc
    message = str(entry.get("message") or f"failed rule: {text}")
    return CelRule(rule=text, message=message, transition=bool(_OLD_SELF.search(text)))


def rules_of(schema: Schema) -> list[CelRule]:
    """The compiled rules declared directly on one schema node."""
    return [compile_rule(entry) for entry in schema.get("x-kubernetes-validations") or ()]


def all_rules(schema: Schema, path: str = "") -> Iterator[tuple[str, CelRule]]:
    """Every rule in a schema tree with the dotted schema path it is declared at."""
    for rule in rules_of(schema):
        yield path, rule
    for key, sub in (schema.get("properties") or {}).items():
        yield from all_rules(sub, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        yield from all_rules(schema["items"], f"{path}[*]")


def evaluate_rule(rule: CelRule, value: Any, old: Any = None) -> bool:
    """Whether ``rule`` holds for ``value`` (and ``old`` for transition rules).

    An evaluation error (e.g. a field the rule reads without ``has()``) counts as a violation,
    as on the server."""
    old_key = json.dumps(old, sort_keys=True) if rule.transition else ""
    return _evaluate_cached(rule.rule, rule.transition, json.dumps(value, sort_keys=True), old_key)


@functools.lru_cache(maxsize=4096)
def _evaluate_cached(rule: str, transition: bool, value_json: str, old_json: str) -> bool:
    # CEL is pure, so results are memoized by the values' JSON: celpy interprets the parse tree
    # (milliseconds per rule), and most writes (status patches) leave the spec as it was.
    activation = {"self": json_to_cel(json.loads(value_json))}
    if transition:
        activation["oldSelf"] = json_to_cel(json.loads(old_json))
    try:
        result = _program(rule).evaluate(activation)
    except CELEvalError:
        return False
    return result is True or (isinstance(result, celtypes.BoolType) and bool(result))


def validate(value: Any, schema: Schema, old: Any = None) -> list[CelViolation]:
    """Evaluate every rule of ``schema`` over ``value``; ``old`` is the stored object on update."""
    violations: list[CelViolation] = []
    _walk(value, schema, old, has_old=old is not None, path="", out=violations)
    return violations


def _walk(
    value: Any, schema: Schema, old: Any, *, has_old: bool, path: str, out: list[CelViolation]
) -> None:
    for rule in rules_of(schema):
        if rule.transition and not has_old:
            continue
        if not evaluate_rule(rule, value, old):
            out.append(CelViolation(path=path or "<root>", rule=rule, value_type=_type_name(value)))
    if isinstance(value, dict):
        _walk_properties(value, schema, old, has_old=has_old, path=path, out=out)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        _walk_items(value, schema, old, has_old=has_old, path=path, out=out)


def _walk_properties(
    value: dict[str, Any],
    schema: Schema,
    old: Any,
    *,
    has_old: bool,
    path: str,
    out: list[CelViolation],
) -> None:
    for key, sub in (schema.get("properties") or {}).items():
        if key not in value:
            continue
        child_has_old = has_old and isinstance(old, dict) and key in old
        child_old = old[key] if child_has_old else None
        child_path = f"{path}.{key}" if path else key
        _walk(value[key], sub, child_old, has_old=child_has_old, path=child_path, out=out)


def _walk_items(
    value: list[Any],
    schema: Schema,
    old: Any,
    *,
    has_old: bool,
    path: str,
    out: list[CelViolation],
) -> None:
    olds = _old_items_by_key(schema, old) if has_old else {}
    keys = schema.get("x-kubernetes-list-map-keys") or []
    for index, item in enumerate(value):
        key = _map_key(item, keys)
        item_has_old = key is not None and key in olds
        _walk(
            item,
            schema["items"],
            olds.get(key) if key is not None else None,
            has_old=item_has_old,
            path=f"{path}[{index}]",
            out=out,
        )


def _old_items_by_key(schema: Schema, old: Any) -> dict[tuple[Any, ...], Any]:
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(old, list):
        return {}
    pairs = ((_map_key(item, keys), item) for item in old)
    return {key: item for key, item in pairs if key is not None}


def _map_key(item: Any, keys: list[str]) -> tuple[Any, ...] | None:
    if not keys or not isinstance(item, dict):
        return None
    return tuple(item.get(k) for k in keys)


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string" if isinstance(value, str) else "null"
