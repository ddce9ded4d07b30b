"""A writer of an old restart generation (a zombie) must not change a root a newer one claimed.

Each scenario stops a generation-1 writer at one point of saving iteration 30, runs a
generation-2 job on the same root to completion, then lets the zombie continue. The zombie
must fail (``StaleGenerationError`` where the fence is checked) and leave every entry of the
root exactly as generation 2 left it (same inode, size and mtime for every file and dir).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cairn_agent.storage import layout
from cairn_agent.storage.manifest import read_manifest

from tests.crash.harness import WORLD, WriterRun, Zygote, pause, wait_until
from tests.crash.invariants import History, check_after_kill, root_snapshot

STAGED_30 = r"/\.cairn-staging\.iter_0000030\.g1\.[0-9a-f]+"
NEW_GEN_LAST = 40


def _zombie(zygote: Zygote, base: Path, root: Path, *rules: dict[str, Any]) -> WriterRun:
    """A generation-1 job stopped at the first of ``rules`` (while saving iteration 30)."""
    zombie = zygote.launch(
        base, {"root": str(root), "generation": 1, "pauses": {"0": list(rules)}, "keep_last": 2}
    )
    zombie.wait_paused()
    return zombie


def _new_generation(
    zygote: Zygote, base: Path, root: Path, *, gc_at_start: bool = True, last: int = NEW_GEN_LAST
) -> WriterRun:
    # keep_last=100: generation 2 keeps everything, so a deletion by the zombie would show.
    run = zygote.launch(
        base,
        {
            "root": str(root),
            "generation": 2,
            "stop_after": last,
            "keep_last": 100,
            "gc_at_start": gc_at_start,
        },
    )
    for rank in range(WORLD):
        run.wait_event("done", rank, timeout_s=90)
    run.wait_exit()
    return run


def _wake(zombie: WriterRun) -> dict[str, Any] | None:
    """Let the zombie continue until rank 0 gives up; returns its ``stale`` event (if any)."""
    zombie.release("r0")
    return _wait_gave_up(zombie)


def _wait_gave_up(zombie: WriterRun) -> dict[str, Any] | None:
    def rank0_finished() -> bool:
        kinds = {e["ev"] for e in zombie.events(0)}
        return bool(kinds & {"stale", "error", "done"})

    try:
        # Not zombie.wait_for: rank 1 failing with CommitError is expected here.
        wait_until("the zombie's rank 0 to give up", rank0_finished, 60.0, zombie.diagnostics)
    finally:
        zombie.kill()  # rank 1 may wait in a collective rank 0 left
    return zombie.first("stale")


ZOMBIE_POINTS = {
    # Fence checked in publish: the zombie committed iteration 30 but may not move the tracker.
    "between commit rename and publish": pause(
        "rename", STAGED_30 + r" -> .*/iter_0000030$", "after"
    ),
    # Fence checked in apply_retention: its plan (delete 10) is stale and must not run.
    "retention plan made, not applied": pause("point", r"^before_retention:30$"),
    # Fence checked in claim_generation: it may not even start another save.
    "before preparing the next save": pause("point", r"^before_save:30$"),
}


@pytest.mark.parametrize("where", sorted(ZOMBIE_POINTS))
def test_stale_generation_writer_gets_stale_error_and_changes_nothing(
    zygote: Zygote, tmp_path: Path, where: str
) -> None:
    root = tmp_path / "ckpt"
    zombie = _zombie(zygote, tmp_path, root, ZOMBIE_POINTS[where])
    new = _new_generation(zygote, tmp_path, root)
    assert new.wait_event("resumed")["exact"] is True
    before = root_snapshot(root)
    tracker_before = layout.tracker_path(root).read_bytes()

    stale = _wake(zombie)

    assert stale is not None, f"zombie did not report StaleGenerationError: {zombie.events(0)}"
    assert "generation 1 is stale" in stale["error"]
    assert layout.tracker_path(root).read_bytes() == tracker_before == str(NEW_GEN_LAST).encode()
    assert root_snapshot(root) == before
    check_after_kill(root, History(), published=NEW_GEN_LAST)


def test_zombie_whose_staging_dir_was_collected_cannot_commit(
    zygote: Zygote, tmp_path: Path
) -> None:
    """Generation 2's start-up GC removes the zombie's staging dir; its commit then fails."""
    root = tmp_path / "ckpt"
    zombie = _zombie(
        zygote, tmp_path, root, pause("write_file", STAGED_30 + r"/cairn\.manifest\.json$", "after")
    )
    new = _new_generation(zygote, tmp_path, root, gc_at_start=True)
    assert any(
        name.startswith(".cairn-staging.iter_0000030.g1.")
        for name in new.wait_event("gc")["removed"]
    )
    before = root_snapshot(root)

    _wake(zombie)

    assert read_manifest(layout.iteration_dir(root, 30)).generation == 2
    assert root_snapshot(root) == before
    # The fence stops it before it touches the root (StaleGenerationError); without the fence
    # the rename of its vanished staging dir would fail (CommitError). Either way: nothing moved.
    assert any(
        e.get("ev") == "stale" or "CommitError" in e.get("error", "")
        for _, e in zombie.all_events()
    )


def test_zombie_commit_cannot_replace_a_newer_generations_checkpoint(
    zygote: Zygote, tmp_path: Path
) -> None:
    root = tmp_path / "ckpt"
    staged = pause("write_file", STAGED_30 + r"/cairn\.manifest\.json$", "after")
    zombie = _zombie(zygote, tmp_path, root, pause("point", r"^before_save:30$"), staged)
    # Generation 2 in the agent facade's order: start-up GC, resume, and only the first
    # save's prepare_staging claims the generation. It stops just before that save.
    new = zygote.launch(
        tmp_path,
        {
            "root": str(root),
            "generation": 2,
            "stop_after": NEW_GEN_LAST,
            "keep_last": 100,
            "claim_at_start": False,
            "pauses": {"0": [pause("point", r"^before_save:30$")]},
        },
    )
    new.wait_paused(1)
    zombie.release("r0", 1)  # claims (still allowed), stages 30 completely, stops again
    zombie.wait_paused(2)
    new.release("r0", 1)  # claims generation 2, commits and publishes 30 and 40
    for rank in range(WORLD):
        new.wait_event("done", rank, timeout_s=90)
    new.wait_exit()
    assert read_manifest(layout.iteration_dir(root, 30)).generation == 2
    before = root_snapshot(root)

    zombie.release("r0", 2)
    _wait_gave_up(zombie)

    assert read_manifest(layout.iteration_dir(root, 30)).generation == 2, (
        "generation 2's iter_0000030 was deleted and replaced by the stale writer's copy"
    )
    # Aborting its failed save, the zombie may remove its own staging dir, nothing else.
    assert _without_own_staging(root_snapshot(root)) == _without_own_staging(before)


def _without_own_staging(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in snapshot.items() if not k.startswith(".cairn-staging.iter_0000030.g1.")
    }


def test_stale_writer_killed_mid_commit_never_moves_the_published_checkpoint(
    zygote: Zygote, tmp_path: Path
) -> None:
    root = tmp_path / "ckpt"
    staged = pause("write_file", STAGED_30 + r"/cairn\.manifest\.json$", "after")
    # Where a fence-less commit would first touch the published directory: if the zombie
    # ever gets there, it is killed on the spot, as zombies are.
    swapped = pause("exchange", r"iter_0000030$", "before")
    moved_aside = pause("rename", r"/iter_0000030 -> .*/\.cairn-replaced\.", "before")
    zombie = zygote.launch(
        tmp_path,
        {"root": str(root), "generation": 1, "pauses": {"0": [staged, swapped, moved_aside]}},
    )
    zombie.wait_paused(1)
    _new_generation(zygote, tmp_path, root, gc_at_start=True, last=30)  # publishes 30
    before = root_snapshot(root)

    zombie.release("r0", 1)
    assert _wait_gave_up(zombie) is not None, "the zombie was not stopped by the fence"

    assert root_snapshot(root) == before
    check_after_kill(root, History(), published=30)
