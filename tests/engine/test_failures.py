"""A failing rank never leaves a visible checkpoint, a moved tracker, or a hung job.

One 2-rank gloo spawn runs a sequence of saves on the same root: a good one, then one failure
of each kind, then a good one again (which proves the process group is still in step after
every failure). After each failure the body records what every rank raised and what is on
disk; the tests below assert on those records.

Failures are injected only at process boundaries: a per-process file-size limit
(``RLIMIT_FSIZE``, the kernel's "disk quota exceeded" for one rank), an object pickle cannot
serialise, and an injected ``DurableIO`` (the storage layer's I/O seam) that fails one call.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from cairn_agent.storage.durable import DEFAULT_IO, DurableIO

from tests.distributed import run_ranks

GOOD_ITERATION = 1
BIG_ROWS = 1024  # rank 1's shard: 1024 x 1024 float32 = 4 MiB, above the 1 MiB size limit
FSIZE_LIMIT = 1 << 20


class FailingIO(DurableIO):
    """The real ``DurableIO`` except that one named operation fails like a broken disk."""

    def __init__(self, fail: str) -> None:
        self.fail = fail

    def write_file(self, path: Path, data: bytes) -> None:
        if self.fail == "write_file" and path.name == "train_state.pt":
            raise OSError(errno.ENOSPC, "injected: no space left on device", str(path))
        super().write_file(path, data)

    def rename(self, src: Path, dst: Path) -> None:
        if self.fail == "rename" and src.name.startswith(".cairn-staging"):
            raise OSError(errno.EIO, "injected: input/output error", str(src))
        super().rename(src, dst)


def _state(
    rank: int, world_size: int, *, big: bool = False, unpicklable: bool = False
) -> dict[str, Any]:
    import torch
    from megatron.core.dist_checkpointing import ShardedObject, ShardedTensor

    rows = BIG_ROWS if big else 2
    local = torch.full((rows, BIG_ROWS if big else 4), float(rank))
    obj: Any = (lambda: None) if unpicklable and rank == 1 else {"rank": rank}
    return {
        "w": ShardedTensor.from_rank_offsets("w", local, (0, rank, world_size)),
        "obj": ShardedObject("obj", obj, (world_size,), (rank,)),
        "iteration": 0,
    }


def _attempt(
    rank: int, root: Path, iteration: int, state: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    from cairn_agent.engine.dist import barrier
    from cairn_agent.engine.save import SaveTarget, save_sync
    from cairn_agent.storage import layout
    from cairn_agent.storage.tracker import read_tracker

    io = kwargs.pop("io", DEFAULT_IO)  # only the coordinator does I/O through it
    target = SaveTarget(
        root=root, iteration=iteration, iter_files={"train_state.pt": b"ts"}, **kwargs
    )
    try:
        save_sync(state, target, io=io)
        raised, message = None, ""
    except Exception as exc:  # noqa: BLE001 - recorded for the parent to assert on
        raised, message = type(exc).__name__, str(exc)
    barrier()  # every rank has returned or raised before anyone looks at the disk
    tracker = read_tracker(root)
    record = {
        "raised": raised,
        "message": message,
        "iter_dir_exists": layout.iteration_dir(root, iteration).exists(),
        "staging_left": sorted(
            p.name for p in root.iterdir() if p.name.startswith(".cairn-staging")
        ),
        "tracker": tracker.iteration if tracker else None,
    }
    barrier()  # nobody starts the next save while another rank still looks
    return record


def _write_limited(rank: int, root: Path, iteration: int) -> dict[str, Any]:
    import resource
    import signal

    if rank != 1:
        return _attempt(rank, root, iteration, _state(rank, 2, big=True))
    # Without ignoring SIGXFSZ the kernel kills the process; ignored, write() fails with EFBIG.
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, previous[1]))
    try:
        return _attempt(rank, root, iteration, _state(rank, 2, big=True))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)


def _corrupt_then_load(rank: int, root: Path, iteration: int) -> dict[str, Any]:
    from cairn_agent.engine.dist import barrier
    from cairn_agent.engine.load import load_checkpoint_dir
    from cairn_agent.errors import CheckpointCorruptError
    from cairn_agent.storage import layout

    final = layout.iteration_dir(root, iteration)
    if rank == 0:
        shard = final / "__1_0.distcp"
        shard.write_bytes(shard.read_bytes()[:-7])
    barrier()
    try:
        load_checkpoint_dir(_state(rank, 2), final)
    except CheckpointCorruptError as exc:
        return {"raised": "CheckpointCorruptError", "path": exc.path.name, "check": exc.check}
    return {"raised": None}


def _failure_sequence(rank: int, world_size: int, root_str: str) -> dict[str, dict[str, Any]]:
    root = Path(root_str)
    return {
        "good": _attempt(rank, root, GOOD_ITERATION, _state(rank, world_size)),
        "rank1_disk_quota": _write_limited(rank, root, 2),
        "rank1_unpicklable": _attempt(rank, root, 3, _state(rank, world_size, unpicklable=True)),
        "rank0_iter_file_io": _attempt(
            rank, root, 4, _state(rank, world_size), io=FailingIO("write_file")
        ),
        "rank0_commit_rename": _attempt(
            rank, root, 5, _state(rank, world_size), io=FailingIO("rename")
        ),
        "newer_generation": _attempt(rank, root, 6, _state(rank, world_size), generation=5),
        "stale_generation": _attempt(rank, root, 7, _state(rank, world_size), generation=4),
        "corrupt_load": _corrupt_then_load(rank, root, 6),
        "good_again": _attempt(rank, root, 8, _state(rank, world_size), generation=5),
    }


@pytest.fixture(scope="module")
def sequence(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("failures") / "ckpt"
    return run_ranks(_failure_sequence, 2, str(root))


def _assert_nothing_visible(record: dict[str, Any], tracker: int) -> None:
    assert record["raised"] is not None
    assert not record["iter_dir_exists"], "a failed save left its iteration directory"
    assert record["staging_left"] == [], "a failed save left its staging directory"
    assert record["tracker"] == tracker, "a failed save moved the tracker"


@pytest.mark.parametrize(
    ("case", "rank_named", "detail"),
    [
        ("rank1_disk_quota", "rank 1", "writing DCP shards"),
        ("rank1_unpicklable", "rank 1", "preparing the state dict"),
        ("rank0_iter_file_io", "rank 0", "no space left"),
    ],
)
def test_write_failure_on_one_rank_raises_commit_error_on_every_rank(
    sequence: list[dict[str, dict[str, Any]]], case: str, rank_named: str, detail: str
) -> None:
    for rank_records in sequence:
        record = rank_records[case]
        assert record["raised"] == "CommitError"
        assert rank_named in record["message"] and detail in record["message"]
        _assert_nothing_visible(record, tracker=GOOD_ITERATION)


def test_commit_failure_on_coordinator_raises_everywhere_and_keeps_old_tracker(
    sequence: list[dict[str, dict[str, Any]]],
) -> None:
    for rank_records in sequence:
        record = rank_records["rank0_commit_rename"]
        assert record["raised"] == "CommitError" and "input/output error" in record["message"]
        _assert_nothing_visible(record, tracker=GOOD_ITERATION)


def test_stale_generation_cannot_publish(sequence: list[dict[str, dict[str, Any]]]) -> None:
    coordinator, other = sequence
    assert coordinator["newer_generation"]["raised"] is None
    # Every rank raises the coordinator's typed error (a CommitError): stop saving, don't retry.
    assert coordinator["stale_generation"]["raised"] == "StaleGenerationError"
    assert other["stale_generation"]["raised"] == "StaleGenerationError"
    for rank_records in sequence:
        _assert_nothing_visible(rank_records["stale_generation"], tracker=6)


def test_truncated_shard_fails_verification_on_every_rank(
    sequence: list[dict[str, dict[str, Any]]],
) -> None:
    for rank_records in sequence:
        record = rank_records["corrupt_load"]
        assert record["raised"] == "CheckpointCorruptError"
        assert record["path"] == "__1_0.distcp" and "size" in record["check"]


def test_ranks_stay_in_step_after_failures(sequence: list[dict[str, dict[str, Any]]]) -> None:
    for rank_records in sequence:
        assert rank_records["good"]["raised"] is None
        final = rank_records["good_again"]
        assert final["raised"] is None and final["iter_dir_exists"] and final["tracker"] == 8
