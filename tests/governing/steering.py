"""The test's side of a governed run: start the ranks in the background, pause and resume them.

``GovernedRun`` starts ``tests.governing._loop.governed_loop`` on 2 gloo ranks in a thread and
talks to them through the files of ``Plan.gates`` (the protocol is in ``_loop``'s docstring).
Every wait has a deadline and fails fast, with the ranks' tracebacks, when the ranks died.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cairn_operator.testing import Sandbox

from tests.distributed import run_ranks
from tests.governing._loop import Plan, StepRecord, governed_loop

WORLD = 2
_WAIT_S = 90.0


def pod_env(sandbox: Sandbox, name: str, namespace: str = "default") -> dict[str, str]:
    """What the pod of a job that names Checkpoint ``name`` has in its environment."""
    return {
        "CAIRN_CHECKPOINT": f"{namespace}/{name}",
        "KUBECONFIG": str(sandbox.kubeconfig),
        "CAIRN_STATUS_MIN_INTERVAL_S": "0.2",
        # Agree at every step boundary (not every K, as measured costs would choose on these
        # tiny steps), so a test can name the step an edit applies at: the one after it is seen.
        "CAIRN_AGREE_EVERY_STEPS": "1",
    }


def kubectl(sandbox: Sandbox, *args: str) -> str:
    """Run the real ``kubectl`` against the sandbox; its stdout (raises on failure)."""
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(sandbox.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
    return done.stdout


class GovernedRun:
    """A 2-rank governed run in the background; a context manager that never leaves ranks hung."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.gates = Path(plan.gates)
        self.gates.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._future: Future[list[list[StepRecord]]] | None = None
        self._asked = 0

    def __enter__(self) -> Self:
        self._future = self._pool.submit(run_ranks, governed_loop, WORLD, self.plan)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            (self.gates / "abort").touch()
            (self.gates / "stop").touch()
        self._pool.shutdown(wait=True)

    # --- steering ------------------------------------------------------------------------------

    def pause(self) -> list[dict[str, Any]]:
        """Ask for the next pause; wait until every rank is in it; what each rank noted."""
        (self.gates / f"pause.{self._asked}").touch()
        return self.wait_paused()

    def wait_paused(self) -> list[dict[str, Any]]:
        """Wait until every rank is in the next pause (asked, or a ``Plan.pause_at`` step)."""
        index = self._asked
        notes = [self.gates / f"paused.{index}.{rank}" for rank in range(WORLD)]
        self._wait(lambda: all(n.exists() for n in notes), f"every rank in pause {index}")
        return [json.loads(n.read_text()) for n in notes]

    def resume(self, *, see_generation: int | None = None) -> None:
        """Let the current pause go; with ``see_generation``, the first boundary after it
        applies that spec generation (rank 0 waits until its watch saw it)."""
        note = {} if see_generation is None else {"see_generation": see_generation}
        release = self.gates / f"resume.{self._asked}"
        tmp = self.gates / f"{release.name}.tmp"
        tmp.write_text(json.dumps(note))
        tmp.rename(release)
        self._asked += 1

    def stop(self) -> list[list[StepRecord]]:
        """End the loop at the next step; the records of every rank."""
        (self.gates / "stop").touch()
        return self.records()

    def records(self) -> list[list[StepRecord]]:
        assert self._future is not None, "use GovernedRun as a context manager"
        return self._future.result(timeout=240)

    def wait_for(self, probe: Any, what: str, timeout: float = _WAIT_S) -> Any:
        """Poll ``probe`` until it returns something truthy, failing early if the ranks died."""
        return self._wait(probe, what, timeout)

    def _wait(self, probe: Any, what: str, timeout: float = _WAIT_S) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = probe()
            except Exception:  # noqa: BLE001 - e.g. the object is briefly unreachable
                found = None
            if found:
                return found
            errors = sorted(self.gates.glob("error.*"))
            if errors:
                (self.gates / "abort").touch()  # the other ranks must not wait in a pause
                text = "\n".join(f"--- {e.name} ---\n{e.read_text()}" for e in errors)
                raise AssertionError(f"a rank failed before {what}:\n{text}")
            if self._future is not None and self._future.done():
                self._future.result()  # raises the ranks' tracebacks
                raise AssertionError(f"the ranks ended before {what}")
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self._stacks()}")

    def _stacks(self) -> str:
        """Where every rank is now (each dumps its threads on SIGUSR1)."""
        gone = []
        for rank in range(WORLD):
            try:
                os.kill(int((self.gates / f"pid.{rank}").read_text()), signal.SIGUSR1)
            except (OSError, ValueError) as exc:
                gone.append(f"--- rank {rank}: not signalled: {exc!r}")
        time.sleep(1.0)  # the dump is written by the rank's signal handler, asynchronously
        dumps = [
            f"--- rank {rank} ---\n{(self.gates / f'stacks.{rank}').read_text(errors='replace')}"
            for rank in range(WORLD)
            if (self.gates / f"stacks.{rank}").exists()
        ]
        return "\n".join(gone + dumps)


def applied_generation(sandbox: Sandbox, name: str) -> int | None:
    status = sandbox.get("checkpoints", name).get("status") or {}
    value = (status.get("appliedPolicy") or {}).get("observedGeneration")
    return value if isinstance(value, int) else None


def same_on_every_rank(records: list[list[StepRecord]], *fields: str) -> list[tuple[Any, ...]]:
    """``fields`` of every step, asserted equal on every rank; rank 0's values."""
    views = [[tuple(getattr(r, f) for f in ("step", *fields)) for r in rank] for rank in records]
    for rank, view in enumerate(views[1:], start=1):
        assert view == views[0], f"rank {rank} disagrees with rank 0 on {fields}"
    return views[0]
