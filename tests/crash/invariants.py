"""What must hold in a checkpoint root after any crash, checked with the storage layer itself.

After every kill the tests call :func:`check_after_kill`, which asserts:

(a) the tracker, if present, parses and names a committed directory that passes
    ``verify_checkpoint_dir(deep=True)``; so does Bridge's ``latest_train_state.pt``;
(b) every visible ``iter_*`` directory is committed, verifies deeply and its manifest names it;
(c) ``load_candidates(root)[0]`` is the tracker's target (else the newest committed dir) and
    verifies deeply; the restarted writer then loads it bit-exactly (checked from its events);
(d) after ``collect_leftovers`` no staging, trash, replaced or temp entry is left, and no
    committed directory was removed or changed;
(e) neither the tracker nor the newest committed iteration ever goes backwards, and the tracker
    is at least the last iteration the writer reported as published.

Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cairn_agent.storage import layout
from cairn_agent.storage.gc import collect_leftovers
from cairn_agent.storage.listing import (
    committed_iterations,
    is_committed,
    list_atomic_tmp_files,
    list_replaced_dirs,
    list_staging_dirs,
    list_trash_dirs,
)
from cairn_agent.storage.manifest import read_manifest, verify_checkpoint_dir
from cairn_agent.storage.resolve import load_candidates
from cairn_agent.storage.tracker import read_tracker

_ALLOWED_HIDDEN = {layout.GENERATION_FILENAME}


class InvariantError(AssertionError):
    """A crash left the checkpoint root in a state the commit protocol promises never to leave."""


@dataclass
class History:
    """What the kill loop has seen so far (for the never-backwards checks and the report)."""

    max_tracker: int = -1
    max_newest: int = -1
    kills: int = 0
    checks: int = 0
    leftovers_removed: int = 0
    kinds_of_leftover: set[str] = field(default_factory=set)
    lenient_bridge_tracker: bool = False
    """Count, rather than fail on, a ``latest_train_state.pt`` naming a missing checkpoint
    (the known issue ``test_bridge_tracker_never_names_a_missing_checkpoint...`` pins down),
    so a soak keeps looking for other failures."""
    bridge_tracker_missing: int = 0


def _fail(root: Path, what: str) -> None:
    listing = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    raise InvariantError(f"{root}: {what}\nroot holds: {listing}")


def _verify(root: Path, directory: Path, why: str) -> None:
    try:
        manifest = verify_checkpoint_dir(directory, deep=True)
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        _fail(root, f"{why}: {directory.name} fails deep verification: {exc}")
        return
    expected = layout.parse_iteration_dir_name(directory.name)
    if manifest is None or manifest.iteration != expected:
        _fail(root, f"{why}: {directory.name} has manifest {manifest!r}")


def check_tracker(root: Path) -> int | None:
    """(a): the tracker's iteration, after checking its target."""
    try:
        value = read_tracker(root)
    except Exception as exc:  # noqa: BLE001
        _fail(root, f"(a) the tracker does not parse: {exc}")
        return None
    if value is None:
        return None
    target = layout.iteration_dir(root, value.iteration, value.release)
    if not is_committed(target):
        _fail(root, f"(a) the tracker points at {target.name}, which is not committed")
    _verify(root, target, "(a) tracker target")
    return value.iteration


def check_bridge_tracker(root: Path) -> None:
    """(a'): ``latest_train_state.pt`` (the writer stores JSON in it) names a good checkpoint."""
    import json

    path = layout.latest_train_state_path(root)
    if not path.exists():
        return
    try:
        iteration = int(json.loads(path.read_bytes())["iteration"])
    except (ValueError, KeyError, TypeError) as exc:
        _fail(root, f"(a) {path.name} is torn or garbage: {exc}")
        return
    _verify(root, layout.iteration_dir(root, iteration), f"(a) {path.name} target")


