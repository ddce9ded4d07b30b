"""The commit protocol (DESIGN.md §3 steps 1-4): order of durable operations and crash safety."""

from __future__ import annotations

from pathlib import Path

import pytest
from cairn_agent.errors import CommitError, StaleGenerationError
from cairn_agent.storage import layout
from cairn_agent.storage.commit import (
    abort_staging_dir,
    commit_staging_dir,
    create_staging_dir,
    publish,
)
from cairn_agent.storage.durable import DurableIO
from cairn_agent.storage.gc import collect_leftovers
from cairn_agent.storage.generation import claim_generation
from cairn_agent.storage.listing import list_checkpoints, list_staging_dirs
from cairn_agent.storage.manifest import read_manifest, verify_checkpoint_dir
from cairn_agent.storage.resolve import load_candidates
from cairn_agent.storage.tracker import read_tracker

from tests.storage.helpers import (
    SHARDS,
    FailingIO,
    NoExchangeFailingIO,
    NoExchangeRecordingIO,
    RecordingIO,
    make_checkpoint,
    manifest_for,
    stage_shards,
)


def _first_after(io: RecordingIO, op: str, path: Path, after: int) -> int:
    for position in range(after + 1, len(io.calls)):
        if io.calls[position] == (op, path):
            return position
    raise AssertionError(f"no {op} {path} after call #{after}: {io.calls}")


def _save_and_publish(root: Path, io: RecordingIO) -> tuple[Path, Path]:
    staging = create_staging_dir(root, 100, generation=0, io=io)
    for name, data in SHARDS.items():  # what the ranks do
        io.write_file(staging / name, data)
    final = layout.iteration_dir(root, 100)
    commit_staging_dir(staging, final, manifest=manifest_for(staging, 100), io=io)
    publish(root, 100, generation=0, root_files={"latest_train_state.pt": b"ts"}, io=io)
    return staging, final


def test_commit_and_publish_follow_design_order(tmp_path: Path) -> None:
    io = RecordingIO()
    staging, final = _save_and_publish(tmp_path, io)
    meta, man = staging / layout.METADATA_JSON, staging / layout.MANIFEST_FILENAME

    last_shard_write = max(io.index("write", staging / name) for name in SHARDS)
    assert last_shard_write < io.index("write", meta) < io.index("write", man)
    staging_fsync = io.index("fsync_dir", staging)
    for name in [*SHARDS, layout.METADATA_JSON, layout.MANIFEST_FILENAME]:
        assert io.index("write", staging / name) < io.index("fsync_file", staging / name)
        assert io.index("fsync_file", staging / name) < staging_fsync
    rename = io.index("rename", final)
    assert staging_fsync < rename
    parent_fsync = _first_after(io, "fsync_dir", tmp_path, rename)
    root_file = io.index("replace", tmp_path / "latest_train_state.pt")
    tracker = io.index("replace", layout.tracker_path(tmp_path))
    assert parent_fsync < root_file < tracker
    assert io.calls[-1] == ("fsync_dir", tmp_path), "the tracker replace must be made durable"

    assert read_tracker(tmp_path).iteration == 100  # type: ignore[union-attr]
    manifest = verify_checkpoint_dir(final)
    assert manifest is not None and set(manifest.files) == {*SHARDS, layout.METADATA_JSON}
    assert (tmp_path / "latest_train_state.pt").read_bytes() == b"ts"


def test_uncommitted_staging_is_invisible_and_collected(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 10, tracker=True)
    staging = stage_shards(tmp_path, 20)
    # Even with both markers written, only the rename makes a save exist.
    (staging / layout.METADATA_JSON).write_text('{"sharded_backend": "torch_dist"}')

    assert [info.iteration for info in list_checkpoints(tmp_path)] == [10]
    assert [c.iteration for c in load_candidates(tmp_path)] == [10]
    assert list_staging_dirs(tmp_path) == [staging]

    assert collect_leftovers(tmp_path) == [staging]
    assert not staging.exists()
    assert [info.iteration for info in list_checkpoints(tmp_path)] == [10]


def test_crash_at_tracker_replace_keeps_old_tracker(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 10, tracker=True)
    make_checkpoint(tmp_path, 20)
    io = FailingIO("replace", layout.TRACKER_FILENAME)

    with pytest.raises(OSError, match="injected"):
        publish(tmp_path, 20, generation=0, io=io)

    assert read_tracker(tmp_path).iteration == 10  # type: ignore[union-attr]
    assert layout.tracker_path(tmp_path).read_bytes() == b"10"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(layout.ATOMIC_TMP_PREFIX)]


