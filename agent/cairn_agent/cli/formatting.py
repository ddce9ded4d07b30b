"""Human-readable rendering shared by ``cairn`` and ``kubectl cairn``: sizes, ages, tables."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from cairn_agent.resource.times import parse_time

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(size: int | None) -> str:
    """``1536`` -> ``1.5 KiB``; ``None`` -> ``-``."""
    if size is None:
        return "-"
    value = float(size)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def human_age(seconds: float | None) -> str:
    """kubectl-style age: ``42s``, ``5m``, ``3h``, ``2d``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{int(seconds)}s"
    if seconds < 2 * 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def age_of_unix(timestamp: float | None, now: float | None = None) -> float | None:
    """Seconds since a Unix timestamp (None stays None)."""
    if timestamp is None:
        return None
    return (time.time() if now is None else now) - timestamp


def parse_rfc3339(value: Any) -> float | None:
    """Unix time of an RFC 3339 string such as Kubernetes writes; None if absent or unparsable."""
    moment = parse_time(value)
    return None if moment is None else moment.timestamp()


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """kubectl-style table: upper-case headers, columns padded by three spaces."""
    cells = [[str(h).upper() for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return "<none>" if value is None else str(value)


def to_json(obj: object) -> str:
    """Indented, key-sorted JSON for ``--json`` outputs (stable for scripts and diffs)."""
    return json.dumps(obj, indent=2, sort_keys=True)
