"""Property: over any history, retention never deletes what a resume may still need.

Hypothesis drives random histories against a real checkpoint root: sync saves, async saves
staged and later finalized, crashes (a staging leftover, or a commit whose tracker never moved),
pins and unpins, checkpoints corrupted on disk, policy changes, restarts that resume from an
older checkpoint, and ``cairn gc`` runs. Every retention pass goes through the disk planner
(``plan_on_disk``) and ``apply_retention``, as in-job retention and ``cairn gc`` do; after every
step the status planner (``plan_from_status``) plans over the status the agent would report.

Neither may delete the tracker's target, the resume point, a pinned iteration, the newest
verified checkpoint, or anything newer than the tracker. (In-job retention is told no pins: the
agent does not learn ``spec.retention.pinned`` today, so pins are checked on the other passes.) ``make test`` runs a fast sample;
``make soak`` runs 10^5 histories (hypothesis profiles below).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cairn_agent.resource.retention import plan_from_status
from cairn_agent.resource.spec import RetentionSpec
from cairn_agent.storage import layout
from cairn_agent.storage.commit import commit_staging_dir, publish
from cairn_agent.storage.durable import DurableIO
from cairn_agent.storage.listing import committed_iterations
from cairn_agent.storage.retention import (
    GcOptions,
    RetentionPlan,
    RetentionPolicy,
    apply_retention,
    plan_on_disk,
)
from cairn_agent.storage.retention import arguments as gc_arguments
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.storage.helpers import manifest_for, stage_shards

_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow],
}
settings.register_profile(
    "retention-fast", max_examples=200, stateful_step_count=20, derandomize=True, **_COMMON
)
# $CAIRN_RETENTION_HISTORIES shortens (or lengthens) the soak, e.g. to reproduce a failure.
SOAK_HISTORIES = int(os.environ.get("CAIRN_RETENTION_HISTORIES", "100000"))
settings.register_profile(
    "retention-soak",
    max_examples=SOAK_HISTORIES,
    stateful_step_count=20,
    print_blob=True,
    **_COMMON,
)
# tmpfs when there is one: the histories write thousands of small checkpoints.
_SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


class _NoSyncIO(DurableIO):
    """Real writes and renames without fsync: crash durability is not under test, decisions are."""

    def fsync_file(self, path: Path) -> None:
        pass

    def fsync_dir(self, path: Path) -> None:
        pass


_IO = _NoSyncIO()
_KEEP_LAST = st.none() | st.integers(min_value=1, max_value=4)
_KEEP_EVERY = st.none() | st.integers(min_value=2, max_value=9)


class RetentionHistory(RuleBasedStateMachine):
    """One job's checkpoint root and what the test knows about it."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="cairn-retention-", dir=_SCRATCH))
        self.committed: set[int] = set()
        self.corrupt: set[int] = set()
        self.pinned: set[int] = set()
        self.tracker: int | None = None
        self.resume: int | None = None
        self.keep_last: int | None = 2
        self.keep_every: int | None = None
        self.last = 0
        self.in_flight: tuple[int, Path] | None = None
        self.abandoned: list[str] = []

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # --- saves -------------------------------------------------------------------------------
    @precondition(lambda self: self.in_flight is None)
    @rule(step=st.integers(min_value=1, max_value=3))
    def sync_save(self, step: int) -> None:
        iteration, staging = self._stage(step)
        self._commit(iteration, staging, publish_it=True)
        self._in_job_retention(iteration)

    @precondition(lambda self: self.in_flight is None)
    @rule(step=st.integers(min_value=1, max_value=3))
    def async_schedule(self, step: int) -> None:
        self.in_flight = self._stage(step)

    @precondition(lambda self: self.in_flight is not None)
    @rule()
    def async_finalize(self) -> None:
        assert self.in_flight is not None
        iteration, staging = self.in_flight
        self.in_flight = None
        self._commit(iteration, staging, publish_it=True)
        self._in_job_retention(iteration)

    @precondition(lambda self: self.in_flight is not None)
    @rule(committed=st.booleans())
    def crash(self, committed: bool) -> None:
        """The job dies mid-save: staging left behind, or committed but never published."""
        assert self.in_flight is not None
        iteration, staging = self.in_flight
        self.in_flight = None
        if committed:
            self._commit(iteration, staging, publish_it=False)
        else:
            self.abandoned.append(staging.name)
        self.resume = self.tracker

    # --- the cluster and its operators -------------------------------------------------------
    @precondition(lambda self: bool(self.committed))
    @rule(data=st.data())
    def pin(self, data: st.DataObject) -> None:
        self.pinned.add(data.draw(st.sampled_from(sorted(self.committed))))

    @precondition(lambda self: bool(self.pinned))
    @rule(data=st.data())
    def unpin(self, data: st.DataObject) -> None:
        self.pinned.discard(data.draw(st.sampled_from(sorted(self.pinned))))

    @precondition(lambda self: bool(self.committed))
    @rule(data=st.data())
    def corrupt_on_disk(self, data: st.DataObject) -> None:
        iteration = data.draw(st.sampled_from(sorted(self.committed)))
        shard = next(layout.iteration_dir(self.root, iteration).glob("*.distcp"))
        shard.write_bytes(b"torn")  # the size no longer matches the manifest
        self.corrupt.add(iteration)

    @rule(keep_last=_KEEP_LAST, keep_every=_KEEP_EVERY)
    def change_policy(self, keep_last: int | None, keep_every: int | None) -> None:
        self.keep_last, self.keep_every = keep_last, keep_every

    @precondition(lambda self: self.tracker is not None and self.in_flight is None)
    @rule(data=st.data())
    def restart_from_older(self, data: st.DataObject) -> None:
        """A restart resumes from an older checkpoint (e.g. the operator pinned it)."""
        assert self.tracker is not None
        older = sorted(it for it in self.committed if it <= self.tracker)
        self.resume = data.draw(st.sampled_from(older))

    @rule(deep=st.booleans())
    def cairn_gc(self, deep: bool) -> None:
        protect = () if self.resume is None else (self.resume,)
        disk = plan_on_disk(self.root, self._policy(), protected=protect, deep=deep)
        assert set(self.abandoned) <= {name for _, name in disk.leftovers}
        self._apply(disk.plan)

    # --- invariants --------------------------------------------------------------------------
    @invariant()
    def status_plan_keeps_what_a_resume_needs(self) -> None:
        retention = RetentionSpec(
            keep_last=self.keep_last, keep_every=self.keep_every, pinned=tuple(sorted(self.pinned))
        )
        view = plan_from_status(retention, self._status(), resume_iteration=self.resume)
        assert not set(view.plan.delete) & self._must_keep(), view.plan

    # --- helpers -----------------------------------------------------------------------------
    def _stage(self, step: int) -> tuple[int, Path]:
        self.last += step
        return self.last, stage_shards(self.root, self.last, io=_IO)

    def _commit(self, iteration: int, staging: Path, *, publish_it: bool) -> None:
        final = layout.iteration_dir(self.root, iteration)
        commit_staging_dir(staging, final, manifest=manifest_for(staging, iteration), io=_IO)
        self.committed.add(iteration)
        if publish_it:
            publish(self.root, iteration, generation=0, io=_IO)
            self.tracker = iteration

    def _policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            keep_last=self.keep_last, keep_every=self.keep_every, pinned=frozenset(self.pinned)
        )

    def _in_job_retention(self, iteration: int) -> None:
        """As ``flows.save.apply_keep_last`` does once the tracker of ``iteration`` is durable."""
        if self.keep_last is None:
            return
        disk = plan_on_disk(
            self.root,
            RetentionPolicy(keep_last=self.keep_last),
            protected=(iteration,),
            resume_point=self.resume,
            known_verified=iteration,
            max_iteration=iteration,
        )
        self._apply(disk.plan, pins_known=False)

    def _must_keep(self, *, pins_known: bool = True) -> set[int]:
        good = self.committed - self.corrupt
        keep = set(self.pinned) if pins_known else set()
        keep |= {max(good)} if good else set()
        keep |= {it for it in (self.tracker, self.resume) if it is not None}
        if self.tracker is not None:
            keep |= {it for it in self.committed if it > self.tracker}
        return keep & self.committed

    def _apply(self, plan: RetentionPlan, *, pins_known: bool = True) -> None:
        must_keep = self._must_keep(pins_known=pins_known)
        assert not set(plan.delete) & must_keep, plan
        deleted = apply_retention(self.root, plan, generation=0, io=_IO)
        assert set(deleted) == set(plan.delete)
        self.committed -= set(deleted)
        assert set(committed_iterations(self.root)) == self.committed
        assert must_keep <= self.committed

    def _status(self) -> dict[str, Any]:
        """What the agent reports: every commit (verified), corrupt marks, the latest commit."""
        saved = [{"iteration": it, "verified": True, "bytes": 1} for it in sorted(self.committed)]
        status: dict[str, Any] = {
            "savedIterations": saved,
            "corruptIterations": [
                {"iteration": it, "file": "__0_0.distcp", "check": "size"} for it in self.corrupt
            ],
        }
        if self.tracker is not None:
            status["latestCommittedIteration"] = self.tracker
        return status


