"""Validation of custom objects against their CRD, as the API server does on every write.

``validate_checkpoint`` / ``prune_checkpoint`` are for tests that check that whatever the agent or
the operator writes to a ``Checkpoint`` would be accepted by a real API server and not pruned.
The order matches the server: drop non-nullable nulls, prune unknown fields, apply defaults, then
the OpenAPI schema, then the CEL rules (only when the schema holds, so rules see the right types).
"""

from __future__ import annotations

import copy
import datetime
import functools
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cairn_operator.crds import checkpoint_crd
from cairn_operator.testing import cel, structural

Schema = dict[str, Any]

DEFAULT_CRD_PATH: Traversable = checkpoint_crd()
"""The Checkpoint CRD shipped in the package (``cairn_operator/crds``)."""


@dataclass(frozen=True, kw_only=True)
class CrdVersion:
    """One served version of a CRD, with what the emulator needs to know about it."""

    group: str
    """API group, e.g. ``cairn.dev``."""
    version: str
    """Version name, e.g. ``v1alpha1``."""
    kind: str
    """Kind, e.g. ``Checkpoint``."""
    plural: str
    """Plural resource name, e.g. ``checkpoints``."""
    singular: str
    """Singular resource name."""
    short_names: tuple[str, ...]
    """Short names ``kubectl`` accepts (``ckpt``)."""
    namespaced: bool
    """Whether objects live in namespaces."""
    schema: Schema
    """The ``openAPIV3Schema``."""
    subresources: tuple[str, ...]
    """Served subresources (``status``)."""
    printer_columns: tuple[dict[str, Any], ...]
    """``additionalPrinterColumns`` for ``kubectl get``."""
    categories: tuple[str, ...] = ()
    """Categories (``kubectl get cairn``)."""
    crd: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The whole CRD object it came from."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def load_crd(path: Path | str | Traversable) -> dict[str, Any]:
    """Read a CRD manifest (YAML); raises ``ValueError`` if it is not a v1 CRD."""
    source = Path(path) if isinstance(path, str) else path
    crd = yaml.safe_load(source.read_text(encoding="utf-8"))
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{path} is not a CustomResourceDefinition manifest")
    return crd


def crd_versions(crd: dict[str, Any]) -> list[CrdVersion]:
    """The served versions of a CRD object."""
    spec = crd["spec"]
    names = spec["names"]
    return [
        CrdVersion(
            group=spec["group"],
            version=entry["name"],
            kind=names["kind"],
            plural=names["plural"],
            singular=names.get("singular", names["kind"].lower()),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            schema=entry.get("schema", {}).get("openAPIV3Schema", {"type": "object"}),
            subresources=tuple((entry.get("subresources") or {}).keys()),
            printer_columns=tuple(entry.get("additionalPrinterColumns") or ()),
            crd=crd,
        )
        for entry in spec["versions"]
        if entry.get("served", True)
    ]


