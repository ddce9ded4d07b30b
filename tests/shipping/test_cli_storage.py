"""``cairn inspect|verify|gc`` on real checkpoint roots in temporary directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cairn_agent.cli.main import main
from cairn_agent.storage import layout

from tests.shipping.fake_checkpoints import commit_fake, flip_byte, make_root


def _cairn(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _shard(root: Path, iteration: int) -> Path:
    return layout.iteration_dir(root, iteration) / layout.distcp_file_name(1, 0)


def test_inspect_reports_tracker_iterations_leftovers_and_incomplete_dirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path / "ckpt", [100, 200, 300], generation=2)
    (root / layout.staging_dir_name("iter_0000400", 2, "abcd")).mkdir()
    (root / "iter_0000350").mkdir()  # a Megatron save that never wrote metadata.json
    commit_fake(layout.non_persistent_dir(root), 320, generation=2)

    status, out, _ = _cairn(capsys, "inspect", str(root), "--json")
    report = json.loads(out)

    assert status == 0
    assert report["tracker"] == {"present": True, "iteration": 300, "release": False, "error": None}
    assert [c["iteration"] for c in report["committed"]] == [100, 200, 300]
    newest = report["committed"][-1]
    assert (newest["worldSize"], newest["generation"], newest["files"]) == (2, 2, 5)
    assert newest["bytes"] > 0 and newest["ageSeconds"] < 600
    assert report["leftovers"] == [
        {"kind": "staging", "name": ".cairn-staging.iter_0000400.g2.abcd"}
    ]
    assert report["incomplete"] == ["iter_0000350"]
    assert [c["iteration"] for c in report["nonPersistent"]["committed"]] == [320]

    status, text, _ = _cairn(capsys, "inspect", str(root))
    assert status == 0
    assert "latest_checkpointed_iteration.txt -> 300" in text
    assert "iter_0000300" in text and "tracker" in text
    assert ".cairn-staging.iter_0000400.g2.abcd" in text
    assert "iter_0000350" in text


def test_inspect_shows_a_garbage_tracker_instead_of_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, [10])
    layout.tracker_path(root).write_bytes(b"\x00\x00")

    status, out, _ = _cairn(capsys, "inspect", str(root))

    assert status == 0
    assert "PROBLEM" in out and "NUL" in out


def test_verify_passes_a_valid_root_and_fails_a_truncated_shard_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, [100, 200])
    status, out, err = _cairn(capsys, "verify", str(root), "--deep")
    assert (status, err) == (0, "")
    assert "all valid" in out

    shard = _shard(root, 100)
    shard.write_bytes(shard.read_bytes()[:-7])
    status, out, err = _cairn(capsys, "verify", str(root))

    assert status == 2
    assert str(shard) in err and "size is" in err
    assert "CORRUPT" in out and "iter_0000200" in out


def test_verify_deep_catches_a_flipped_byte_that_sizes_miss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, [100])
    flip_byte(_shard(root, 100))

    # The real console script, as a user or a CI job runs it.
    shallow = subprocess.run(
        ["cairn", "verify", str(root)], capture_output=True, text=True, check=False
    )
    deep = subprocess.run(
        ["cairn", "verify", str(root), "--iteration", "100", "--deep"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert shallow.returncode == 0
    assert deep.returncode == 2
    assert str(_shard(root, 100)) in deep.stderr and "crc32" in deep.stderr


def test_verify_fails_on_a_garbage_tracker_and_a_dangling_tracker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, [100])
    layout.tracker_path(root).write_text("12abc")
    status, _, err = _cairn(capsys, "verify", str(root))
    assert status == 2 and layout.TRACKER_FILENAME in err

    layout.tracker_path(root).write_text("900")
    status, _, err = _cairn(capsys, "verify", str(root))
    assert status == 2 and "iter_0000900" in err


def test_verify_of_a_missing_iteration_or_root_is_an_error_not_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, [100])
    status, _, err = _cairn(capsys, "verify", str(root), "--iteration", "5")
    assert status == 1 and "iter_0000005" in err
    status, _, err = _cairn(capsys, "verify", str(tmp_path / "nope"))
    assert status == 1 and "no such checkpoint root" in err


def test_gc_dry_run_prints_the_plan_and_changes_nothing_then_applies_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, [100, 200, 300, 400, 500])
    staging = root / layout.staging_dir_name("iter_0000600", 1, "beef")
    staging.mkdir()
    policy = ["--keep-last", "2", "--keep-every", "200", "--pin", "100"]

    status, out, _ = _cairn(capsys, "gc", str(root), *policy, "--dry-run")
    assert status == 0
    assert "would delete" in out and "iter_0000300" in out
    assert "pinned" in out and "multiple of keep_every=200" in out
    assert staging.exists() and layout.iteration_dir(root, 300).exists()

    status, out, _ = _cairn(capsys, "gc", str(root), *policy, "--json")
    outcome = json.loads(out)
    assert status == 0
    assert outcome["deleted"] == [300]
    assert outcome["keep"] == [100, 200, 400, 500]
    assert outcome["leftovers"] == [staging.name]
    assert not staging.exists() and not layout.iteration_dir(root, 300).exists()
    assert layout.iteration_dir(root, 200).exists()


def test_gc_keeps_the_tracker_target_and_the_newest_verified_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, [100, 200, 300, 400])
    shard = _shard(root, 400)
    shard.write_bytes(b"truncated")

    status, out, _ = _cairn(capsys, "gc", str(root), "--keep-last", "1", "--json")
    outcome = json.loads(out)

    assert status == 0
    assert outcome["tracker"] == 400 and outcome["newestVerified"] == 300
    assert outcome["deleted"] == [100, 200]
    assert outcome["decisions"]["300"]["reasons"] == ["newest_verified"]
    assert "newest verified" in outcome["decisions"]["300"]["why"]
    assert outcome["decisions"]["400"]["reasons"][0] == "tracker_target"
    assert any(str(shard) in failure for failure in outcome["corrupt"])
    assert sorted(p.name for p in root.glob("iter_*")) == ["iter_0000300", "iter_0000400"]


def test_gc_protects_iterations_newer_than_the_tracker_and_explicit_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, [100, 200, 300])
    commit_fake(root, 400, publish_it=False)  # committed, tracker not yet moved

    status, out, _ = _cairn(
        capsys, "gc", str(root), "--keep-last", "1", "--protect", "100", "--json"
    )

    assert status == 0
    assert json.loads(out)["deleted"] == [200]
    assert sorted(p.name for p in root.glob("iter_*")) == [
        "iter_0000100",
        "iter_0000300",
        "iter_0000400",
    ]


def test_gc_refuses_a_stale_generation_and_a_garbage_tracker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, [100, 200, 300], generation=3)
    leftover = root / layout.staging_dir_name("iter_0000400", 1, "0ld0")
    leftover.mkdir()
    status, _, err = _cairn(capsys, "gc", str(root), "--keep-last", "1", "--generation", "2")
    assert status == 1 and "stale" in err
    assert len(list(root.glob("iter_*"))) == 3 and leftover.exists()

    layout.tracker_path(root).write_text("")
    status, _, err = _cairn(capsys, "gc", str(root), "--keep-last", "1")
    assert status == 2 and "empty" in err
    assert len(list(root.glob("iter_*"))) == 3


def test_gc_rejects_an_unsafe_policy_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, [100])
    status, _, err = _cairn(capsys, "gc", str(root), "--keep-last", "0")
    assert status == 1
    assert err.count("\n") == 1 and "keep_last=0" in err


def test_gc_delete_all_removes_checkpoints_tracker_and_fence_and_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path / "ckpt", [100, 200], generation=4)
    commit_fake(layout.non_persistent_dir(root), 250, generation=4)

    status, out, _ = _cairn(capsys, "gc", str(root), "--delete-all", "--dry-run")
    assert status == 0 and "would delete iter_0000100" in out
    assert layout.tracker_path(root).exists()

    status, out, _ = _cairn(capsys, "gc", str(root), "--delete-all", "--generation", "4")
    assert status == 0
    assert root.is_dir()
    assert not any(root.glob("iter_*")) and not any(root.glob("non_persistent/iter_*"))
    assert not layout.tracker_path(root).exists()
    assert not layout.generation_path(root).exists()

    status, out, _ = _cairn(capsys, "gc", str(root), "--delete-all")
    assert status == 0 and "nothing to delete" in out


def test_cli_and_plugin_import_without_torch() -> None:
    code = (
        "import sys, cairn_agent.cli.main, cairn_agent.cli.kubectl_plugin; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_inspect_and_verify_accept_a_megatron_written_checkpoint_without_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = layout.iteration_dir(tmp_path, 50)
    directory.mkdir()
    (directory / layout.METADATA_JSON).write_text(json.dumps(layout.TORCH_DIST_METADATA))
    (directory / layout.distcp_file_name(0, 0)).write_bytes(b"x" * 100)
    layout.tracker_path(tmp_path).write_text("50")

    status, out, _ = _cairn(capsys, "inspect", str(tmp_path), "--json")
    (entry,) = json.loads(out)["committed"]
    assert status == 0
    assert (entry["iteration"], entry["hasManifest"], entry["files"]) == (50, False, 2)

    status, out, err = _cairn(capsys, "verify", str(tmp_path), "--deep")
    assert (status, err) == (0, "")
    assert "no Cairn manifest" in out
