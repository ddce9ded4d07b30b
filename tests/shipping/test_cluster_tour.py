"""The README's tour, section 3: ``cairn cluster``, ``kubectl apply``, ``cairn operator --server``.

Both commands run as real processes, as a user starts them in two shells; they are stopped with
Ctrl-C (SIGINT) and must exit cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 120.0


def _wait_for(what: str, check: Callable[[], str | None]) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    kubeconfig = tmp_path / "kubeconfig"
    log = tmp_path / "cluster.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["cairn", "cluster", "--kubeconfig", str(kubeconfig)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:

        def url() -> str | None:
            found = re.search(r"at (http://\S+)", log.read_text())
            return found.group(1) if found and kubeconfig.exists() else None

        yield _wait_for("the sandbox to serve", url), kubeconfig
        assert f"export KUBECONFIG={kubeconfig}" in log.read_text()
    finally:
        assert _stop(proc) == 0, log.read_text()


def _kubectl(kubeconfig: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        ["kubectl", *argv], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_operator_command_reconciles_a_checkpoint_in_the_sandbox(
    cluster: tuple[str, Path], tmp_path: Path
) -> None:
    url, kubeconfig = cluster
    applied = _kubectl(
        kubeconfig, "apply", "-f", str(REPO / "examples" / "checkpoints" / "minimal.yaml")
    )
    assert applied.returncode == 0, applied.stderr
    operator_log = tmp_path / "operator.out"
    with open(operator_log, "w") as out:
        operator = subprocess.Popen(
            ["cairn", "operator", "--server", url, "--metrics-port", "0", "--quiet"],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:

        def phase() -> str | None:
            done = _kubectl(kubeconfig, "get", "ckpt", "minimal", "-o", "jsonpath={.status.phase}")
            return done.stdout.strip() or None

        assert _wait_for("the operator to set a phase", phase)
        listed = _kubectl(kubeconfig, "cairn", "list")
        assert listed.returncode == 0 and listed.stdout.split("\n")[1].split()[0] == "minimal"
    finally:
        _stop(operator)
    assert "Traceback" not in operator_log.read_text(), operator_log.read_text()
