"""The sandbox's Job controller: batch/v1 Jobs run as local processes, status as on a cluster.

Without it, a Job the operator creates (a retention or clean-up ``cairn gc``) stays active
forever, and ``kubectl delete`` of a ``deletionPolicy: Delete`` Checkpoint hangs on its
finalizer. With it, each new Job's pod template runs as a local command (see ``pods``), and the
Job's status moves the way the real Job controller moves it: ``startTime`` and ``active`` at
start, ``failed`` counting failed pods (retried up to ``backoffLimit``), then ``succeeded`` with
the ``SuccessCriteriaMet`` and ``Complete`` conditions, or the ``FailureTarget`` and ``Failed``
conditions (``BackoffLimitExceeded``, ``DeadlineExceeded``).

Bounded: at most ``max_parallel`` Jobs run at once; each runs at most ``timeout_s`` (or its
``activeDeadlineSeconds``, if shorter); each pod runs in its own process group, killed as a
whole when the pod ends, when its Job is deleted, or when the sandbox stops; only the tail of
each Job's output is kept. One pod per Job (``completions``/``parallelism`` above 1 are not
honoured), suspended Jobs are not started, and ``ttlSecondsAfterFinished`` is not applied.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn_operator.testing.emulator import CairnEmulator
from cairn_operator.testing.pods import LocalCommand, PodSpecError, local_command
from cairn_operator.testing.registry import Served
from cairn_operator.testing.store import Event
from cairn_operator.testing.writes import now_rfc3339

logger = logging.getLogger(__name__)

JOBS = ("batch", "v1", "jobs")
_DEFAULT_BACKOFF_LIMIT = 6  # the API server's default for spec.backoffLimit
_KEPT_OUTPUTS = 64
_LOGGED_LINES = 20


@dataclass(frozen=True, kw_only=True)
class JobSettings:
    """How the sandbox runs Jobs."""

    claims: Mapping[str, Path] = field(default_factory=dict)
    """PersistentVolumeClaim name -> the local directory that stands in for its volume. A Job
    that mounts a claim not listed fails at once (on a cluster its pod would stay Pending)."""
    timeout_s: float = 600.0
    """The longest a Job runs, all retries included, unless ``activeDeadlineSeconds`` is
    shorter; then it fails with ``DeadlineExceeded``."""
    max_parallel: int = 4
    """Jobs running at once; later ones wait, active, for a slot."""
    retry_delay_s: float = 1.0
    """Pause before a failed pod is retried (the real controller backs off from 10 s)."""
    grace_s: float = 5.0
    """Between SIGTERM and SIGKILL when a pod is stopped early."""
    output_limit_bytes: int = 64 * 1024
    """How much of each Job's output (stdout and stderr, the tail) is kept."""

    def __post_init__(self) -> None:
        for name in ("timeout_s", "grace_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"JobSettings.{name} must be > 0, got {getattr(self, name)}")
        if self.retry_delay_s < 0:
            raise ValueError(f"JobSettings.retry_delay_s must be >= 0, got {self.retry_delay_s}")
        if self.max_parallel < 1 or self.output_limit_bytes < 1:
            raise ValueError("JobSettings.max_parallel and output_limit_bytes must be >= 1")
        for claim, directory in self.claims.items():
            if not Path(directory).is_absolute():
                raise ValueError(
                    f"JobSettings.claims[{claim!r}] = {directory!s} must be an absolute path"
                )


@dataclass(frozen=True, kw_only=True)
class _Outcome:
    succeeded: bool
    failed: int
    reason: str = ""
    message: str = ""


class JobRunner:
    """Runs the Jobs created in one emulator; lives on the emulator's event loop."""

    def __init__(self, emulator: CairnEmulator, settings: JobSettings) -> None:
        self._emulator = emulator
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.max_parallel)
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._outputs: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()
        self._scratch = tempfile.TemporaryDirectory(prefix="cairn-sandbox-jobs-")
        emulator.observe(self._on_events)

    def output(self, namespace: str, name: str) -> str | None:
        """The tail of a finished Job's output (None if it did not run or is forgotten)."""
        kept = self._outputs.get((namespace, name))
        return None if kept is None else kept.decode("utf-8", "replace")

    async def close(self) -> None:
        """Stop every running Job (their processes are killed) and wait for them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._scratch.cleanup()

    # --- watching -------------------------------------------------------------------------------

    def _on_events(self, served: Served, events: list[Event]) -> None:
        if (served.group, served.version, served.plural) != JOBS:
            return
        for event in events:
            job = event["object"]
            key = (job["metadata"].get("namespace", ""), job["metadata"]["name"])
            if event["type"] == "DELETED":
                task = self._tasks.pop(key, None)
                if task is not None:
                    task.cancel()  # as the real garbage collector deletes its pods
            elif event["type"] == "ADDED" and not (job.get("spec") or {}).get("suspend"):
                self._tasks[key] = asyncio.create_task(self._run(key, job), name=f"job {key}")

    # --- one Job --------------------------------------------------------------------------------

    async def _run(self, key: tuple[str, str], job: dict[str, Any]) -> None:
        try:
            await self._status(key, {"startTime": now_rfc3339(), "active": 1})
            async with self._slots:
                outcome = await self._attempts(key, job)
            await self._status(key, _final_status(outcome))
            if outcome.succeeded:
                logger.info("sandbox Job %s/%s succeeded", *key)
            else:
                tail = "\n".join((self.output(*key) or "").splitlines()[-_LOGGED_LINES:])
                logger.warning("sandbox Job %s/%s: %s; output:\n%s", *key, outcome.message, tail)
        except Exception:  # a controller bug must not end the sandbox's loop: log it
            logger.exception("sandbox Job %s/%s: the Job controller failed", *key)
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]

    async def _attempts(self, key: tuple[str, str], job: dict[str, Any]) -> _Outcome:
        spec = job.get("spec") or {}
        scratch = Path(self._scratch.name) / job["metadata"].get("uid", "-".join(key))
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            command = local_command(
                (spec.get("template") or {}).get("spec") or {},
                claims=self._settings.claims,
                scratch=scratch,
            )
        except PodSpecError as exc:
            return _Outcome(succeeded=False, failed=1, reason="PodFailed", message=str(exc))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(
            self._settings.timeout_s, float(spec.get("activeDeadlineSeconds") or math.inf)
        )
        backoff_limit = int(spec.get("backoffLimit", _DEFAULT_BACKOFF_LIMIT))
        failed = 0
        while True:
            code = await self._pod(key, command, deadline)
            if code == 0:
                return _Outcome(succeeded=True, failed=failed)
            failed += 1
            if code is not None and failed > backoff_limit:
                return _Outcome(
                    succeeded=False,
                    failed=failed,
                    reason="BackoffLimitExceeded",
                    message="Job has reached the specified backoff limit",
                )
            if code is None or loop.time() + self._settings.retry_delay_s >= deadline:
                return _Outcome(
                    succeeded=False,
                    failed=failed,
                    reason="DeadlineExceeded",
                    message="Job was active longer than specified deadline",
                )
            await self._status(key, {"failed": failed})
            await asyncio.sleep(self._settings.retry_delay_s)

    async def _pod(
        self, key: tuple[str, str], command: LocalCommand, deadline: float
    ) -> int | None:
        """Run one pod; its exit status, or None when it ran past ``deadline`` (then killed)."""
        remaining = deadline - asyncio.get_running_loop().time()
        proc = await asyncio.create_subprocess_exec(
            *command.argv,
            env=command.env,
            cwd=command.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as a whole, children too
        )
        reader = asyncio.create_task(self._collect(key, proc))
        try:
            await asyncio.wait_for(proc.wait(), max(remaining, 0.0))
            return proc.returncode
        except TimeoutError:
            return None
        finally:
            await self._stop(proc)
            # A process that left the group may hold the pipe open: stop reading after a while.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, self._settings.grace_s)

    async def _collect(self, key: tuple[str, str], proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        tail = bytearray(self._outputs.pop(key, b""))
        limit = self._settings.output_limit_bytes
        while chunk := await proc.stdout.read(4096):
            tail += chunk
            del tail[:-limit]
        self._outputs[key] = bytes(tail)
        while len(self._outputs) > _KEPT_OUTPUTS:
            self._outputs.popitem(last=False)

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """End the pod's whole process group: SIGTERM, then SIGKILL after the grace period.
        Also after a normal exit, as a kubelet leaves no process of an ended container."""
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), self._settings.grace_s)
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def _status(self, key: tuple[str, str], status: dict[str, Any]) -> None:
        await self._emulator.patch_status(JOBS, key[0], key[1], status)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _final_status(outcome: _Outcome) -> dict[str, Any]:
    now = now_rfc3339()
    if outcome.succeeded:
        kinds = ("SuccessCriteriaMet", "Complete")
        reason, message = "CompletionsReached", "Reached expected number of succeeded pods"
    else:
        kinds = ("FailureTarget", "Failed")
        reason, message = outcome.reason, outcome.message
    status: dict[str, Any] = {
        "active": None,
        "conditions": [
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }
            for kind in kinds
        ],
        "failed": outcome.failed or None,
    }
    if outcome.succeeded:
        status.update(succeeded=1, completionTime=now)
    return status
