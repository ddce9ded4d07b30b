"""``save_checkpoint`` with ``async_save=True`` schedules on the persistent worker; the tracker
moves and ``most_recent_k`` retention runs only when ``maybe_finalize_async_save`` commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api._async import async_saves
from tests.api._bodies import unpack
from tests.distributed import run_ranks


@pytest.mark.slow
def test_async_save_commits_at_finalize_and_retains_after_commit(tmp_path: Path) -> None:
    results = [unpack(r) for r in run_ranks(async_saves, 2, str(tmp_path / "async"))]
    rank0 = results[0]
    listings = [listing for listing, _ in rank0["seen"]]
    trackers = [tracker for _, tracker in rank0["seen"]]
    # A save becomes visible only at a later finalize (scheduling the next save finalizes the
    # previous one), and never more than one iteration ahead of the tracker.
    assert listings[0] == [] and trackers[0] is None
    assert listings[1] == [1] and trackers[1] == 1
    assert listings[2] == [1, 2] and trackers[2] == 2
    committed, tracker = rank0["final"]
    assert committed == [2, 3] and tracker.iteration == 3
    assert [r["empty"] for r in results] == [(False, True), (False, True)]