def test_resave_of_same_iteration_swaps_the_new_copy_in_atomically(tmp_path: Path) -> None:
    final = make_checkpoint(tmp_path, 10)
    old_digest = read_manifest(final).digest()
    io = RecordingIO()
    staging = stage_shards(tmp_path, 10, generation=1)
    commit_staging_dir(staging, final, manifest=manifest_for(staging, 10, 1), io=io)

    # One exchange: there is no moment at which iter_0000010 is missing from the root.
    assert ("rename", final) not in io.calls
    assert (
        io.index("exchange", final)
        < io.index("fsync_dir", tmp_path)
        < io.index("remove_tree", staging)
    )
    assert read_manifest(final).generation == 1 and read_manifest(final).digest() != old_digest
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_resave_without_exchange_support_replaces_old_copy_after_new_is_in_place(
    tmp_path: Path,
) -> None:
    final = make_checkpoint(tmp_path, 10)
    old_digest = read_manifest(final).digest()
    io = NoExchangeRecordingIO()
    staging = stage_shards(tmp_path, 10, generation=1)
    commit_staging_dir(staging, final, manifest=manifest_for(staging, 10, 1), io=io)

    aside = next(dst for op, dst in io.calls if op == "rename" and dst != final)
    assert layout.parse_replaced_dir_name(aside.name) == final.name
    assert io.index("rename", aside) < io.index("rename", final) < io.index("remove_tree", aside)
    assert read_manifest(final).generation == 1 and read_manifest(final).digest() != old_digest
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


@pytest.mark.parametrize(
    "io",
    [FailingIO("exchange", "iter_0000010"), NoExchangeFailingIO("rename", "iter_0000010")],
    ids=["exchange", "rename-fallback"],
)
def test_failed_swap_keeps_previous_copy(tmp_path: Path, io: DurableIO) -> None:
    final = make_checkpoint(tmp_path, 10)
    staging = stage_shards(tmp_path, 10, generation=1)

    with pytest.raises(CommitError, match="injected"):
        commit_staging_dir(staging, final, manifest=manifest_for(staging, 10, 1), io=io)

    assert read_manifest(final).generation == 0
    assert verify_checkpoint_dir(final) is not None


def test_stale_generation_cannot_replace_a_newer_generations_checkpoint(tmp_path: Path) -> None:
    final = make_checkpoint(tmp_path, 10)
    before = read_manifest(final).digest()
    staging = stage_shards(tmp_path, 10, generation=1)
    claim_generation(tmp_path, 2)

    with pytest.raises(StaleGenerationError):
        commit_staging_dir(staging, final, manifest=manifest_for(staging, 10, 1))

    assert read_manifest(final).digest() == before


def test_gc_restores_copy_moved_aside_by_interrupted_resave(tmp_path: Path) -> None:
    final = make_checkpoint(tmp_path, 10, tracker=True)
    staging = stage_shards(tmp_path, 10, generation=1)
    aside = tmp_path / layout.replaced_dir_name(final.name, "abcd")
    final.rename(aside)  # the crash fell between the two renames of a re-save

    removed = collect_leftovers(tmp_path)

    assert removed == [staging]
    assert verify_checkpoint_dir(final) is not None
    assert [c.path for c in load_candidates(tmp_path)] == [final]


def test_commit_rejects_manifest_that_does_not_match_staged_files(tmp_path: Path) -> None:
    staging = stage_shards(tmp_path, 10)
    manifest = manifest_for(staging, 10)
    (staging / "__2_0.distcp").write_bytes(b"late shard")
    final = layout.iteration_dir(tmp_path, 10)

    with pytest.raises(CommitError, match=r"__2_0\.distcp"):
        commit_staging_dir(staging, final, manifest=manifest)

    assert not final.exists() and list_checkpoints(tmp_path) == []


def test_commit_rejects_a_directory_that_is_not_staging(tmp_path: Path) -> None:
    manifest = manifest_for(stage_shards(tmp_path, 1), 1)
    plain = tmp_path / "somewhere"
    plain.mkdir()
    with pytest.raises(CommitError, match="staging"):
        commit_staging_dir(plain, tmp_path / "iter_0000001", manifest=manifest)
    assert not (tmp_path / "iter_0000001").exists()


def test_publish_refuses_uncommitted_target(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 10, tracker=True)
    stage_shards(tmp_path, 20)
    (tmp_path / "iter_0000030").mkdir()  # half-written Megatron dir without metadata.json

    for iteration in (20, 30):
        with pytest.raises(CommitError, match="not a committed checkpoint"):
            publish(tmp_path, iteration, generation=0)
    assert layout.tracker_path(tmp_path).read_bytes() == b"10"


def test_abort_staging_dir_is_idempotent_and_refuses_other_dirs(tmp_path: Path) -> None:
    staging = stage_shards(tmp_path, 10)
    abort_staging_dir(staging)
    abort_staging_dir(staging)
    assert not staging.exists()

    final = make_checkpoint(tmp_path, 20)
    with pytest.raises(ValueError, match="not a Cairn staging directory"):
        abort_staging_dir(final)
    assert final.is_dir()
