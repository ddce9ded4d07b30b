"""Test-side driver of the crash writers: launch through the zygote, wait, kill, read events.

Torch-free: the pytest process never imports torch; every torch-bound check (the bit-exact
load of the resume point) runs in the restarted writer and comes back as an event.
All waits poll with a deadline and fail with what the writer logged.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.crash.pause_io import PauseRule, release_path

REPO_ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
ZYGOTE_READY_S = 240.0
"""Starting the zygote imports torch and megatron-core once (slow on a loaded machine)."""
POLL_S = 0.005
"""Poll interval: well inside every on-disk window the tests wait for (>= 50 ms)."""
HEALTH_S = 0.25
"""How often a wait also checks that the writer is alive and error-free (a /proc scan)."""


class CrashHarnessError(AssertionError):
    """A writer did something the test did not expect (died, never reached a point, ...)."""


class WaitTimeout(CrashHarnessError):
    """What was waited for did not happen in time (the writer was alive and error-free)."""


# --- processes ----------------------------------------------------------------------------------


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state is [0]), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (clock ticks since boot): tells a reused pid apart."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process of process group ``pgid`` exists."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def wait_until(
    what: str, predicate: Callable[[], Any], timeout_s: float, detail: Callable[[], str] = str
) -> Any:
    """Poll ``predicate`` until truthy; ``CrashHarnessError`` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout_s}s waiting for {what}\n{detail()}")
        time.sleep(POLL_S)


class Zygote:
    """The fork server (``tests.crash.zygote``) and its line protocol."""

    def __init__(self, log_path: Path) -> None:
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash.zygote"],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._ids = itertools.count()
        self.runs: list[WriterRun] = []
        self._read(ZYGOTE_READY_S)

    def _read(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            raise CrashHarnessError(f"zygote did not answer within {timeout_s}s")
        line = self.proc.stdout.readline()
        if not line:
            raise CrashHarnessError(f"zygote exited (code {self.proc.poll()})")
        return dict(json.loads(line))

    def launch(self, base_dir: Path, cfg: dict[str, Any]) -> WriterRun:
        """Start a writer job with ``cfg`` (root, generation, mode, pauses, ...)."""
        run_dir = base_dir / f"run-{next(self._ids):03d}-g{cfg['generation']}"
        run_dir.mkdir(parents=True)
        full = {**cfg, "run_dir": str(run_dir), "store": str(run_dir / "store")}
        assert self.proc.stdin is not None
        self.proc.stdin.write(
            (json.dumps({"cmd": "launch", "world": WORLD, "cfg": full}) + "\n").encode()
        )
        self.proc.stdin.flush()
        reply = self._read(30.0)
        run = WriterRun(run_dir, int(reply["pgid"]), [int(p) for p in reply["pids"]])
        self.runs.append(run)
        return run

    def close(self) -> None:
        # A test that failed half-way may have left a writer paused (a zombie waiting for a
        # release that never comes): every job this server started goes down with it.
        for run in self.runs:
            run.kill()
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def pause(op: str, match: str = "", when: str = "before", nth: int = 1) -> dict[str, Any]:
    """A pause rule (validated) as the writer config carries it."""
    return PauseRule(op=op, match=match, when=when, nth=nth).to_json()


class WriterRun:
    """One launched writer job (both ranks, one process group)."""

    def __init__(self, run_dir: Path, pgid: int, pids: list[int]) -> None:
        self.run_dir, self.pgid, self.pids = run_dir, pgid, pids
        self.gone = False
        """Set once the whole group was seen gone (so cleanup need not look again)."""
        self.leader_start = start_time(pgid)
        """Start time of rank 0 (the group leader), to never signal a reused process group."""

    # --- events and logs ----------------------------------------------------------------------

    def events(self, rank: int = 0) -> list[dict[str, Any]]:
        path = self.run_dir / f"events-r{rank}.jsonl"
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except FileNotFoundError:
            return []
        # A kill can cut the last line short; only complete lines count.
        return [json.loads(line) for line in lines if line.endswith("\n")]

    def all_events(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for rank in range(WORLD):
            for event in self.events(rank):
                yield rank, event

    def first(self, kind: str, rank: int = 0) -> dict[str, Any] | None:
        return next((e for e in self.events(rank) if e["ev"] == kind), None)

    def of_kind(self, kind: str, rank: int = 0) -> list[dict[str, Any]]:
        return [e for e in self.events(rank) if e["ev"] == kind]

    def diagnostics(self) -> str:
        parts = [f"run dir {self.run_dir}, pgid {self.pgid}, alive={group_alive(self.pgid)}"]
        for rank in range(WORLD):
            parts.append(f"--- events r{rank}: {self.events(rank)[-6:]}")
            log = self.run_dir / f"log-r{rank}.txt"
            if log.exists():
                parts.append(f"--- log r{rank} (tail):\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def _check_no_error(self) -> None:
        for rank, event in self.all_events():
            if event["ev"] == "error":
                raise CrashHarnessError(
                    f"writer rank {rank} failed: {event['tb']}\n{self.diagnostics()}"
                )

    # --- waiting ------------------------------------------------------------------------------

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout_s: float = 60.0) -> Any:
        """Poll ``predicate`` while the writer is alive and error-free."""
        next_health = [0.0]

        def check() -> Any:
            value = predicate()
            if value or time.monotonic() < next_health[0]:
                return value
            # Throttled: scanning /proc every few ms would steal the writer's CPU.
            next_health[0] = time.monotonic() + HEALTH_S
            self._check_no_error()
            if not group_alive(self.pgid):
                value = predicate()  # it may have happened just before the exit
                if not value:
                    self._check_no_error()
                    raise CrashHarnessError(f"writer exited before {what}\n{self.diagnostics()}")
            return value

        return wait_until(what, check, timeout_s, self.diagnostics)

    def wait_event(self, kind: str, rank: int = 0, timeout_s: float = 60.0) -> dict[str, Any]:
        return dict(
            self.wait_for(
                f"event {kind!r} on rank {rank}", lambda: self.first(kind, rank), timeout_s
            )
        )

    def paused(self, seq: int = 1) -> dict[str, Any] | None:
        """The marker of the ``seq``-th pause of any of the job's processes, if written."""
        markers = sorted(self.run_dir.glob(f"paused-*-{seq}.json"))
        return json.loads(markers[0].read_text()) if markers else None

    def wait_paused(self, seq: int = 1, timeout_s: float = 60.0) -> dict[str, Any]:
        return dict(self.wait_for(f"pause #{seq}", lambda: self.paused(seq), timeout_s))

    def release(self, label: str, seq: int = 1) -> None:
        release_path(self.run_dir, label, seq).touch()

    def wait_exit(self, timeout_s: float = 60.0) -> None:
        wait_until(
            "the writer to exit", lambda: not group_alive(self.pgid), timeout_s, self.diagnostics
        )
        self.gone = True

    def kill(self) -> None:
        """SIGKILL the whole job (ranks and async workers) and wait until it is gone."""
        leader = start_time(self.pgid)
        if self.gone or (leader is not None and leader != self.leader_start):
            # Gone, or the number now leads someone else's group (pids wrap): not ours.
            self.gone = True
            return
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            self.gone = True
            return
        wait_until("the killed writer to disappear", lambda: not group_alive(self.pgid), 30.0)
        self.gone = True