def check_visible_dirs(root: Path) -> list[int]:
    """(b): every ``iter_*`` entry is a committed, deeply verifying checkpoint."""
    found = []
    for entry in sorted(root.iterdir()):
        iteration = layout.parse_iteration_dir_name(entry.name)
        if iteration is None:
            continue
        if not is_committed(entry):
            _fail(root, f"(b) visible {entry.name} is not committed")
        _verify(root, entry, "(b) visible dir")
        found.append(iteration)
    return found


def check_candidates(root: Path, tracker: int | None) -> int | None:
    """(c): the first load candidate is the tracker's target (else the newest) and verifies."""
    candidates = load_candidates(root)
    committed = committed_iterations(root)
    if not candidates:
        if tracker is not None or committed:
            _fail(root, f"(c) no load candidate although tracker={tracker}, committed={committed}")
        return None
    first = candidates[0]
    expected = tracker if tracker is not None else max(committed)
    if first.iteration != expected:
        _fail(
            root, f"(c) first candidate is {first.iteration} ({first.source}), expected {expected}"
        )
    _verify(root, first.path, "(c) first load candidate")
    return first.iteration


def _committed_digests(root: Path) -> dict[str, str]:
    return {
        entry.name: read_manifest(entry).digest()
        for entry in sorted(root.iterdir())
        if layout.parse_iteration_dir_name(entry.name) is not None and is_committed(entry)
    }


def _leftovers(root: Path) -> list[Path]:
    found = list_staging_dirs(root) + list_trash_dirs(root) + list_replaced_dirs(root)
    found += list_atomic_tmp_files(root)
    for entry in root.iterdir():
        if layout.is_iteration_dir_name(entry.name) and entry.is_dir():
            found += list_atomic_tmp_files(entry)
    return found


def check_gc(root: Path, history: History) -> None:
    """(d): GC removes every leftover and nothing committed."""
    before = _committed_digests(root)
    for path in _leftovers(root):
        history.kinds_of_leftover.add(path.name.split(".")[1])
    removed = collect_leftovers(root)
    history.leftovers_removed += len(removed)
    remaining = _leftovers(root)
    if remaining:
        _fail(root, f"(d) leftovers survive collect_leftovers: {[p.name for p in remaining]}")
    hidden = {p.name for p in root.iterdir() if p.name.startswith(".")} - _ALLOWED_HIDDEN
    if hidden:
        _fail(root, f"(d) unexpected hidden entries after GC: {sorted(hidden)}")
    after = _committed_digests(root)
    lost = {name for name in before if after.get(name) != before[name]}
    if lost:
        _fail(root, f"(d) GC removed or changed committed checkpoints {sorted(lost)}")


def check_after_kill(root: Path, history: History, published: int | None) -> int | None:
    """Every invariant (module docstring); returns the iteration the writer must resume from."""
    root = Path(root)
    history.kills += 1
    tracker = check_tracker(root)
    try:
        check_bridge_tracker(root)
    except InvariantError:
        if not history.lenient_bridge_tracker:
            raise
        history.bridge_tracker_missing += 1
    check_visible_dirs(root)
    if published is not None and (tracker is None or tracker < published):
        _fail(root, f"(e) the writer published {published}, but the tracker says {tracker}")
    check_gc(root, history)
    check_visible_dirs(root)
    resume = check_candidates(root, tracker)
    newest = max(committed_iterations(root), default=-1)
    if newest < history.max_newest:
        _fail(root, f"(e) newest committed went back from {history.max_newest} to {newest}")
    if tracker is not None and tracker < history.max_tracker:
        _fail(root, f"(e) the tracker went back from {history.max_tracker} to {tracker}")
    history.max_newest = newest
    history.max_tracker = max(history.max_tracker, tracker if tracker is not None else -1)
    history.checks += 1
    return resume


def root_snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``root`` -> (inode, size, mtime_ns): "nothing changed" means equal."""
    snap: dict[str, tuple[int, int, int]] = {}
    for path in sorted(Path(root).rglob("*")):
        st = path.stat()
        snap[path.relative_to(root).as_posix()] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return snap
