"""The crash tests' kill loop for ``CAIRN_SOAK_SECONDS`` (default 600) at random points.

Each launch picks sync (mostly) or async saving and a random kill point: a random delay, the
k-th durability op, or any step of the protocol catalogue. Every kill is followed by the full
invariant check and a restart that must resume bit-exactly. Seeded by ``CAIRN_SOAK_SEED``.

A ``latest_train_state.pt`` naming a missing directory (a known issue, pinned down by an
xfail test in ``tests/crash``) is counted, not fatal, unless ``CAIRN_SOAK_STRICT_BRIDGE=1``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.crash.harness import Zygote
from tests.crash.killloop import KillLoop
from tests.crash.points import random_point
from tests.soak.conftest import REPORTS

ASYNC_SHARE = 0.2
GIVE_UP_S = 45.0
"""A random pause point not reached in this time (e.g. no re-save happened) is a plain kill."""


@pytest.mark.soak
@pytest.mark.timeout(0)
def test_random_kill_loop_never_loses_or_breaks_a_checkpoint(
    zygote: Zygote, tmp_path: Path
) -> None:
    seconds = float(os.environ.get("CAIRN_SOAK_SECONDS", "600"))
    seed = int(os.environ.get("CAIRN_SOAK_SEED", "4242"))
    rng = random.Random(seed)
    loop = KillLoop(zygote, tmp_path, mode="sync", keep_last=2)
    loop.history.lenient_bridge_tracker = os.environ.get("CAIRN_SOAK_STRICT_BRIDGE") != "1"
    started = time.monotonic()
    modes = {"sync": 0, "async": 0}
    given_up = 0
    while time.monotonic() - started < seconds:
        mode = "async" if rng.random() < ASYNC_SHARE else "sync"
        modes[mode] += 1
        summary = loop.kill_at(random_point(rng, mode, GIVE_UP_S), mode=mode)
        given_up += "not reached" in summary["marker"]
    loop.finish(saves=2)

    REPORTS.append(
        {
            "name": f"kill loop, seed {seed}, {time.monotonic() - started:.0f}s",
            "kills": loop.history.kills - 1,
            "launches (sync/async)": f"{loop.stats.launches} ({modes['sync']}/{modes['async']})",
            "saves published": loop.stats.saves,
            "invariant checks": loop.history.checks,
            "bit-exact resume checks": loop.stats.resume_checks,
            "leftovers removed by GC": loop.history.leftovers_removed,
            "kinds of leftover seen": sorted(loop.history.kinds_of_leftover),
            "pause points not reached (plain kills)": given_up,
            "latest_train_state.pt named a missing dir (known issue, xfail in tests/crash)": (
                loop.history.bridge_tracker_missing
            ),
            "newest committed at the end": loop.history.max_newest,
            "kills by point": dict(loop.stats.kills_by_point.most_common()),
        }
    )
    assert loop.history.kills >= 2 and loop.history.checks == loop.history.kills
    assert loop.stats.saves > 0 and loop.stats.leaked_arenas == 0
