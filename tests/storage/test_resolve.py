"""Load resolution: pinned, tracker, newest committed, non-persistent, and fallbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from cairn_agent.errors import CheckpointNotFoundError, TrackerCorruptError
from cairn_agent.storage import layout
from cairn_agent.storage.resolve import LoadCandidate, load_candidates
from cairn_agent.storage.tracker import write_tracker

from tests.storage.helpers import make_checkpoint, stage_shards


def _summary(candidates: list[LoadCandidate]) -> list[tuple[int, str]]:
    return [(c.iteration, c.source) for c in candidates]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for iteration in (10, 20, 30):
        make_checkpoint(tmp_path, iteration)
    return tmp_path


def test_nothing_to_load(tmp_path: Path) -> None:
    assert load_candidates(tmp_path) == []
    assert load_candidates(tmp_path / "never-created") == []
    stage_shards(tmp_path, 5)
    assert load_candidates(tmp_path) == []


def test_tracker_first_then_older_committed(root: Path) -> None:
    write_tracker(root, 20)
    candidates = load_candidates(root)
    # 30 is committed but unpublished (e.g. finalize crashed): never preferred over the tracker.
    assert _summary(candidates) == [(20, "tracker"), (10, "newest-committed")]
    assert candidates[0].path == layout.iteration_dir(root, 20)


def test_newest_committed_without_tracker(root: Path) -> None:
    (root / "iter_0000040").mkdir()  # half-written Megatron save: no metadata.json
    assert _summary(load_candidates(root)) == [
        (30, "newest-committed"),
        (20, "newest-committed"),
        (10, "newest-committed"),
    ]


def test_pinned_wins_and_missing_pin_is_an_error(root: Path) -> None:
    write_tracker(root, 30)
    nonpersistent = root / layout.NON_PERSISTENT_SUBDIR
    make_checkpoint(nonpersistent, 35)
    candidates = load_candidates(root, pinned=20, non_persistent_roots=[nonpersistent])
    assert _summary(candidates) == [(20, "pinned"), (10, "newest-committed")]

    with pytest.raises(CheckpointNotFoundError, match="pinned iteration 25"):
        load_candidates(root, pinned=25)


def test_tracker_to_missing_dir_is_kept_first(root: Path) -> None:
    write_tracker(root, 50)
    candidates = load_candidates(root)
    assert _summary(candidates) == [
        (50, "tracker"),
        (30, "newest-committed"),
        (20, "newest-committed"),
        (10, "newest-committed"),
    ]
    assert not candidates[0].path.exists()


def test_non_persistent_at_least_as_new_wins(root: Path) -> None:
    write_tracker(root, 30)
    np_root = root / layout.NON_PERSISTENT_SUBDIR
    make_checkpoint(np_root, 30)
    make_checkpoint(np_root, 25)
    write_tracker(np_root, 30)
    assert _summary(load_candidates(root, non_persistent_roots=[np_root])) == [
        (30, "non-persistent"),
        (30, "tracker"),
        (20, "newest-committed"),
        (10, "newest-committed"),
    ]


def test_older_non_persistent_loses(root: Path) -> None:
    write_tracker(root, 30)
    np_root = root / layout.NON_PERSISTENT_SUBDIR
    make_checkpoint(np_root, 25)
    candidates = load_candidates(root, non_persistent_roots=[np_root])
    assert _summary(candidates)[0] == (30, "tracker")
    assert all(c.source != "non-persistent" for c in candidates)


def test_non_persistent_uses_newest_committed_when_its_tracker_is_unfinished(
    tmp_path: Path,
) -> None:
    np_a, np_b = tmp_path / "np-a", tmp_path / "np-b"
    make_checkpoint(np_a, 40)
    write_tracker(np_a, 45)  # points at a save that never committed
    make_checkpoint(np_b, 42)
    candidates = load_candidates(tmp_path / "persistent", non_persistent_roots=[np_a, np_b])
    assert _summary(candidates) == [(42, "non-persistent")]
    assert candidates[0].path == layout.iteration_dir(np_b, 42)


def test_release_tracker(tmp_path: Path) -> None:
    release = tmp_path / layout.RELEASE_NAME
    release.mkdir()
    (release / layout.METADATA_JSON).write_text('{"sharded_backend": "torch_dist"}')
    write_tracker(tmp_path, 0, release=True)
    [candidate] = load_candidates(tmp_path)
    assert (candidate.release, candidate.path, candidate.source) == (True, release, "tracker")


def test_corrupt_tracker_raises(root: Path) -> None:
    layout.tracker_path(root).write_bytes(b"")
    with pytest.raises(TrackerCorruptError):
        load_candidates(root)
    np_root = root / "np"
    np_root.mkdir()
    layout.tracker_path(root).write_bytes(b"30")
    layout.tracker_path(np_root).write_bytes(b"x")
    with pytest.raises(TrackerCorruptError) as info:
        load_candidates(root, non_persistent_roots=[np_root])
    assert info.value.path == layout.tracker_path(np_root)
