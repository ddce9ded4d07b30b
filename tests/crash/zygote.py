"""A fork server for the crash tests' writers: torch and megatron-core are imported once.

A restart of the writer job would otherwise pay ~10 s of imports per rank; the crash tests
restart it after every kill. This process imports everything, then serves JSON lines on stdin:

- ``{"cmd": "launch", "world": 2, "cfg": {...}}`` forks one child per rank into a fresh
  process group (led by rank 0) and answers ``{"pgid": ..., "pids": [...]}``; killing that
  group kills the ranks and their async-save workers, nothing else.
- ``{"cmd": "quit"}`` exits.

Children reset SIGCHLD (their async worker is a subprocess they wait for), send their output
to ``<run_dir>/log-r<rank>.txt`` and leave with ``os._exit``. Run as
``python -m tests.crash.zygote``; it prints ``{"ready": true}`` once imports are done.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any


def _child(rank: int, world: int, pgid: int, cfg: dict[str, Any]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    status = 1
    try:
        os.setpgid(0, pgid if pgid else 0)
        run_dir = Path(cfg["run_dir"])
        log_fd = os.open(
            run_dir / f"log-r{rank}.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            force=True,
            format=f"%(asctime)s r{rank} %(name)s %(levelname)s %(message)s",
        )
        from tests.crash import writer

        status = writer.main(rank, world, cfg)
    except BaseException:  # noqa: BLE001 - the child must never return into the server loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _launch(world: int, cfg: dict[str, Any]) -> dict[str, Any]:
    pids: list[int] = []
    pgid = 0
    for rank in range(world):
        pid = os.fork()
        if pid == 0:
            _child(rank, world, pgid, cfg)
        # Set from both sides (the classic race): whichever runs first wins, both agree.
        try:
            os.setpgid(pid, pgid if pgid else pid)
        except OSError:
            pass  # the child already did it (or already exited)
        if rank == 0:
            pgid = pid
        pids.append(pid)
    return {"pgid": pgid, "pids": pids}


def main() -> None:
    import cairn_agent.async_save.queue  # noqa: F401
    import megatron.core.dist_checkpointing  # noqa: F401
    import torch  # noqa: F401 - preloaded for the children

    from tests.crash import writer  # noqa: F401 - imports the engine, storage and mcore

    # Children are reaped by the kernel; the tests watch the process group instead.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("cmd") == "quit":
            break
        if request.get("cmd") == "launch":
            reply = _launch(int(request["world"]), request["cfg"])
        else:
            reply = {"error": f"unknown command {request!r}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
