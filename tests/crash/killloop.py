"""The kill loop: launch the writer, kill it at a point, check every invariant, restart.

Each restart gets a higher restart generation, so a process of an earlier generation could
never publish. Kill points are of three kinds:

- :func:`at_pause`: the writer's ``PauseIO`` stops it at an exact protocol step;
- :func:`when_seen`: the test polls the root for an on-disk event (a staging dir appeared,
  the tracker changed) and kills as soon as it sees it;
- :func:`after_delay`: a seeded delay after the writer resumed.

After every kill ``invariants.check_after_kill`` runs; the next launch must then resume from
exactly the iteration it predicted, loading it bit-exactly (the writer's ``resumed`` event).
Torch-free.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn_agent.storage.listing import list_staging_dirs
from cairn_agent.storage.tracker import read_tracker

from tests.crash.harness import WORLD, WaitTimeout, WriterRun, Zygote
from tests.crash.invariants import History, InvariantError, check_after_kill

STEP = 10


@dataclass(frozen=True)
class KillPoint:
    """Where one launch of the writer is killed."""

    name: str
    pauses: list[dict[str, Any]] = field(default_factory=list)
    """Pause rules for rank 0's training process."""
    worker_pauses: list[dict[str, Any]] = field(default_factory=list)
    """Pause rules for rank 0's async worker (per write job)."""
    seen: Callable[[Path, WriterRun], bool] | None = None
    """Kill as soon as this holds (polled every few ms once the writer resumed)."""
    delay_s: float | None = None
    """Kill this long after the writer resumed."""
    expect_paused: set[str] = field(default_factory=lambda: {"r0"})
    """Pause labels that must all be stopped before the kill (``w0``: rank 0's worker)."""
    give_up_s: float | None = None
    """If set, a point not reached in this time is a plain kill instead of a failure (soak)."""


def at_pause(
    name: str, *rules: dict[str, Any], worker: tuple[dict[str, Any], ...] = ()
) -> KillPoint:
    labels = ({"r0"} if rules else set()) | ({"w0"} if worker else set())
    return KillPoint(name, pauses=list(rules), worker_pauses=list(worker), expect_paused=labels)


def when_seen(name: str, seen: Callable[[Path, WriterRun], bool]) -> KillPoint:
    return KillPoint(name, seen=seen, expect_paused=set())


def after_delay(name: str, delay_s: float) -> KillPoint:
    return KillPoint(name, delay_s=delay_s, expect_paused=set())


def staging_dir_appeared(root: Path, _run: WriterRun) -> bool:
    return bool(list_staging_dirs(root))


def tracker_moved_since_resume(root: Path, run: WriterRun) -> bool:
    resumed = run.first("resumed")
    value = read_tracker(root)
    return resumed is not None and value is not None and value.iteration != resumed["iteration"]


@dataclass
class LoopStats:
    """Counts the soak reports."""

    launches: int = 0
    saves: int = 0
    resume_checks: int = 0
    kills_by_point: Counter[str] = field(default_factory=Counter)
    paused_at: list[str] = field(default_factory=list)
    leaked_arenas: int = 0


