"""The persistent writer process of one rank, and the handle the training process holds.

One spawned process per rank, started once and fed through a pipe: it maps the staging arena
once per layout, then runs every save's writes (``writer.write_rank_files``) at a lower CPU
and I/O priority, on spare cores where there are any (``settings.WriterSettings``), so
training keeps its cores. It reports ``Ready`` once its imports are done: a worker started at
the first load is ready long before the first save. It never joins a process group: all collectives
(planning, agreement, commit) stay in the training process, so a dead worker can never hang
another rank's collective; the training process notices it (pipe EOF or process gone) and
reports the save as failed at finalize.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any

from cairn_agent.async_save.settings import WriterSettings, apply_to_self
from cairn_agent.async_save.slots import TensorSlot
from cairn_agent.async_save.writer import RankWriteOutcome, WriteJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attach:
    """Map the arena whose descriptor follows on the pipe (layout ``slots``) as ``arena_id``."""

    arena_id: int
    slots: list[TensorSlot]


@dataclass(frozen=True)
class Attached:
    """The worker mapped arena ``arena_id``."""

    arena_id: int
    pid: int
    data_ptr: int


@dataclass(frozen=True)
class Ready:
    """The worker imported everything a write needs and waits for work."""

    pid: int


@dataclass(frozen=True)
class Done:
    job_id: int
    outcome: RankWriteOutcome


@dataclass(frozen=True)
class Failed:
    job_id: int
    error: str


class _Stop:
    """Ask the worker to exit after the current message."""


class WorkerDiedError(RuntimeError):
    """The worker process is gone (killed, crashed) or its pipe closed."""


def main(argv: list[str] | None = None) -> None:
    """Worker entry point: ``main([<socket fd>, <nice>, <io priority>, <cores or "">])``."""
    fd, nice, io_priority, cores = argv if argv is not None else sys.argv[1:]
    apply_to_self(int(nice), io_priority, tuple(int(c) for c in cores.split(",") if c))
    _serve(Connection(int(fd)))


def _serve(conn: Connection) -> None:
    import torch

    torch.set_num_threads(1)
    from cairn_agent.async_save.arena import attach
    from cairn_agent.async_save.writer import write_rank_files

    conn.send(Ready(os.getpid()))

    buffers: dict[int, Any] = {}
    views: dict[int, dict[Any, torch.Tensor]] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the training process is gone: nothing left to write for
        if isinstance(msg, _Stop):
            return
        if isinstance(msg, Attach):
            # One arena at a time: the previous layout's mapping is dropped with it.
            buffers.clear()
            views.clear()
            fd = recv_handle(conn)
            buffers[msg.arena_id], views[msg.arena_id] = attach(fd, msg.slots)
            base = torch.frombuffer(buffers[msg.arena_id], dtype=torch.uint8).data_ptr()
            conn.send(Attached(msg.arena_id, os.getpid(), base))
            continue
        job: WriteJob = msg
        try:
            conn.send(Done(job.job_id, write_rank_files(job, views[job.arena_id])))
        except Exception:  # noqa: BLE001 - reported to the training process, which raises
            conn.send(Failed(job.job_id, traceback.format_exc(limit=8)))


class WorkerHandle:
    """The training process's end of one worker process."""

    def __init__(self, settings: WriterSettings | None = None) -> None:
        # A fresh interpreter rather than multiprocessing's spawn: spawn re-imports the
        # training script as ``__mp_main__``, which costs its imports and, in an unguarded
        # script, would run training again inside the writer.
        settings = settings or WriterSettings()
        mine, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        args = [str(theirs.fileno()), str(settings.nice), settings.io_priority, _cores(settings)]
        self._process = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, *args], pass_fds=(theirs.fileno(),), env=env
        )
        # Only the child keeps its end: recv() here then fails fast if the child dies.
        theirs.close()
        self._conn = Connection(mine.detach())
        self.ready = False
        """True once the worker reported ``Ready`` (its imports are done)."""
        log.info("async save worker started (pid %s)", self._process.pid)

    @property
    def pid(self) -> int:
        return self._process.pid

    def is_alive(self) -> bool:
        return self._process.poll() is None

    def send(self, msg: Any) -> None:
        try:
            self._conn.send(msg)
        except (OSError, ValueError) as exc:
            raise WorkerDiedError(self._death_note()) from exc

    def send_arena(self, msg: Attach, fd: int) -> None:
        """Send ``msg`` and the arena's descriptor (passed over the Unix socket)."""
        self.send(msg)
        try:
            send_handle(self._conn, fd, self.pid)
        except OSError as exc:
            raise WorkerDiedError(self._death_note()) from exc

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the worker reported ``Ready``; False if it did not within ``timeout``."""
        if not self.ready:
            reply = self.receive(timeout, until_ready=True)
            if reply is not None:
                raise WorkerDiedError(f"worker {self.pid} replied {reply!r} before Ready")
        return self.ready

    def receive(self, timeout: float | None, *, until_ready: bool = False) -> Any | None:
        """Next reply, None if none arrived within ``timeout`` (None: wait for one).

        ``Ready`` is consumed here (it sets ``ready``), never returned; with ``until_ready``
        the call returns (None) as soon as it is, leaving later replies to the next call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            try:
                if self._conn.poll(wait):
                    reply = self._conn.recv()
                    if not isinstance(reply, Ready):
                        return reply
                    self.ready = True
                    if until_ready:
                        return None
                    continue
            except (EOFError, OSError) as exc:
                raise WorkerDiedError(self._death_note()) from exc
            if not self.is_alive():
                raise WorkerDiedError(self._death_note())
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _death_note(self) -> str:
        try:
            code: int | None = self._process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            code = None
        return f"async save worker (pid {self.pid}) died with exit code {code}"

    def kill(self) -> None:
        """SIGKILL the worker (a stalled or frozen one cannot be asked) and reap it."""
        if self.is_alive():
            self._process.kill()
            self._process.wait()
        self._conn.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to exit; kill it if it does not within ``timeout``."""
        if self.is_alive():
            try:
                self._conn.send(_Stop())
            except (OSError, ValueError):
                pass
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("async save worker %s did not stop; killing it", self.pid)
                self._process.kill()
                self._process.wait(timeout)
        self._conn.close()


def _cores(settings: WriterSettings) -> str:
    """The writer's cores as the command line passes them ("" to inherit)."""
    import torch

    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = settings.worker_cores(torch.get_num_threads(), local_ranks)
    return ",".join(str(c) for c in cores or ())


_ENTRY = "import sys; from cairn_agent.async_save.worker import main; main(sys.argv[1:])"
