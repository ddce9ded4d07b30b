"""Start-up GC removes every kind of leftover and nothing committed."""

from __future__ import annotations

from pathlib import Path

from cairn_agent.storage import layout
from cairn_agent.storage.gc import collect_leftovers
from cairn_agent.storage.listing import committed_iterations, list_staging_dirs
from cairn_agent.storage.tracker import read_tracker, write_tracker

from tests.storage.helpers import make_checkpoint, stage_shards


def test_removes_every_leftover_kind_and_keeps_committed(tmp_path: Path) -> None:
    final = make_checkpoint(tmp_path, 10)
    write_tracker(tmp_path, 10)
    staging = stage_shards(tmp_path, 20)
    trash = tmp_path / layout.trash_dir_name("iter_0000005", "beef")
    trash.mkdir()
    (trash / "__0_0.distcp").write_bytes(b"half deleted")
    tmp_root = tmp_path / layout.atomic_tmp_name(layout.TRACKER_FILENAME, "1234")
    tmp_root.write_bytes(b"2")
    tmp_inside = final / layout.atomic_tmp_name(layout.MANIFEST_FILENAME, "abcd")
    tmp_inside.write_bytes(b"{")
    user_file = tmp_path / ".user-notes"
    user_file.write_text("not ours")

    removed = collect_leftovers(tmp_path)

    assert sorted(removed) == sorted([staging, trash, tmp_root, tmp_inside])
    assert not any(p.exists() for p in removed)
    assert user_file.exists()
    assert committed_iterations(tmp_path) == [10]
    assert read_tracker(tmp_path) is not None and collect_leftovers(tmp_path) == []


def test_below_generation_keeps_live_staging(tmp_path: Path) -> None:
    old = stage_shards(tmp_path, 10, generation=1)
    live = stage_shards(tmp_path, 20, generation=2)
    assert collect_leftovers(tmp_path, below_generation=2) == [old]
    assert list_staging_dirs(tmp_path) == [live]


def test_missing_root_is_fine(tmp_path: Path) -> None:
    assert collect_leftovers(tmp_path / "absent") == []
