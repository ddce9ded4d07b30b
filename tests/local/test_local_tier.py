"""Node-local checkpoints replicated across nodes, on 4 gloo ranks as 2 nodes x 2 ranks.

Each node keeps its parts in its own directory (``<tmp>/local/node-<n>``); losing a node is
deleting its directory. Local saves every 2 steps, persistent ones every 3 (``_bodies``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.distributed import run_ranks
from tests.local import _bodies as bodies

ROOT = Path(__file__).resolve().parents[2]
Patches = tuple[list[dict[str, Any]], dict[str, str]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[int, Any]]]:
    """8 steps, sync, atomic: local iterations 2-8 (8 kept), persistent 3 and 6."""
    base = tmp_path_factory.mktemp("trained")
    saved = run_ranks(
        bodies.train_with_tiers, bodies.WORLD, str(base / "ckpt"), str(base / "local"), 8, {}
    )
    return base, saved


def _copy(trained: tuple[Path, list[dict[int, Any]]], tmp_path: Path) -> Path:
    shutil.copytree(trained[0], tmp_path / "run")
    return tmp_path / "run"


def _node(run: Path, node: int) -> Path:
    return run / "local" / f"node-{node}"


def _files(run: Path) -> dict[str, list[str]]:
    """Rank directory (``node-n/rank``) -> its file names."""
    return {
        f"{d.parent.name}/{d.name}": sorted(p.name for p in d.iterdir())
        for d in sorted((run / "local").glob("node-*/*"))
    }


def _statuses(patches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p["status"] for p in patches]


def _last(statuses: list[dict[str, Any]], key: str) -> Any:
    return [s[key] for s in statuses if key in s][-1]


def _resume(run: Path, env: dict[str, str] | None = None, then_save: bool = False) -> list[Any]:
    return run_ranks(
        bodies.resume, bodies.WORLD, str(run / "ckpt"), str(run / "local"), {}, env, then_save
    )


def test_each_rank_holds_its_part_and_its_peer_node_copy_of_one_iteration(
    trained: tuple[Path, list[dict[int, Any]]],
) -> None:
    # Cliques [0, 2] and [1, 3]: every part has a copy on each node; storage is bounded to
    # replication_factor parts of one iteration at rest (older iterations were removed).
    assert _files(trained[0]) == {
        f"node-{rank // 2}/{rank}": [
            f"iter_0000008_{min(rank, peer)}_local.pt",
            f"iter_0000008_{max(rank, peer)}_local.pt",
            "iter_0000008_local.commit.json",
        ]
        for rank, peer in ((0, 2), (1, 3), (2, 0), (3, 1))
    }


def test_resume_reads_the_newest_tier_bit_exact(
    trained: tuple[Path, list[dict[int, Any]]], tmp_path: Path, status_api: Patches
) -> None:
    patches, env = status_api
    run = _copy(trained, tmp_path)
    env = {**env, "CAIRN_STATUS_MIN_INTERVAL_S": "0"}
    got = run_ranks(
        bodies.resume_then_persist, bodies.WORLD, str(run / "ckpt"), str(run / "local"), env
    )
    for rank, result in enumerate(got):
        # Local 8 is newer than persistent 6; then persistent 9 is newer than local 8.
        assert result["iterations"] == (8, 9)
        assert bodies.same(result["resumed"], trained[1][rank][8]) == []
        assert result["second_differs"] == []
    resumes = [s["lastResume"] for s in _statuses(patches) if "lastResume" in s]
    assert [(r["iteration"], r["tier"]) for r in resumes] == [(8, "local"), (9, "persistent")]
    local = _last(_statuses(patches), "localTier")
    assert (local["iteration"], local["replicas"], local["replicationFactor"]) == (8, 2, 2)
    assert local["nodes"] == ["node-0", "node-1"]


def test_a_lost_node_is_restored_from_replicas_and_holds_its_parts_after_the_next_save(
    trained: tuple[Path, list[dict[int, Any]]], tmp_path: Path
) -> None:
    run = _copy(trained, tmp_path)
    shutil.rmtree(_node(run, 0))  # node 0 replaced: ranks 0 and 1 lost their parts
    got = _resume(run, then_save=True)
    for rank, result in enumerate(got):
        assert result["iteration"] == 8
        assert bodies.same(result["snapshot"], trained[1][rank][8]) == []
        assert result["errors"] == []
    # The next local save (iteration 9) rebuilt node 0's parts and replicas.
    assert _files(run)["node-0/0"] == [
        "iter_0000009_0_local.pt",
        "iter_0000009_2_local.pt",
        "iter_0000009_local.commit.json",
    ]
    assert _files(run)["node-0/1"][:2] == ["iter_0000009_1_local.pt", "iter_0000009_3_local.pt"]


def test_a_corrupt_part_is_never_loaded_its_replica_is(
    trained: tuple[Path, list[dict[int, Any]]], tmp_path: Path
) -> None:
    run = _copy(trained, tmp_path)
    own = _node(run, 1) / "2" / "iter_0000008_2_local.pt"
    data = bytearray(own.read_bytes())
    data[len(data) // 2] ^= (
        0xFF  # a flipped byte inside the tensor data: torch.load would not notice
    )
    own.write_bytes(bytes(data))
    got = _resume(run)
    for rank, result in enumerate(got):
        assert result["iteration"] == 8
        assert bodies.same(result["snapshot"], trained[1][rank][8]) == []


def test_every_copy_of_a_part_lost_resumes_from_persistent_loudly(
    trained: tuple[Path, list[dict[int, Any]]], tmp_path: Path, status_api: Patches
) -> None:
    patches, env = status_api
    run = _copy(trained, tmp_path)
    # Rank 1's part: its own copy deleted, the replica on node 1 (rank 3) corrupted.
    (_node(run, 0) / "1" / "iter_0000008_1_local.pt").unlink()
    replica = _node(run, 1) / "3" / "iter_0000008_1_local.pt"
    replica.write_bytes(replica.read_bytes()[:-100])
    got = _resume(run, {**env, "CAIRN_STATUS_MIN_INTERVAL_S": "0"})
    for rank, result in enumerate(got):
        assert result["iteration"] == 6  # the newest persistent checkpoint
        assert bodies.same(result["snapshot"], trained[1][rank][6]) == []
        assert any("CANNOT BE RESTORED" in line and "[1]" in line for line in result["errors"])
    resume = _last(_statuses(patches), "lastResume")
    assert (resume["iteration"], resume["tier"]) == (6, "persistent")
    assert "ranks [1] of local iteration 8 have no intact copy" in resume["reason"]
    local = _last(_statuses(patches), "localTier")
    assert local["iteration"] == -1 and "iteration 8" in local["problem"]


def test_async_local_save_killed_midway_leaves_the_previous_iteration_restorable(
    tmp_path: Path,
) -> None:
    # Async saves of fully_parallel parts (each rank saved a share of the replicated model).
    run, ready = tmp_path / "run", tmp_path / "ready"
    ready.mkdir()
    job = subprocess.Popen(
        [sys.executable, "-m", "tests.local._killed_job", str(run / "ckpt"), str(run / "local")]
        + [str(ready)],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while len(list(ready.glob("ready_*"))) < bodies.WORLD:
            assert job.poll() is None, "the job died before its async save started"
            assert time.monotonic() < deadline, "the job never reached its async save"
            time.sleep(0.01)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert not list((run / "local").glob("*/*/iter_0000004_local.commit.json"))
    shutil.rmtree(_node(run, 1))  # and node 1 is replaced: its ranks' parts come from node 0
    got = run_ranks(bodies.resume_after_kill, bodies.WORLD, str(run / "ckpt"), str(run / "local"))
    import torch

    for rank, result in enumerate(got):
        expected = torch.load(ready / f"snapshot_{rank}.pt", weights_only=False)
        assert result["iteration"] == 2
        assert bodies.same(result["snapshot"], expected) == []
    # The next save (iteration 3) replaced every leftover of the killed one.
    for files in _files(run).values():
        assert [f for f in files if "0000004" in f or "dirty" in f] == []
        assert len([f for f in files if f.endswith("_local.pt")]) == 2