class KillLoop:
    """Kill / check / restart against one checkpoint root."""

    def __init__(
        self, zygote: Zygote, base: Path, *, mode: str = "sync", keep_last: int = 2
    ) -> None:
        self.zygote, self.base, self.mode, self.keep_last = zygote, base, mode, keep_last
        self.root = base / "ckpt"
        self.generation = 0
        self.history = History()
        self.stats = LoopStats()
        self.expected_resume: int | None = None
        self.published: int | None = None

    def launch(
        self,
        point: KillPoint | None = None,
        *,
        mode: str | None = None,
        stop_after: int | None = None,
    ) -> WriterRun:
        self.generation += 1
        self.stats.launches += 1
        cfg: dict[str, Any] = {
            "root": str(self.root),
            "generation": self.generation,
            "mode": mode or self.mode,
            "step": STEP,
            "keep_last": self.keep_last,
            "stop_after": stop_after,
        }
        if point is not None:
            cfg["pauses"] = {"0": point.pauses}
            cfg["worker_pauses"] = {"0": point.worker_pauses}
        return self.zygote.launch(self.base, cfg)

    def kill_at(
        self, point: KillPoint, *, mode: str | None = None, timeout_s: float = 90.0
    ) -> dict[str, Any]:
        """One cycle: launch, reach ``point``, SIGKILL, check everything. Returns a summary."""
        run = self.launch(point, mode=mode)
        try:
            marker = self._reach(run, point, point.give_up_s or timeout_s)
        except WaitTimeout:
            if point.give_up_s is None:
                raise
            marker = f"not reached in {point.give_up_s}s, killed anyway"
        finally:
            run.kill()
            self.stats.leaked_arenas += remove_leaked_arenas(run)
        self._absorb(run)
        self.stats.kills_by_point[point.name] += 1
        try:
            self.expected_resume = check_after_kill(self.root, self.history, self.published)
        except InvariantError as exc:
            raise InvariantError(f"after the kill at {point.name!r} ({marker}): {exc}") from exc
        return {"point": point.name, "marker": marker, "resume": self.expected_resume}

    def _reach(self, run: WriterRun, point: KillPoint, timeout_s: float) -> str:
        if point.expect_paused:
            return self._wait_paused(run, point.expect_paused, timeout_s)
        run.wait_event("resumed", timeout_s=timeout_s)
        seen = point.seen
        if seen is not None:
            run.wait_for(point.name, lambda: seen(self.root, run), timeout_s)
            return "seen on disk"
        deadline = time.monotonic() + (point.delay_s or 0.0)
        # A seeded kill time, not a synchronisation: the writer must stay alive until then.
        run.wait_for(f"{point.delay_s}s to pass", lambda: time.monotonic() >= deadline, timeout_s)
        return f"after {point.delay_s:.3f}s"

    def _wait_paused(self, run: WriterRun, labels: set[str], timeout_s: float) -> str:
        def all_paused() -> list[dict[str, Any]] | None:
            found = {m["label"]: m for m in _markers(run)}
            return list(found.values()) if labels <= set(found) else None

        markers = run.wait_for(f"pause of {sorted(labels)}", all_paused, timeout_s)
        text = "; ".join(
            f"{m['label']} {m['when']} {m['op']} {Path(m['subject'].split(' -> ')[-1]).name}"
            for m in markers
        )
        self.stats.paused_at.append(text)
        return text

    def _absorb(self, run: WriterRun) -> None:
        """Check the launch's resume events and fold its published iterations into the history."""
        for rank in range(WORLD):
            event = run.first("resumed", rank)
            if event is None:
                continue
            if event["iteration"] != self.expected_resume:
                raise AssertionError(
                    f"rank {rank} resumed from {event['iteration']}, the invariant check predicted "
                    f"{self.expected_resume}\n{run.diagnostics()}"
                )
            if event["iteration"] is not None and not event["exact"]:
                raise AssertionError(f"rank {rank} resume point is not bit-exact: {event['wrong']}")
            self.stats.resume_checks += 1
        saved = [e["iteration"] for e in run.of_kind("saved")]
        self.stats.saves += len(saved)
        if saved:
            self.published = max(saved + ([self.published] if self.published is not None else []))

    def finish(self, *, saves: int = 2, timeout_s: float = 120.0) -> WriterRun:
        """A last launch that resumes, saves ``saves`` more iterations and exits cleanly."""
        start = self.expected_resume if self.expected_resume is not None else 0
        run = self.launch(mode="sync", stop_after=start + saves * STEP)
        for rank in range(WORLD):
            run.wait_event("done", rank, timeout_s)
        run.wait_exit()
        self._absorb(run)
        if self.published != start + saves * STEP:
            raise AssertionError(
                f"final run published {self.published}, expected {start + saves * STEP}"
            )
        self.expected_resume = check_after_kill(self.root, self.history, self.published)
        return run


def _markers(run: WriterRun) -> list[dict[str, Any]]:
    import json

    out = []
    for path in sorted(run.run_dir.glob("paused-*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except ValueError:
            continue
    return out


def remove_leaked_arenas(run: WriterRun) -> int:
    """Delete (and count) /dev/shm staging arenas the killed ranks left behind."""
    shm = Path("/dev/shm")
    leaked = (
        [p for pid in run.pids for p in shm.glob(f"cairn-stage-{pid}-*")] if shm.is_dir() else []
    )
    for path in leaked:
        path.unlink(missing_ok=True)
    return len(leaked)
