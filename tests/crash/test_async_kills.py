"""SIGKILL a two-rank writer that saves through the async queue (persistent worker per rank).

The root first gets two published checkpoints from a clean synchronous run, so every kill has
something to lose. The kill takes the ranks and their workers down together (one process
group): during the worker's write, and after the write is complete but before finalize. The
same invariants as for sync saves must hold, and a last run resumes bit-exactly. (A kill
inside finalize runs in the soak: each async launch pays for two fresh worker interpreters.)
"""

from __future__ import annotations

import random
from pathlib import Path

from tests.crash.harness import Zygote
from tests.crash.killloop import STEP, KillLoop
from tests.crash.points import async_points

SEED = 7_2026


def test_async_writer_killed_in_worker_write_and_before_finalize_keeps_every_promise(
    zygote: Zygote, tmp_path: Path
) -> None:
    loop = KillLoop(zygote, tmp_path, mode="async", keep_last=2)
    loop.finish(saves=2)
    assert loop.expected_resume == 2 * STEP

    summaries = [loop.kill_at(point) for point in async_points(random.Random(SEED))]
    loop.finish(saves=2)

    paused = " | ".join(loop.stats.paused_at)
    assert "w0 before fsync_file __0_0.distcp" in paused
    assert "w0 after fsync_file train_state.pt" in paused
    assert "r0 before point after_schedule" in paused
    # Nothing scheduled but not finalized may surface: each restart resumed from 20.
    assert [s["resume"] for s in summaries] == [2 * STEP] * len(summaries)
    assert loop.published == 4 * STEP
    assert loop.stats.leaked_arenas == 0, "a killed rank left its staging arena in /dev/shm"
    assert "cairn-staging" in loop.history.kinds_of_leftover