def to_json_schema(schema: Any) -> Any:
    """Translate an OpenAPI v3 structural schema for ``jsonschema``: ``nullable`` becomes a
    ``null`` type; ``x-kubernetes-*`` and ``default`` are left out (not validation keywords)."""
    if isinstance(schema, list):
        return [to_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("default", "nullable", "description"):
            continue
        if key == "properties":
            result[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        else:
            result[key] = to_json_schema(value)
    if schema.get("nullable") and "type" in result:
        result["type"] = [result["type"], "null"]
    return result


_FORMATS = jsonschema.FormatChecker(formats=())


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if "T" not in value.upper():
        raise ValueError("expected RFC 3339 date-time, e.g. 2026-01-02T03:04:05Z")
    parsed = datetime.datetime.fromisoformat(value.upper())
    if parsed.tzinfo is None:
        raise ValueError("RFC 3339 date-time needs a time zone, e.g. a trailing Z")
    return True


_FORMATS.checks("date-time", raises=ValueError)(_is_date_time)

# Keyed by the schema object's id; the schema is kept in the value so the id stays unique.
_VALIDATORS: dict[int, tuple[Schema, Any]] = {}


def _validator(schema: Schema) -> Any:
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        if len(_VALIDATORS) >= 512:  # CRD rewrites bring new schema objects; stay bounded
            _VALIDATORS.clear()
        translated = to_json_schema(schema)
        cls = jsonschema.validators.validator_for(translated, default=jsonschema.Draft7Validator)
        cached = (schema, cls(translated, format_checker=_FORMATS))
        _VALIDATORS[id(schema)] = cached
    return cached[1]


def schema_errors(obj: Any, schema: Schema, old: Any = None) -> list[str]:
    """OpenAPI schema violations, formatted like the API server's field errors.

    With ``old`` (an update), fields equal to the stored ones are not validated again, like
    the server's validation ratcheting; that also keeps status patches cheap."""
    return _ratcheted(obj, old, schema, "")


def _ratcheted(value: Any, old: Any, schema: Schema, prefix: str) -> list[str]:
    if not (isinstance(value, dict) and isinstance(old, dict) and schema.get("properties")):
        return _errors_at(value, schema, prefix)
    dot = f"{prefix}." if prefix else ""
    errors = [
        f"{dot}{key}: Required value" for key in schema.get("required") or () if key not in value
    ]
    for key, sub in schema["properties"].items():
        if key in value and value[key] != old.get(key):
            errors += _ratcheted(value[key], old.get(key), sub, f"{dot}{key}")
    return errors


def _errors_at(value: Any, schema: Schema, prefix: str) -> list[str]:
    errors = sorted(
        _validator(schema).iter_errors(value), key=lambda e: list(map(str, e.absolute_path))
    )
    return [_format_schema_error(error, prefix) for error in errors]


def _format_schema_error(error: jsonschema.ValidationError, prefix: str = "") -> str:
    path = prefix + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
    )
    path = path.lstrip(".")
    if error.validator == "required":
        return f"{path + '.' if path else ''}{_missing_name(error)}: Required value"
    if error.validator == "enum":
        allowed = ", ".join(f'"{v}"' for v in error.validator_value)
        return f"{path}: Unsupported value: {error.instance!r}: supported values: {allowed}"
    return f"{path or '<root>'}: Invalid value: {error.instance!r}: {error.message}"


def _missing_name(error: jsonschema.ValidationError) -> str:
    # jsonschema says "'x' is a required property"; the server names the field.
    message = str(error.message)
    return message.split("'")[1] if "'" in message else message


def validate_object(
    obj: dict[str, Any], version: CrdVersion, old: dict[str, Any] | None
) -> list[str]:
    """Schema then CEL errors of an already normalized object (see ``structural.normalize``)."""
    errors = schema_errors(obj, version.schema, old)
    if errors:
        return errors
    return [str(v) for v in cel.validate(obj, version.schema, old)]


@functools.lru_cache(maxsize=1)
def checkpoint_version() -> CrdVersion:
    """The ``Checkpoint`` version of the packaged CRD."""
    return crd_versions(load_crd(DEFAULT_CRD_PATH))[0]


def prune_checkpoint(obj: dict[str, Any]) -> dict[str, Any]:
    """The Checkpoint as the API server would store it: non-nullable nulls dropped and unknown
    fields pruned (no defaults applied, so ``prune_checkpoint(x) == x`` means nothing is lost)."""
    schema = checkpoint_version().schema
    result: dict[str, Any] = structural.prune(
        structural.drop_nulls(copy.deepcopy(obj), schema), schema
    )
    return result


def pruned_checkpoint_fields(obj: dict[str, Any]) -> list[str]:
    """Dotted paths of the fields of ``obj`` the API server would silently prune."""
    return structural.pruned_paths(obj, checkpoint_version().schema)


def validate_checkpoint(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Errors the API server would answer a write of ``obj`` with (422 Invalid); empty if valid.

    ``old`` is the stored object for an update: CEL transition rules (immutability of
    ``spec.storage.persistent``) compare against it, and fields equal to the old ones are not
    validated again (the server's validation ratcheting): pass ``old=None`` to check the whole
    object. Both are normalized first (nulls, pruning, defaults), like the server does."""
    schema = checkpoint_version().schema
    new = structural.normalize(obj, schema)
    previous = structural.normalize(old, schema) if old is not None else None
    return validate_object(new, checkpoint_version(), previous)
