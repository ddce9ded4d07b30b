"""Shared helpers of the storage tests: an order-recording DurableIO and checkpoint builders."""

from __future__ import annotations

import errno
import time
from pathlib import Path

from cairn_agent.storage import layout
from cairn_agent.storage.commit import commit_staging_dir, create_staging_dir, publish
from cairn_agent.storage.durable import DurableIO
from cairn_agent.storage.manifest import Manifest, describe_files

SHARDS = {
    "__0_0.distcp": b"rank0-shard" * 10,
    "__1_0.distcp": b"rank1-shard" * 12,
    ".metadata": b"dcp-metadata",
    "common.pt": b"common-state",
}


class RecordingIO(DurableIO):
    """Performs real I/O and records ``(op, path)`` for every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Path]] = []

    def write_file(self, path: Path, data: bytes) -> None:
        self.calls.append(("write", Path(path)))
        super().write_file(path, data)

    def fsync_file(self, path: Path) -> None:
        self.calls.append(("fsync_file", Path(path)))
        super().fsync_file(path)

    def fsync_dir(self, path: Path) -> None:
        self.calls.append(("fsync_dir", Path(path)))
        super().fsync_dir(path)

    def rename(self, src: Path, dst: Path) -> None:
        self.calls.append(("rename", Path(dst)))
        super().rename(src, dst)

    def exchange(self, a: Path, b: Path) -> None:
        self.calls.append(("exchange", Path(b)))
        super().exchange(a, b)

    def replace(self, src: Path, dst: Path) -> None:
        self.calls.append(("replace", Path(dst)))
        super().replace(src, dst)

    def remove_tree(self, path: Path) -> None:
        self.calls.append(("remove_tree", Path(path)))
        super().remove_tree(path)

    def index(self, op: str, path: Path) -> int:
        """Position of the first ``op`` on ``path``; fails the test when it never happened."""
        for position, call in enumerate(self.calls):
            if call == (op, Path(path)):
                return position
        raise AssertionError(f"{op} {path} never happened; calls: {self.calls}")


class FailingIO(DurableIO):
    """Raises ``OSError`` once, on the first ``op`` whose target path name equals ``name``."""

    def __init__(self, op: str, name: str) -> None:
        self.op = op
        self.name = name
        self.failed = False

    def _maybe_fail(self, op: str, path: Path) -> None:
        if not self.failed and op == self.op and Path(path).name == self.name:
            self.failed = True
            raise OSError(f"injected failure: {op} {path}")

    def exchange(self, a: Path, b: Path) -> None:
        self._maybe_fail("exchange", b)
        super().exchange(a, b)

    def replace(self, src: Path, dst: Path) -> None:
        self._maybe_fail("replace", dst)
        super().replace(src, dst)

    def rename(self, src: Path, dst: Path) -> None:
        self._maybe_fail("rename", dst)
        super().rename(src, dst)


class NoExchangeRecordingIO(RecordingIO):
    """A filesystem without ``renameat2(RENAME_EXCHANGE)``: commit must fall back to renames."""

    def exchange(self, a: Path, b: Path) -> None:
        raise OSError(errno.EINVAL, "exchange not supported here", str(a))


class NoExchangeFailingIO(FailingIO):
    def exchange(self, a: Path, b: Path) -> None:
        raise OSError(errno.EINVAL, "exchange not supported here", str(a))


def stage_shards(
    root: Path, iteration: int, generation: int = 0, io: DurableIO | None = None
) -> Path:
    """A staging dir holding fake shards, as the ranks would leave it before commit."""
    staging = create_staging_dir(root, iteration, generation, io=io or DurableIO())
    for name, data in SHARDS.items():
        (staging / name).write_bytes(data)
    return staging


def manifest_for(staging: Path, iteration: int, generation: int = 0) -> Manifest:
    now = time.time()
    return Manifest(
        iteration=iteration,
        generation=generation,
        world_size=2,
        layout={"tp": 1, "pp": 1, "dp": 2},
        files=describe_files(staging, SHARDS),
        created_at=now,
        committed_at=now,
    )


def make_checkpoint(
    root: Path, iteration: int, *, generation: int = 0, tracker: bool = False
) -> Path:
    """A committed checkpoint of ``iteration`` under ``root`` (and the tracker on it if asked)."""
    staging = stage_shards(root, iteration, generation)
    final = layout.iteration_dir(root, iteration)
    commit_staging_dir(staging, final, manifest=manifest_for(staging, iteration, generation))
    if tracker:
        publish(root, iteration, generation=generation)
    return final
