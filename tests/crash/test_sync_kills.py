"""SIGKILL a two-rank synchronous writer at every step of the commit protocol.

One root, one writer job restarted after every kill with a higher restart generation. After
each kill the root must hold only committed, deeply verifying checkpoints, the tracker and
Bridge's ``latest_train_state.pt`` must name one, GC must leave nothing behind and remove
nothing committed, nothing may go backwards, and the restarted job must load the predicted
resume point bit-exactly (see ``invariants.py``).
"""

from __future__ import annotations

import random
from pathlib import Path

from tests.crash.harness import Zygote, pause
from tests.crash.killloop import STEP, KillLoop, at_pause
from tests.crash.points import ITER, sync_protocol_points

SEED = 20261129


def test_sync_writer_killed_at_every_protocol_step_never_loses_or_breaks_a_checkpoint(
    zygote: Zygote, tmp_path: Path
) -> None:
    loop = KillLoop(zygote, tmp_path, mode="sync", keep_last=2)
    summaries = [loop.kill_at(point) for point in sync_protocol_points(random.Random(SEED))]

    final = loop.finish(saves=2)

    assert loop.history.kills == len(summaries) + 1  # + the final clean run's check
    # Both ranks of (almost) every restart loaded the predicted resume point bit-exactly; a
    # launch killed during its start-up (the generation claim) never got that far.
    assert loop.stats.resume_checks >= 2 * (len(summaries) - 2)
    assert loop.stats.saves > 0 and final.first("done") is not None
    # The crashes left every kind of debris for GC to clear (each point was reached, or
    # kill_at would have failed).
    assert {
        "cairn-staging",
        "cairn-trash",
        "cairn-tmp",
    } <= loop.history.kinds_of_leftover
    assert loop.published is not None and loop.published % STEP == 0


def test_bridge_tracker_never_names_a_missing_checkpoint_after_two_crashes(
    zygote: Zygote, tmp_path: Path
) -> None:
    loop = KillLoop(zygote, tmp_path, mode="sync", keep_last=2)
    ahead = loop.kill_at(
        at_pause("Bridge tracker ahead", pause("replace", r"latest_train_state\.pt$", "after", 2))
    )
    assert ahead["resume"] == STEP  # the text tracker still says 10; Bridge's says 20

    loop.kill_at(
        at_pause(
            "re-save of 20 swapped the new copy in, old copy not yet removed",
            pause("exchange", r"\.cairn-staging\..* <-> .*" + ITER + "$", "after"),
        )
    )
