"""The retention planner (pure) and its safe application."""

from __future__ import annotations

from pathlib import Path

import pytest
from cairn_agent.storage import layout
from cairn_agent.storage.listing import committed_iterations
from cairn_agent.storage.retention import (
    RetentionPlan,
    RetentionPolicy,
    apply_retention,
    plan_retention,
)
from cairn_agent.storage.tracker import write_tracker

from tests.storage.helpers import make_checkpoint, stage_shards

ITERS = [100, 200, 300, 400, 500, 600]


def test_keep_last_keeps_the_newest() -> None:
    plan = plan_retention(ITERS, RetentionPolicy(keep_last=2))
    assert plan.keep == (500, 600)
    assert plan.delete == (100, 200, 300, 400)
    assert "keep_last=2" in plan.reasons[500] and plan.reasons[100].startswith("delete")


def test_no_policy_keeps_everything() -> None:
    plan = plan_retention(ITERS, RetentionPolicy())
    assert plan.keep == tuple(ITERS) and plan.delete == ()


def test_keep_every_pinned_protected_and_newest_verified() -> None:
    policy = RetentionPolicy(keep_last=1, keep_every=300, pinned=frozenset({100}))
    plan = plan_retention(ITERS, policy, protected=[200], newest_verified=400)
    assert plan.keep == (100, 200, 300, 400, 600)
    assert plan.delete == (500,)
    assert "pinned" in plan.reasons[100]
    assert "protected" in plan.reasons[200]
    assert "keep_every=300" in plan.reasons[300]
    assert "newest verified" in plan.reasons[400]
    assert "newest committed" in plan.reasons[600]


def test_max_iteration_leaves_in_flight_saves_alone() -> None:
    plan = plan_retention(ITERS, RetentionPolicy(keep_last=1), max_iteration=400)
    # 500 and 600 may still be finalizing; keep_last counts up to max_iteration.
    assert plan.keep == (400, 500, 600)
    assert plan.delete == (100, 200, 300)
    assert "in flight" in plan.reasons[600]


def test_newest_committed_is_kept_even_if_protected_elsewhere() -> None:
    plan = plan_retention([5, 1, 5, 3], RetentionPolicy(keep_last=1), protected=[1])
    assert plan.keep == (1, 5) and plan.delete == (3,)
    assert plan_retention([], RetentionPolicy(keep_last=1)) == RetentionPlan((), (), {})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_last": 0}, "keep_last=0"),
        ({"keep_last": -2}, "keep_last=-2"),
        ({"keep_every": 0}, "keep_every=0"),
        ({"pinned": frozenset({-1})}, "non-negative"),
    ],
)
def test_policy_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetentionPolicy(**kwargs)  # type: ignore[arg-type]


def test_apply_deletes_planned_dirs_without_leftovers(tmp_path: Path) -> None:
    for iteration in (1, 2, 3):
        make_checkpoint(tmp_path, iteration)
    staging = stage_shards(tmp_path, 4)  # in flight: never touched
    write_tracker(tmp_path, 3)
    plan = plan_retention(committed_iterations(tmp_path), RetentionPolicy(keep_last=1))

    assert apply_retention(tmp_path, plan, generation=0) == [1, 2]

    assert committed_iterations(tmp_path) == [3]
    assert staging.is_dir()
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(layout.TRASH_PREFIX)]
    assert hidden == []


def test_apply_never_deletes_the_tracker_target(tmp_path: Path) -> None:
    for iteration in (1, 2, 3):
        make_checkpoint(tmp_path, iteration)
    write_tracker(tmp_path, 2)
    # A stale or hand-made plan that names the tracker's target.
    plan = RetentionPlan(keep=(3,), delete=(1, 2), reasons={1: "delete: old", 2: "delete: old"})

    assert apply_retention(tmp_path, plan, generation=0) == [1]
    assert committed_iterations(tmp_path) == [2, 3]


def test_apply_skips_missing_dirs(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 1)
    plan = RetentionPlan(keep=(), delete=(1, 9), reasons={})
    assert apply_retention(tmp_path, plan, generation=0) == [1]
    assert apply_retention(tmp_path / "absent", plan, generation=0) == []
