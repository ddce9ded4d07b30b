"""Typed, defaulted views of a Checkpoint's ``spec`` sections. Torch-free.

The API server applies the CRD's defaults on write, but objects created before a CRD upgrade,
or served by an emulator, may lack them; the operator and ``kubectl cairn`` read these sections
only through this module, so each default is written here once (a test holds the CRD to it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

DEFAULT_KEEP_LAST: Final = 3
"""``spec.retention.keepLast`` when unset (the CRD's default)."""


def section(spec: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    """``spec[keys[0]][keys[1]]...``, or an empty mapping where any level is absent or not one."""
    node: Any = spec
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def as_int(value: Any) -> int | None:
    """``value`` when it is an int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, kw_only=True)
class RetentionSpec:
    """``spec.retention``: which committed checkpoints to keep."""

    keep_last: int | None = DEFAULT_KEEP_LAST
    """``keepLast``: keep the newest N; None (a mistyped value) keeps every checkpoint."""
    keep_every: int | None = None
    """``keepEvery``: also keep iterations divisible by this."""
    pinned: tuple[int, ...] = ()
    """``pinned``: iterations never deleted, ascending."""
    dry_run: bool = False
    """``dryRun``: plan and report, never delete."""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> RetentionSpec:
        """Read ``spec.retention`` tolerantly: missing fields take the CRD's defaults."""
        retention = section(spec, "retention")
        pinned = retention.get("pinned")
        pins = pinned if isinstance(pinned, list) else []
        return cls(
            keep_last=as_int(retention.get("keepLast", DEFAULT_KEEP_LAST)),
            keep_every=as_int(retention.get("keepEvery")),
            pinned=tuple(sorted({p for p in pins if as_int(p) is not None})),
            dry_run=bool(retention.get("dryRun", False)),
        )