class TestRetentionHistories(RetentionHistory.TestCase):  # type: ignore[name-defined]
    settings = settings.get_profile("retention-fast")


@pytest.mark.soak
@pytest.mark.timeout(7200)
class TestRetentionHistoriesSoak(RetentionHistory.TestCase):  # type: ignore[name-defined]
    settings = settings.get_profile("retention-soak")


_OPTIONS = st.builds(
    GcOptions,
    policy=st.builds(
        RetentionPolicy,
        keep_last=_KEEP_LAST,
        keep_every=_KEEP_EVERY,
        pinned=st.frozensets(st.integers(min_value=0, max_value=10**9), max_size=4),
    ),
    protect=st.frozensets(st.integers(min_value=0, max_value=10**9), max_size=3),
    generation=st.none() | st.integers(min_value=0, max_value=100),
    deep=st.booleans(),
    dry_run=st.booleans(),
)


@settings(max_examples=200, derandomize=True, database=None)
@given(options=_OPTIONS, root=st.sampled_from(["/ckpt/run", "/mnt/a b/c"]))
def test_gc_arguments_round_trip(options: GcOptions, root: str) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    gc_arguments.add_arguments(parser)
    command, *argv = gc_arguments.to_arguments(root, options)
    parsed = parser.parse_args(argv)
    assert command == gc_arguments.COMMAND and parsed.root == root
    assert gc_arguments.from_namespace(parsed) == options
