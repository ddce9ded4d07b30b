"""The server-side Table format ``kubectl get`` asks for.

kubectl sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the columns the
server chose: for a custom resource, Name plus the CRD's ``additionalPrinterColumns``. As on the
server, ``date`` columns are rendered as ages (``5m``, ``3h2m``) and missing values as null cells
(kubectl prints ``<none>``).
"""

from __future__ import annotations

import datetime
from typing import Any

TABLE_ACCEPT_MARK = "as=Table"

_NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
_AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def wants_table(accept: str | None) -> bool:
    """Whether a request's Accept header asks for the Table rendering."""
    return bool(accept) and TABLE_ACCEPT_MARK in str(accept)


def human_duration(seconds: float) -> str:
    """Age the way kubectl shows it (Kubernetes' ``duration.HumanDuration``)."""
    if seconds < -1:
        return "<invalid>"
    total = max(int(seconds), 0)
    minutes, hours, days = total // 60, total // 3600, total // 86400
    if total < 120:
        return f"{total}s"
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 730:
        return f"{days}d"
    years = days // 365
    return f"{years}y{days % 365}d" if years < 8 else f"{years}y"


def json_path(obj: Any, path: str) -> Any:
    """Value at a simple JSONPath (``.status.resumeFrom.iteration``); None where absent."""
    value = obj
    for part in path.strip().lstrip("{").rstrip("}").lstrip(".").split("."):
        if not part:
            continue
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(obj: dict[str, Any], column: dict[str, Any], now: datetime.datetime) -> Any:
    value = json_path(obj, column["jsonPath"])
    if value is None:
        return None
    if column.get("type") == "date":
        try:
            then = datetime.datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
        return human_duration((now - then).total_seconds())
    return value


def _definition(column: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": column["name"],
        "type": column.get("type", "string"),
        "format": column.get("format", ""),
        "description": column.get("description", ""),
        "priority": column.get("priority", 0),
    }


def to_table(
    objs: list[dict[str, Any]], columns: tuple[dict[str, Any], ...], list_meta: dict[str, Any]
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of objects with a resource's printer columns (Name first;
    Name and Age only when the resource declares none)."""
    chosen = tuple(columns) or (_AGE_COLUMN,)
    now = datetime.datetime.now(datetime.UTC)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": [_NAME_COLUMN] + [_definition(c) for c in chosen],
        "rows": [
            {
                "cells": [obj.get("metadata", {}).get("name")]
                + [_cell(obj, c, now) for c in chosen],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata", {}),
                },
            }
            for obj in objs
        ],
    }
