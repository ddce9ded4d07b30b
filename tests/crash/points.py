"""Catalogues of kill points: the ordered ones the crash tests walk, random ones for the soak.

Regexes match ``PauseIO`` subjects: a path, ``"src -> dst"`` for renames and replaces, or the
writer's point name. Torch-free.
"""

from __future__ import annotations

import random

from tests.crash.harness import pause
from tests.crash.killloop import (
    KillPoint,
    after_delay,
    at_pause,
    staging_dir_appeared,
    tracker_moved_since_resume,
    when_seen,
)

STAGED = r"/\.cairn-staging\.iter_\d+\.g\d+\.[0-9a-f]+"
ITER = r"/iter_\d{7}"


def sync_protocol_points(rng: random.Random) -> list[KillPoint]:
    """Kill points in an order where each one's precondition is left by the ones before it."""
    return [
        after_delay("seeded delay, fresh root", rng.uniform(0.05, 0.6)),
        when_seen("staging dir appeared", staging_dir_appeared),
        at_pause(
            "metadata.json staged",
            pause("write_file", STAGED + r"/metadata\.json$", "after", rng.randint(1, 2)),
        ),
        at_pause(
            "manifest staged, before fsync and rename",
            pause("write_file", STAGED + r"/cairn\.manifest\.json$", "after"),
        ),
        at_pause(
            "renamed into place, not published",
            pause("rename", STAGED + " -> .*" + ITER + "$", "after"),
        ),
        # Needs the previous point: the restart re-saves that iteration, swapping the new copy
        # in with one atomic exchange; the old copy is left under the staging name.
        at_pause(
            "re-save swapped the new copy in, old copy not yet removed",
            pause("exchange", STAGED + " <-> .*" + ITER + "$", "after"),
        ),
        at_pause(
            "Bridge tracker written, text tracker not yet",
            pause("replace", r"latest_train_state\.pt$", "after"),
        ),
        at_pause(
            "tracker temp file fsynced, not replaced",
            pause(
                "replace",
                r"\.cairn-tmp\.latest_checkpointed_iteration\.txt",
                "before",
                rng.randint(1, 2),
            ),
        ),
        when_seen("tracker changed", tracker_moved_since_resume),
        at_pause(
            "retention renamed a checkpoint to trash",
            pause("rename", ITER + r" -> .*/\.cairn-trash\.", "after"),
        ),
        at_pause(
            "retention about to remove the trash dir",
            pause("remove_tree", r"/\.cairn-trash\.", "before"),
        ),
        at_pause(
            "start-up generation claim half done",
            pause("replace", r"\.cairn-tmp\.\.cairn\.generation", "before"),
        ),
        op_index_point(rng.randint(5, 60)),
        after_delay("seeded delay", rng.uniform(0.05, 1.5)),
    ]


def op_index_point(n: int) -> KillPoint:
    return at_pause(f"before durability op #{n}", pause("*", "", "before", n))


def async_points(rng: random.Random) -> list[KillPoint]:
    """Kills of the async path: in the worker's write and after it, before finalize.

    Each launch pays for two fresh worker interpreters, so ``make test`` walks only these;
    :func:`async_finalize_point` (inside finalize) runs in the soak.
    """
    return [
        after_delay("seeded delay while the worker starts", rng.uniform(0.05, 1.0)),
        at_pause(
            "worker wrote a shard, not yet fsynced",
            worker=(pause("fsync_file", STAGED + r"/__0_\d+\.distcp$", "before"),),
        ),
        at_pause(
            "worker finished its files, training has not finalized",
            pause("point", r"^after_schedule:"),
            worker=(pause("fsync_file", STAGED + r"/train_state\.pt$", "after"),),
        ),
    ]


def async_finalize_point() -> KillPoint:
    # The second finalize of the launch: the persistent worker served two saves.
    return at_pause(
        "finalize agreed, metadata.json not written",
        pause("write_file", STAGED + r"/metadata\.json$", "before", 2),
    )


def random_point(rng: random.Random, mode: str, give_up_s: float) -> KillPoint:
    """A random kill point for the soak; one not reached within ``give_up_s`` is a plain kill."""
    roll = rng.random()
    if roll < 0.3:
        point = after_delay("random delay", rng.uniform(0.0, 3.0 if mode == "async" else 1.5))
    elif roll < 0.55:
        point = op_index_point(rng.randint(1, 90))
    else:
        catalogue = sync_protocol_points(rng)[1:-2]
        if mode == "async":
            catalogue += [*async_points(rng)[1:], async_finalize_point()]
        point = rng.choice(catalogue)
    return KillPoint(
        f"{point.name} [{mode}]",
        pauses=point.pauses,
        worker_pauses=point.worker_pauses,
        seen=point.seen,
        delay_s=point.delay_s,
        expect_paused=point.expect_paused,
        give_up_s=give_up_s,
    )
