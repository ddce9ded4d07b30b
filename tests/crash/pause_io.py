"""A ``DurableIO`` seam that stops its process at a chosen point, so a test can kill it there.

The crash tests need kills at exact places of the commit protocol (after ``metadata.json`` is
staged, between the commit rename and the tracker, inside retention, ...). Timing cannot hit
millisecond windows reliably, so the writer passes this seam (an injected object, never a
patch) to the engine and the storage layer. When a rule matches, the process writes a
``paused-<label>-<pid>.json`` marker into the control directory and blocks until the test
kills it, or, for the stale-writer tests, until the test creates ``release-<label>``.

Plain attributes only: it is pickled into the async-save worker with every write job.
Torch-free.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cairn_agent.storage.durable import DurableIO

IO_OPS = (
    "write_file",
    "fsync_file",
    "fsync_dir",
    "rename",
    "exchange",
    "replace",
    "remove_tree",
)
POINT = "point"
"""Rule op for the writer's own named points (``before_save:30``, ``before_retention:30``)."""
MAX_PAUSE_S = 900.0
"""A pause nobody killed or released within this long exits the process (status 70)."""
ANY_IO = "*"
"""Rule op matching every I/O op (not named points): "stop before the k-th durability op"."""


@dataclass(frozen=True, kw_only=True)
class PauseRule:
    """Where to stop: the ``nth`` op of kind ``op`` whose subject matches ``match``."""

    op: str
    """One of ``IO_OPS``, ``POINT`` or ``ANY_IO``."""
    match: str = ""
    """Regex searched in the subject: the path, ``"src -> dst"`` for renames, the point name."""
    when: str = "before"
    """``before`` or ``after`` the op (points are always ``before``)."""
    nth: int = 1
    """Which matching occurrence (1-based, counted in this process or per async write job)."""

    def __post_init__(self) -> None:
        if self.op not in (*IO_OPS, POINT, ANY_IO):
            raise ValueError(f"op {self.op!r} must be one of {IO_OPS + (POINT, ANY_IO)}")
        if self.when not in ("before", "after"):
            raise ValueError(f"when {self.when!r} must be 'before' or 'after'")
        if self.nth < 1:
            raise ValueError(f"nth must be >= 1, got {self.nth}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def marker_name(label: str, pid: int, seq: int) -> str:
    return f"paused-{label}-{pid}-{seq}.json"


def release_path(control_dir: Path, label: str, seq: int = 1) -> Path:
    """The file that lets the ``seq``-th pause of ``label`` continue."""
    return Path(control_dir) / f"release-{label}-{seq}"


class PauseIO(DurableIO):
    """``DurableIO`` that blocks where a rule matches (see module docstring).

    Each rule fires once; the ``k``-th pause of the process writes marker ``...-<k>.json``
    and waits for ``release-<label>-<k>``.
    """

    def __init__(self, control_dir: str, label: str, rules: list[dict[str, Any]]) -> None:
        self.control_dir = str(control_dir)
        self.label = label
        self.rules = [dict(rule) for rule in rules]
        self.counts = [0] * len(self.rules)
        self.pauses = 0

    # --- hook -----------------------------------------------------------------------------

    def _hook(self, op: str, subject: str, when: str) -> None:
        for index, raw in enumerate(self.rules):
            rule = PauseRule(**raw)
            if not _applies(rule, op, subject, when):
                continue
            self.counts[index] += 1
            if self.counts[index] == rule.nth:
                self.pauses += 1
                self._pause(rule, op, subject, when)
                return

    def _pause(self, rule: PauseRule, op: str, subject: str, when: str) -> None:
        control = Path(self.control_dir)
        info = {
            "label": self.label,
            "pid": os.getpid(),
            "op": op,
            "subject": subject,
            "when": when,
            "rule": rule.to_json(),
            "seq": self.pauses,
            "at": time.time(),
        }
        marker = control / marker_name(self.label, os.getpid(), self.pauses)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(info), encoding="utf-8")
        os.replace(tmp, marker)
        release = release_path(control, self.label, self.pauses)
        # Blocking is the point: the test kills this process group while it waits here. The
        # cap only matters if the test itself died: an abandoned writer must not spin forever.
        deadline = time.monotonic() + MAX_PAUSE_S
        while not release.exists():
            if time.monotonic() > deadline:
                os._exit(70)
            time.sleep(0.01)

    def point(self, name: str) -> None:
        """A named point of the writer's own loop (``before_save:30`` ...)."""
        self._hook(POINT, name, "before")

    # --- DurableIO ----------------------------------------------------------------------------

    def write_file(self, path: Path, data: bytes) -> None:
        self._hook("write_file", str(path), "before")
        super().write_file(path, data)
        self._hook("write_file", str(path), "after")

    def fsync_file(self, path: Path) -> None:
        self._hook("fsync_file", str(path), "before")
        super().fsync_file(path)
        self._hook("fsync_file", str(path), "after")

    def fsync_dir(self, path: Path) -> None:
        self._hook("fsync_dir", str(path), "before")
        super().fsync_dir(path)
        self._hook("fsync_dir", str(path), "after")

    def rename(self, src: Path, dst: Path) -> None:
        self._hook("rename", f"{src} -> {dst}", "before")
        super().rename(src, dst)
        self._hook("rename", f"{src} -> {dst}", "after")

    def exchange(self, a: Path, b: Path) -> None:
        self._hook("exchange", f"{a} <-> {b}", "before")
        super().exchange(a, b)
        self._hook("exchange", f"{a} <-> {b}", "after")

    def replace(self, src: Path, dst: Path) -> None:
        self._hook("replace", f"{src} -> {dst}", "before")
        super().replace(src, dst)
        self._hook("replace", f"{src} -> {dst}", "after")

    def remove_tree(self, path: Path) -> None:
        self._hook("remove_tree", str(path), "before")
        super().remove_tree(path)
        self._hook("remove_tree", str(path), "after")


def _applies(rule: PauseRule, op: str, subject: str, when: str) -> bool:
    if rule.op == ANY_IO:
        kind_ok = op in IO_OPS
    else:
        kind_ok = rule.op == op
    return kind_ok and rule.when == when and re.search(rule.match, subject) is not None
