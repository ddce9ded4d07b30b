"""Typed views of what the agent reports: saved iterations and corrupt ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cairn_agent import contract


@dataclasses.dataclass(frozen=True, kw_only=True)
class Saved:
    """One entry of ``status.savedIterations``."""

    iteration: int
    """The committed iteration."""
    verified: bool
    """Whether the agent verified it against its manifest."""
    bytes: int
    """Total size of its files."""


def saved_iterations(status: Mapping[str, Any]) -> list[Saved]:
    """The committed iterations the agent reported (plus ``latestCommittedIteration``), sorted."""
    found: dict[int, Saved] = {}
    for item in status.get(contract.SAVED_ITERATIONS) or ():
        it = item.get("iteration") if isinstance(item, Mapping) else None
        if isinstance(it, int) and it >= 0:
            size = item.get("bytes")
            found[it] = Saved(
                iteration=it,
                verified=bool(item.get("verified", False)),
                bytes=size if isinstance(size, int) else 0,
            )
    latest = status.get(contract.LATEST_COMMITTED)
    if isinstance(latest, int) and latest >= 0 and latest not in found:
        found[latest] = Saved(iteration=latest, verified=False, bytes=0)
    return [found[it] for it in sorted(found)]


def corrupt_iterations(status: Mapping[str, Any]) -> dict[int, str]:
    """Iteration -> "file: check" for every iteration the agent reported corrupt."""
    result: dict[int, str] = {}
    for item in status.get(contract.CORRUPT_ITERATIONS) or ():
        it = item.get("iteration") if isinstance(item, Mapping) else None
        if isinstance(it, int):
            result[it] = f"{item.get('file', '?')}: {item.get('check', 'failed a check')}"
    return result


def newest_verified(saved: list[Saved], corrupt: Mapping[int, str]) -> int | None:
    """The newest verified iteration not reported corrupt."""
    good = [s.iteration for s in saved if s.verified and s.iteration not in corrupt]
    return max(good) if good else None
