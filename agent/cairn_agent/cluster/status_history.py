"""The bounded histories the agent reports in its Checkpoint's status.

``savedIterations`` (newest ``MAX_SAVED_ITERATIONS``) and ``corruptIterations`` (newest
``MAX_CORRUPT_ITERATIONS``) are whole lists in a merge patch: each patch replaces the server's
list. So the reporter keeps them here, seeds them from the server before its first patch (a
restarted job keeps its predecessor's history), and builds every patch from them. Not
thread-safe: the reporter holds its lock around every call. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cairn_agent.resource import contract


class StatusHistory:
    """Saved and corrupt iterations as this process knows them, merged with the server's."""

    def __init__(self) -> None:
        self._saved: dict[int, dict[str, Any]] = {}
        self._deleted: set[int] = set()
        self._corrupt: list[dict[str, Any]] = []

    def merge_server(self, status: Mapping[str, Any]) -> None:
        """Take the server's entries under this process's own (which are newer)."""
        for item in status.get(contract.SAVED_ITERATIONS) or ():
            it = item.get("iteration") if isinstance(item, Mapping) else None
            if isinstance(it, int) and it not in self._deleted:
                self._saved.setdefault(it, dict(item))
        mine = {c["iteration"] for c in self._corrupt}
        old = [
            dict(c)
            for c in status.get(contract.CORRUPT_ITERATIONS) or ()
            if isinstance(c, Mapping) and c.get("iteration") not in mine
        ]
        self._corrupt = (old + self._corrupt)[-contract.MAX_CORRUPT_ITERATIONS :]

    def lists(self) -> dict[str, Any]:
        """Both lists as the status holds them, bounded."""
        newest = sorted(self._saved)[-contract.MAX_SAVED_ITERATIONS :]
        self._saved = {it: self._saved[it] for it in newest}
        return {
            contract.SAVED_ITERATIONS: [self._saved[it] for it in newest],
            contract.CORRUPT_ITERATIONS: list(self._corrupt),
        }

    def saved(self, entry: dict[str, Any], in_progress: Mapping[str, Any]) -> dict[str, Any]:
        """The patch for a committed save ``entry``; ``in_progress``: the pending
        ``saveInProgress`` (cleared unless it is a newer save's)."""
        self._saved[entry["iteration"]] = entry
        self._deleted.discard(entry["iteration"])
        saved = self.lists()[contract.SAVED_ITERATIONS]
        patch: dict[str, Any] = {
            contract.SAVED_ITERATIONS: saved,
            contract.LATEST_COMMITTED: saved[-1]["iteration"],
            contract.LAST_SAVE_TIME: entry["committedAt"],
        }
        if not in_progress or in_progress.get("iteration", -1) <= entry["iteration"]:
            patch[contract.SAVE_IN_PROGRESS] = None
        return patch

    def deleted(self, gone: Iterable[int]) -> dict[str, Any]:
        """The patch for iterations removed from storage."""
        gone = set(gone)
        self._deleted |= gone
        for it in gone:
            self._saved.pop(it, None)
        return {contract.SAVED_ITERATIONS: self.lists()[contract.SAVED_ITERATIONS]}

    def corrupt(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The patch for an iteration found corrupt (replaces an older entry for it)."""
        self._corrupt = [c for c in self._corrupt if c.get("iteration") != entry["iteration"]]
        self._corrupt = (self._corrupt + [entry])[-contract.MAX_CORRUPT_ITERATIONS :]
        return {contract.CORRUPT_ITERATIONS: list(self._corrupt)}
