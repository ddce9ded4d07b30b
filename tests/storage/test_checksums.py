"""Manifests name their checksum algorithm: CRC32C for new saves, CRC-32 for older ones.

A checkpoint written before manifest version 2 (entries ``{"size", "crc32"}``, zlib CRC-32) and
one written now (CRC32C) must both verify, and a single flipped byte must fail both, in the
library and in ``cairn verify --deep``.
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import pytest
from cairn_agent.cli import verify
from cairn_agent.errors import CheckpointCorruptError
from cairn_agent.storage import layout
from cairn_agent.storage.checksum import RunningChecksum, checksum_bytes
from cairn_agent.storage.manifest import FileEntry, read_manifest, verify_checkpoint_dir

from tests.storage.helpers import SHARDS, make_checkpoint

SHARD = "__1_0.distcp"
# CRC32C("123456789") is the check value of RFC 3720 (iSCSI), CRC-32's is zlib's.
CHECK_INPUT = b"123456789"


def _rewrite_as_version_1(directory: Path) -> None:
    """The manifest exactly as Cairn wrote it before version 2: zlib CRC-32, no algorithm."""
    path = directory / layout.MANIFEST_FILENAME
    obj = json.loads(path.read_text())
    obj["version"] = 1
    obj["files"] = {
        name: {"size": len(data), "crc32": f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"}
        for name, data in ((n, (directory / n).read_bytes()) for n in obj["files"])
    }
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _checkpoint(root: Path, algorithm: str) -> Path:
    final = make_checkpoint(root, 10, tracker=True)
    if algorithm == "crc32":
        _rewrite_as_version_1(final)
    return final


def _cairn_verify(*argv: str) -> int:
    """``cairn verify ARGV`` through the subcommand's own parser (not the whole CLI's imports)."""
    parser = argparse.ArgumentParser(prog="cairn")
    verify.add_parser(parser.add_subparsers())
    args = parser.parse_args(["verify", *argv])
    return int(args.func(args))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_algorithms_match_their_reference_check_values() -> None:
    assert checksum_bytes(CHECK_INPUT, "crc32c") == "e3069283"
    assert checksum_bytes(CHECK_INPUT, "crc32") == "cbf43926"
    pieces = RunningChecksum("crc32c")
    for start in range(0, len(CHECK_INPUT), 4):
        pieces.update(memoryview(bytearray(CHECK_INPUT))[start : start + 4])
    assert (pieces.size, pieces.hexdigest()) == (9, "e3069283")


def test_new_manifests_name_crc32c_per_file(tmp_path: Path) -> None:
    final = make_checkpoint(tmp_path, 10)
    raw = json.loads((final / layout.MANIFEST_FILENAME).read_text())
    assert raw["version"] == 2
    entry = raw["files"][SHARD]
    assert entry == {
        "size": len(SHARDS[SHARD]),
        "checksum": {"algorithm": "crc32c", "value": checksum_bytes(SHARDS[SHARD], "crc32c")},
    }
    assert read_manifest(final).algorithms == ["crc32c"]


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c"])
def test_both_algorithms_verify_and_catch_a_flipped_byte(tmp_path: Path, algorithm: str) -> None:
    final = _checkpoint(tmp_path, algorithm)
    manifest = verify_checkpoint_dir(final, deep=True)
    assert manifest is not None and manifest.algorithms == [algorithm]

    _flip_byte(final / SHARD)

    with pytest.raises(CheckpointCorruptError, match=f"{algorithm} is [0-9a-f]{{8}}") as info:
        verify_checkpoint_dir(final, deep=True)
    assert info.value.path == final / SHARD


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c"])
def test_cairn_verify_deep_prints_the_algorithm_and_exits_2_on_a_flip(
    tmp_path: Path, algorithm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    final = _checkpoint(tmp_path, algorithm)

    assert _cairn_verify(str(tmp_path), "--deep") == 0
    assert f"sizes and {algorithm} match" in capsys.readouterr().out

    _flip_byte(final / SHARD)
    assert _cairn_verify(str(tmp_path), "--deep") == 2
    err = capsys.readouterr().err
    assert str(final / SHARD) in err and f"{algorithm} is" in err


def test_a_version_1_manifest_keeps_its_form_and_digest(tmp_path: Path) -> None:
    final = _checkpoint(tmp_path, "crc32")
    text = (final / layout.MANIFEST_FILENAME).read_text()
    manifest = read_manifest(final)
    # Re-serialised unchanged: the digest the cluster already knows for it stays the same.
    assert manifest.version == 1 and manifest.to_json() == text


def test_unknown_algorithm_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="'md5' is unknown; use one of"):
        FileEntry(1, "00000000", "md5")  # type: ignore[arg-type]
