"""The cluster side of ``cairn demo``: a local API server, the operator, kubectl, a training job.

``DemoCluster`` starts the Kubernetes API sandbox (Checkpoint CRD installed) and the Cairn
operator in this process, and runs ``kubectl``/``kubectl cairn`` and the demo's training job
(``cairn_agent.cli.demo_train``) as real subprocesses against it. Waiting is always a poll with
a deadline that fails with what was expected and what was last seen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO, TypeVar

from cairn_agent.cli.demo_train import LOADED_SUFFIX, RANK0_PREFIX
from cairn_agent.resource import contract

NAMESPACE = "default"
DEADLINE_S = 120.0
"""How long the demo waits for the operator or the training job before it fails."""
TRAIN_TIMEOUT_S = 600.0
T = TypeVar("T")


def checkpoint_manifest(name: str, root: Path, *, keep_last: int) -> dict[str, Any]:
    """A Checkpoint whose persistent storage is the demo's local checkpoint root."""
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "storage": {
                "persistent": {"claimName": "demo-pvc", "mountPath": str(root), "path": str(root)}
            },
            "retention": {"keepLast": keep_last},
            "asyncWorker": {"enabled": False},
        },
    }


def wait_for(what: str, probe: Callable[[], T | None], deadline_s: float = DEADLINE_S) -> T:
    """Poll ``probe`` until it returns a value; RuntimeError naming ``what`` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"the demo waited {deadline_s:.0f}s for {what} in vain")
        time.sleep(0.2)


class DemoCluster:
    """The sandbox API server and the operator, both running until the context exits."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._stack = contextlib.ExitStack()
        self._sandbox: Any = None
        self.scratch = Path()
        """A temporary directory for logs, gone when the cluster stops."""

    def __enter__(self) -> Self:
        # Imported here: the operator side is only needed once the demo reaches the cluster.
        from cairn_operator.run import run_in_thread
        from cairn_operator.settings import OperatorSettings
        from cairn_operator.testing import Sandbox

        # kopf warns that it ignores OS signals off the main thread: expected here, and noise.
        logging.getLogger("kopf").setLevel(logging.ERROR)
        try:
            scratch = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="cairn-demo-"))
            self.scratch = Path(scratch)
            self._sandbox = self._stack.enter_context(Sandbox(namespaces=(NAMESPACE,)))
            settings = OperatorSettings(health_interval_s=5.0)
            self._stack.enter_context(run_in_thread(self._sandbox.url, settings=settings))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def on_exit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the cluster stops (before the API server goes)."""
        self._stack.callback(callback)

    @property
    def url(self) -> str:
        """The API server's URL."""
        return str(self._sandbox.url)

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig for the API server."""
        return Path(self._sandbox.kubeconfig)

    def create(self, obj: dict[str, Any]) -> None:
        self._sandbox.create(obj)

    def checkpoint(self, name: str) -> dict[str, Any]:
        """The Checkpoint ``name`` as the API server has it now."""
        found: dict[str, Any] = self._sandbox.get(contract.PLURAL, name, NAMESPACE)
        return found

    def status(self, name: str) -> Mapping[str, Any]:
        status = self.checkpoint(name).get("status")
        return status if isinstance(status, Mapping) else {}

    def events(self, reason: str) -> list[dict[str, Any]]:
        """Events with ``reason`` in the demo's namespace."""
        events: list[dict[str, Any]] = self._sandbox.list("events", NAMESPACE)
        return [e for e in events if e.get("reason") == reason]

    # --- subprocesses -------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a subprocess: this kubeconfig, the venv's scripts on PATH."""
        scripts = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if k != contract.ENV_CHECKPOINT}
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            PATH=os.pathsep.join([scripts, env.get("PATH", "")]),
            # Megatron-core warns about every optional library it misses; keep the demo readable.
            PYTHONWARNINGS="ignore",
            **extra,
        )
        return env

    def kubectl(self, *argv: str) -> str:
        """Run ``kubectl ARGV`` against the sandbox, print the command and what it printed."""
        command = ["kubectl", *argv]
        print(f"$ {' '.join(command)}", file=self.out)
        done = subprocess.run(
            command, capture_output=True, text=True, env=self.env(), timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()}"
            )
        print(_indent(done.stdout), file=self.out, flush=True)
        return done.stdout


@dataclass(kw_only=True)
class TrainingJob:
    """A running training job (launcher and ranks) and its output so far."""

    proc: subprocess.Popen[bytes]
    """The launcher; its ranks share its process group."""
    log: Path
    """Where the job's stdout and stderr go."""
    shown: int = 0
    """How many of rank 0's lines were printed already."""

    def rank0_lines(self) -> list[str]:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if line.startswith(RANK0_PREFIX)]

    def show_new_lines(self, out: TextIO) -> list[str]:
        """Print rank 0's lines not printed yet; return all of them."""
        lines = self.rank0_lines()
        if lines[self.shown :]:
            print(_indent("\n".join(lines[self.shown :])), file=out, flush=True)
        self.shown = len(lines)
        return lines

    def stop(self) -> None:
        """Kill the job with its ranks if it is still running."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start_training(
    cluster: DemoCluster,
    argv: Sequence[str],
    *,
    generation: int,
    checkpoint: str,
    **env_extra: str,
) -> TrainingJob:
    """Start the demo's training job (all ranks) reporting to ``checkpoint``."""
    env = cluster.env(
        **{
            contract.ENV_CHECKPOINT: f"{NAMESPACE}/{checkpoint}",
            contract.ENV_GENERATION: str(generation),
        },
        **env_extra,
    )
    command = [sys.executable, "-m", "cairn_agent.cli.demo_train", *argv]
    print(
        f"$ CAIRN_CHECKPOINT={NAMESPACE}/{checkpoint} CAIRN_GENERATION={generation} "
        f"python -m cairn_agent.cli.demo_train {' '.join(argv)}",
        file=cluster.out,
        flush=True,
    )
    log = cluster.scratch / f"train-generation-{generation}.log"
    with open(log, "wb") as sink:
        # Its own process group, so that stopping it also stops the ranks it spawned.
        proc = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    job = TrainingJob(proc=proc, log=log)
    cluster.on_exit(job.stop)
    return job


def finish_training(cluster: DemoCluster, job: TrainingJob) -> list[str]:
    """Wait for the job; print rank 0's new lines; raise with its whole output if it failed."""
    try:
        job.proc.wait(timeout=TRAIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        job.stop()
        raise RuntimeError(
            f"training did not finish within {TRAIN_TIMEOUT_S:.0f}s:\n{job.log.read_text()}"
        ) from None
    lines = job.show_new_lines(cluster.out)
    if job.proc.returncode != 0:
        raise RuntimeError(f"training exited {job.proc.returncode}:\n{job.log.read_text()}")
    return lines


def wait_until_resumed(hold: Path, job: TrainingJob) -> None:
    """Wait until a job started with ``--hold`` has resumed (and reported it)."""
    loaded = Path(f"{hold}{LOADED_SUFFIX}")

    def probe() -> bool | None:
        if job.proc.poll() is not None:
            raise RuntimeError(
                f"training exited {job.proc.returncode} before it resumed:\n{job.log.read_text()}"
            )
        return True if loaded.exists() else None

    wait_for("the restarted training job to resume", probe, TRAIN_TIMEOUT_S)
    loaded.unlink()


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip("\n").splitlines())
