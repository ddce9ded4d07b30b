"""The retention planner (pure) and its safe application."""

from __future__ import annotations

from pathlib import Path

import pytest
from cairn_agent.storage import layout
from cairn_agent.storage.listing import committed_iterations
from cairn_agent.storage.retention import (
    Reason,
    RetentionPolicy,
    apply_retention,
    delete_iterations,
    plan_on_disk,
    plan_retention,
)
from cairn_agent.storage.tracker import write_tracker

from tests.storage.helpers import make_checkpoint, stage_shards

ITERS = [100, 200, 300, 400, 500, 600]


def test_keep_last_keeps_the_newest() -> None:
    plan = plan_retention(ITERS, RetentionPolicy(keep_last=2))
    assert plan.keep == (500, 600)
    assert plan.delete == (100, 200, 300, 400)
    assert plan.decision(500).reasons == (Reason.WITHIN_KEEP_LAST,)
    assert plan.decision(100).action == "delete"
    assert plan.decision(100).reasons == (Reason.OLDER_THAN_KEEP_LAST,)
    assert plan.explain(500) == "within keep_last=2"
    assert plan.explain(100) == "older than the newest 2"


def test_no_policy_keeps_everything() -> None:
    plan = plan_retention(ITERS, RetentionPolicy())
    assert plan.keep == tuple(ITERS) and plan.delete == ()
    assert plan.decision(100).reasons == (Reason.KEEP_ALL,)


def test_every_guard_and_rule_is_a_typed_reason() -> None:
    policy = RetentionPolicy(keep_last=1, keep_every=300, pinned=frozenset({100}))
    plan = plan_retention(
        [*ITERS, 700],
        policy,
        tracker=600,
        resume_point=200,
        protected=[400],
        newest_verified=500,
    )
    reasons = {d.iteration: d.reasons for d in plan.decisions}
    assert reasons == {
        100: (Reason.PINNED,),
        200: (Reason.RESUME_POINT,),
        300: (Reason.MULTIPLE_OF_KEEP_EVERY,),
        400: (Reason.PROTECTED,),
        500: (Reason.NEWEST_VERIFIED,),
        600: (Reason.TRACKER_TARGET, Reason.WITHIN_KEEP_LAST, Reason.MULTIPLE_OF_KEEP_EVERY),
        700: (Reason.NEWER_THAN_TRACKER, Reason.NEWEST_COMMITTED),
    }
    assert plan.delete == ()
    assert plan.explain(700) == (
        "newer than the tracker's target 600 (may still be in flight); newest committed checkpoint"
    )


def test_max_iteration_leaves_in_flight_saves_alone() -> None:
    plan = plan_retention(ITERS, RetentionPolicy(keep_last=1), max_iteration=400)
    # 500 and 600 may still be finalizing; keep_last counts up to max_iteration.
    assert plan.keep == (400, 500, 600)
    assert plan.delete == (100, 200, 300)
    assert Reason.NEWER_THAN_TRACKER in plan.decision(500).reasons
    assert "in flight" in plan.explain(600)


def test_the_lower_of_tracker_and_max_iteration_bounds_the_plan() -> None:
    plan = plan_retention(ITERS, RetentionPolicy(keep_last=1), tracker=500, max_iteration=300)
    assert plan.guards.bound == 300
    assert plan.delete == (100, 200)


def test_newest_committed_is_kept_even_if_protected_elsewhere() -> None:
    plan = plan_retention([5, 1, 5, 3], RetentionPolicy(keep_last=1), protected=[1])
    assert plan.keep == (1, 5) and plan.delete == (3,)
    assert plan_retention([], RetentionPolicy(keep_last=1)).decisions == ()
    with pytest.raises(KeyError):
        plan.decision(2)


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
    plan = plan_on_disk(tmp_path, RetentionPolicy(keep_last=1)).plan

    assert apply_retention(tmp_path, plan, generation=0) == [1, 2]

    assert committed_iterations(tmp_path) == [3]
    assert staging.is_dir()
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(layout.TRASH_PREFIX)]
    assert hidden == []


def test_apply_never_deletes_the_tracker_target(tmp_path: Path) -> None:
    for iteration in (1, 2, 3):
        make_checkpoint(tmp_path, iteration)
    write_tracker(tmp_path, 2)
    # A stale or hand-made list that names the tracker's target.
    assert delete_iterations(tmp_path, [1, 2], generation=0) == [1]
    assert committed_iterations(tmp_path) == [2, 3]


def test_apply_skips_missing_dirs(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 1)
    assert delete_iterations(tmp_path, [1, 9], generation=0) == [1]
    assert delete_iterations(tmp_path / "absent", [1], generation=0) == []


def test_plan_on_disk_reads_tracker_verification_and_leftovers(tmp_path: Path) -> None:
    for iteration in (1, 2, 3, 4):
        make_checkpoint(tmp_path, iteration)
    write_tracker(tmp_path, 3)
    for iteration in (3, 4):  # a size mismatch: shallow verification catches it
        next(layout.iteration_dir(tmp_path, iteration).glob("*.distcp")).write_bytes(b"torn")
    staging = stage_shards(tmp_path, 5)

    disk = plan_on_disk(tmp_path, RetentionPolicy(keep_last=1), resume_point=1)

    assert disk.tracker == 3 and disk.newest_verified == 2
    assert [("iter_0000004" in c, "iter_0000003" in c) for c in disk.corrupt] == [
        (True, False),
        (False, True),
    ]
    assert disk.leftovers == (("staging", staging.name),)
    assert disk.plan.keep == (1, 2, 3, 4) and disk.plan.delete == ()
    assert disk.plan.decision(4).reasons == (Reason.NEWER_THAN_TRACKER, Reason.NEWEST_COMMITTED)
    assert disk.plan.decision(2).reasons == (Reason.NEWEST_VERIFIED,)


def test_plan_on_disk_trusts_a_known_verified_iteration(tmp_path: Path) -> None:
    for iteration in (1, 2, 3):
        make_checkpoint(tmp_path, iteration)
    write_tracker(tmp_path, 3)
    next(layout.iteration_dir(tmp_path, 3).glob("*.distcp")).write_bytes(b"torn")

    disk = plan_on_disk(tmp_path, RetentionPolicy(keep_last=1), known_verified=3)

    assert disk.newest_verified == 3 and disk.corrupt == ()
    assert apply_retention(tmp_path, disk.plan, generation=0) == [1, 2]
