"""The restart-generation fence: a stale writer can neither publish nor delete."""

from __future__ import annotations

from pathlib import Path

import pytest
from cairn_agent.errors import CheckpointCorruptError, StaleGenerationError
from cairn_agent.storage import layout
from cairn_agent.storage.commit import publish
from cairn_agent.storage.generation import claim_generation, ensure_current, read_generation
from cairn_agent.storage.retention import RetentionPolicy, apply_retention, plan_retention

from tests.storage.helpers import make_checkpoint


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_claims_only_move_forward(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    assert read_generation(root) == 0
    claim_generation(root, 3)
    claim_generation(root, 3)
    assert read_generation(root) == 3
    with pytest.raises(StaleGenerationError) as info:
        claim_generation(root, 2)
    assert (info.value.mine, info.value.current) == (2, 3)
    claim_generation(root, 4)
    assert read_generation(root) == 4
    ensure_current(root, 4)
    ensure_current(root, 5)  # a newer writer that has not claimed yet is not stale
    with pytest.raises(StaleGenerationError):
        ensure_current(root, 3)


def test_stale_writer_cannot_publish_or_delete(tmp_path: Path) -> None:
    for iteration in (10, 20, 30):
        make_checkpoint(tmp_path, iteration, generation=1)
    publish(tmp_path, 20, generation=1)
    claim_generation(tmp_path, 2)  # the job restarted; generation 1 is now a zombie
    before = _snapshot(tmp_path)
    plan = plan_retention([10, 20, 30], RetentionPolicy(keep_last=1), protected=[20])
    assert plan.delete == (10,)

    with pytest.raises(StaleGenerationError):
        publish(tmp_path, 30, generation=1, root_files={"latest_train_state.pt": b"stale"})
    with pytest.raises(StaleGenerationError):
        apply_retention(tmp_path, plan, generation=1)

    assert _snapshot(tmp_path) == before
    assert layout.tracker_path(tmp_path).read_bytes() == b"20"


def test_garbage_generation_file_is_corruption(tmp_path: Path) -> None:
    layout.generation_path(tmp_path).write_text("two")
    with pytest.raises(CheckpointCorruptError, match="non-negative integer") as info:
        read_generation(tmp_path)
    assert info.value.path == layout.generation_path(tmp_path)
