"""The sandbox runs batch/v1 Jobs as local processes and moves their status like the controller."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cairn_operator.testing import JobSettings, Sandbox, SandboxApiError

T = TypeVar("T")
VENV_SCRIPTS = Path(sys.executable).parent


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    local = tmp_path / "pvc"
    local.mkdir()
    return local


@pytest.fixture
def sandbox(volume: Path) -> Iterator[Sandbox]:
    settings = JobSettings(claims={"data": volume}, retry_delay_s=0.05, grace_s=1.0)
    with Sandbox(jobs=settings) as running:
        yield running


def job(
    name: str,
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    claim: str = "data",
    **spec: Any,
) -> dict[str, Any]:
    """A Job whose only container runs ``command`` with PVC ``claim`` mounted at /data."""
    container: dict[str, Any] = {
        "name": "main",
        "image": "ignored:latest",
        "command": command,
        "volumeMounts": [{"name": "vol", "mountPath": "/data"}],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [{"name": "vol", "persistentVolumeClaim": {"claimName": claim}}],
                }
            },
            **spec,
        },
    }


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished(sandbox: Sandbox, name: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = sandbox.get("jobs", name)
        conditions = (found.get("status") or {}).get("conditions") or ()
        return found if any(c["type"] in ("Complete", "Failed") for c in conditions) else None

    return wait_for(probe, f"Job {name} to finish")


def conditions(found: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["type"], c["status"], c["reason"]) for c in found["status"]["conditions"]]


def pid_in(path: Path) -> int:
    """The pid a Job wrote to ``path`` (waits for it)."""

    def probe() -> int | None:
        text = path.read_text().strip() if path.exists() else ""
        return int(text) if text.isdigit() else None

    return wait_for(probe, f"a pid in {path.name}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # an orphan killed but not yet reaped by init is gone too


def test_job_runs_on_the_mapped_claim_with_the_venvs_cairn_and_completes(
    sandbox: Sandbox, volume: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PATH without the venv: the sandbox must still put its own scripts first.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    script = 'command -v cairn > "$OUT" && cairn gc --help > /dev/null && echo ran'
    sandbox.create(job("ok", ["sh", "-c", script], env={"OUT": "/data/which.txt"}))
    done = finished(sandbox, "ok")
    assert (volume / "which.txt").read_text().strip() == str(VENV_SCRIPTS / "cairn")
    status = done["status"]
    assert conditions(done) == [
        ("SuccessCriteriaMet", "True", "CompletionsReached"),
        ("Complete", "True", "CompletionsReached"),
    ]
    assert status["succeeded"] == 1 and "failed" not in status and "active" not in status
    assert status["startTime"] <= status["completionTime"]
    assert sandbox.job_output("ok") == "ran\n"


def test_failing_job_is_retried_up_to_its_backoff_limit_then_failed(sandbox: Sandbox) -> None:
    sandbox.create(job("boom", ["sh", "-c", "echo boom >&2; exit 3"], backoffLimit=1))
    done = finished(sandbox, "boom")
    assert conditions(done) == [
        ("FailureTarget", "True", "BackoffLimitExceeded"),
        ("Failed", "True", "BackoffLimitExceeded"),
    ]
    assert done["status"]["failed"] == 2 and "succeeded" not in done["status"]
    assert sandbox.job_output("boom") == "boom\nboom\n"


def test_job_on_an_unmapped_claim_fails_saying_which(sandbox: Sandbox) -> None:
    sandbox.create(job("nowhere", ["true"], claim="other-pvc"))
    failed = next(c for c in finished(sandbox, "nowhere")["status"]["conditions"])
    assert failed["type"] == "FailureTarget" and "'other-pvc'" in failed["message"]


def test_deadline_kills_the_job_and_its_children(sandbox: Sandbox, volume: Path) -> None:
    script = 'sleep 300 & echo $! > "$PIDS"; wait'
    sandbox.create(
        job("slow", ["sh", "-c", script], env={"PIDS": "/data/slow.pid"}, activeDeadlineSeconds=2)
    )
    pid = pid_in(volume / "slow.pid")
    assert conditions(finished(sandbox, "slow"))[-1] == ("Failed", "True", "DeadlineExceeded")
    wait_for(lambda: not alive(pid), "the orphaned child to be killed", timeout=10)


def test_deleting_a_running_job_or_stopping_the_sandbox_kills_it(volume: Path) -> None:
    settings = JobSettings(claims={"data": volume}, grace_s=1.0)
    script = 'sleep 300 & echo $! > "$PIDS"; wait'
    with Sandbox(jobs=settings) as running:
        for name in ("deleted", "left"):
            running.create(job(name, ["sh", "-c", script], env={"PIDS": f"/data/{name}.pid"}))
        pids = {name: pid_in(volume / f"{name}.pid") for name in ("deleted", "left")}
        assert running.get("jobs", "deleted")["status"]["active"] == 1
        running.delete("jobs", "deleted")
        wait_for(lambda: not alive(pids["deleted"]), "the deleted Job's process to end")
        with pytest.raises(SandboxApiError):
            running.get("jobs", "deleted")
        assert alive(pids["left"])
    wait_for(lambda: not alive(pids["left"]), "the sandbox's stop to end its Job", timeout=10)
