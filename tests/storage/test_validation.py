"""Bad on-disk inputs raise the typed error that names the offending file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cairn_agent.errors import CheckpointCorruptError, TrackerCorruptError
from cairn_agent.storage import layout
from cairn_agent.storage.listing import is_committed, list_checkpoints
from cairn_agent.storage.manifest import (
    FileEntry,
    Manifest,
    read_manifest,
    verify_checkpoint_dir,
)
from cairn_agent.storage.tracker import TrackerValue, read_tracker, write_tracker

from tests.storage.helpers import make_checkpoint


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"", "empty"),
        (b"  \n\t", "whitespace"),
        (b"12abc", "expected decimal digits"),
        (b"-3", "negative"),
        (b"\xff\xfe\x81garbage", "not ASCII"),
        (b"1\x00", "NUL"),
        (b"\x00\x00\x00\x00", "NUL"),
        (b"1.5", "expected decimal digits"),
        (b"7" * 100, "bytes long"),
    ],
)
def test_corrupt_tracker_raises_naming_the_file(tmp_path: Path, content: bytes, what: str) -> None:
    tracker = layout.tracker_path(tmp_path)
    tracker.write_bytes(content)

    with pytest.raises(TrackerCorruptError, match=what) as info:
        read_tracker(tmp_path)

    assert info.value.path == tracker
    assert str(tracker) in str(info.value) and "delete it" in str(info.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"100", TrackerValue(100, False)),
        (b"0", TrackerValue(0, False)),
        (b"250\n", TrackerValue(250, False)),  # hand-edited: Megatron strips whitespace too
        (b"release", TrackerValue(0, True)),
    ],
)
def test_valid_tracker_contents(tmp_path: Path, content: bytes, expected: TrackerValue) -> None:
    layout.tracker_path(tmp_path).write_bytes(content)
    assert read_tracker(tmp_path) == expected
    assert read_tracker(layout.tracker_path(tmp_path)) == expected


def test_write_tracker_writes_megatron_bytes(tmp_path: Path) -> None:
    assert read_tracker(tmp_path) is None
    write_tracker(tmp_path, 1200)
    assert layout.tracker_path(tmp_path).read_bytes() == b"1200"
    write_tracker(tmp_path, 0, release=True)
    assert layout.tracker_path(tmp_path).read_bytes() == b"release"
    with pytest.raises(ValueError, match="non-negative"):
        write_tracker(tmp_path, -1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [layout.TRACKER_FILENAME]


def _remove_metadata(d: Path) -> None:
    (d / layout.METADATA_JSON).unlink()


def _garble_metadata(d: Path) -> None:
    (d / layout.METADATA_JSON).write_text("{not json")


def _wrong_backend(d: Path) -> None:
    (d / layout.METADATA_JSON).write_text(json.dumps({"sharded_backend": "zarr"}))


@pytest.mark.parametrize(
    ("damage", "what"),
    [(_remove_metadata, "missing"), (_garble_metadata, "not valid JSON"), (_wrong_backend, "zarr")],
)
def test_bad_metadata_json(tmp_path: Path, damage: Callable[[Path], None], what: str) -> None:
    final = make_checkpoint(tmp_path, 10)
    damage(final)

    with pytest.raises(CheckpointCorruptError, match=what) as info:
        verify_checkpoint_dir(final)

    assert info.value.path == final / layout.METADATA_JSON


def _garble_manifest(d: Path) -> str:
    (d / layout.MANIFEST_FILENAME).write_text('{"iteration": 10, "files": [')
    return layout.MANIFEST_FILENAME


def _manifest_wrong_types(d: Path) -> str:
    obj = json.loads((d / layout.MANIFEST_FILENAME).read_text())
    obj["world_size"] = "two"
    (d / layout.MANIFEST_FILENAME).write_text(json.dumps(obj))
    return layout.MANIFEST_FILENAME


def _delete_shard(d: Path) -> str:
    (d / "__1_0.distcp").unlink()
    return "__1_0.distcp"


def _truncate_shard(d: Path) -> str:
    data = (d / "__0_0.distcp").read_bytes()
    (d / "__0_0.distcp").write_bytes(data[:-1])
    return "__0_0.distcp"


def _flip_byte(d: Path) -> str:
    data = bytearray((d / "common.pt").read_bytes())
    data[0] ^= 0xFF
    (d / "common.pt").write_bytes(bytes(data))
    return "common.pt"


def _extra_shard(d: Path) -> str:
    (d / "__7_0.distcp").write_bytes(b"stray")
    return "__7_0.distcp"


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (_garble_manifest, "not valid JSON"),
        (_manifest_wrong_types, "malformed"),
        (_delete_shard, "missing"),
        (_truncate_shard, "size is"),
        (_flip_byte, "crc32"),
        (_extra_shard, "not listed"),
    ],
)
def test_bad_manifest_or_files(tmp_path: Path, damage: Callable[[Path], str], what: str) -> None:
    final = make_checkpoint(tmp_path, 10)
    culprit = damage(final)

    with pytest.raises(CheckpointCorruptError, match=what) as info:
        verify_checkpoint_dir(final)

    assert info.value.path == final / culprit


def test_shallow_verify_skips_crc_but_not_sizes(tmp_path: Path) -> None:
    final = make_checkpoint(tmp_path, 10)
    _flip_byte(final)
    assert verify_checkpoint_dir(final, deep=False) is not None
    _truncate_shard(final)
    with pytest.raises(CheckpointCorruptError, match="size is"):
        verify_checkpoint_dir(final, deep=False)


def test_manifest_of_another_iteration_is_rejected(tmp_path: Path) -> None:
    final = make_checkpoint(tmp_path, 10)
    moved = tmp_path / "iter_0000020"
    shutil.move(final, moved)
    with pytest.raises(CheckpointCorruptError, match="iteration 10"):
        verify_checkpoint_dir(moved)


def test_foreign_megatron_checkpoint_has_no_manifest(tmp_path: Path) -> None:
    final = make_checkpoint(tmp_path, 10)
    (final / layout.MANIFEST_FILENAME).unlink()
    assert verify_checkpoint_dir(final) is None
    assert is_committed(final)
    assert [(i.iteration, i.manifest) for i in list_checkpoints(tmp_path)] == [(10, None)]


def test_garbage_manifest_makes_dir_uncommitted(tmp_path: Path) -> None:
    final = make_checkpoint(tmp_path, 10)
    _garble_manifest(final)
    assert not is_committed(final)
    assert list_checkpoints(tmp_path) == []
    with pytest.raises(CheckpointCorruptError, match="not valid JSON"):
        read_manifest(final)


def test_manifest_round_trip_and_digest(tmp_path: Path) -> None:
    manifest = Manifest(
        iteration=5,
        generation=2,
        world_size=4,
        layout={"tp": 2, "pp": 1, "dp": 2},
        files={"__0_0.distcp": FileEntry(10, "0000abcd"), "common.pt": FileEntry(5, "ffffffff")},
        created_at=1.5,
        committed_at=2.5,
        extra={"host": "node-1"},
    )
    parsed = Manifest.from_json(manifest.to_json(), tmp_path / "m.json")
    assert parsed == manifest and parsed.digest() == manifest.digest()
    assert manifest.total_bytes == 15
    with pytest.raises(ValueError, match="crc32"):
        FileEntry(1, "ABCDEF01")
    with pytest.raises(ValueError, match="relative path"):
        Manifest(
            iteration=1,
            generation=0,
            world_size=1,
            layout={},
            created_at=0,
            committed_at=0,
            files={"../escape": FileEntry(1, "00000000")},
        )
