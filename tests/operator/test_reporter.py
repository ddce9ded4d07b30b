"""The agent's StatusReporter against the sandbox API server over HTTP (no operator running)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cairn_agent.cluster import StatusReporter
from cairn_agent.resource import contract
from cairn_operator.testing import Sandbox

from tests.operator.conftest import assert_schema_clean, checkpoint, wait_for


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(emulator_options={"request_log_limit": 4096}) as sb:
        yield sb


def _status_patches(sandbox: Sandbox, name: str) -> list[dict[str, object]]:
    return [
        r.data
        for r in sandbox.emulator.recent_requests
        if str(r.method).endswith("PATCH") and str(r.url).endswith(f"/checkpoints/{name}/status")
    ]


def test_reports_only_agent_keys_bounded_and_resumed_by_a_new_process(sandbox: Sandbox) -> None:
    sandbox.create(checkpoint("rep"))
    sandbox.patch(
        "checkpoints",
        "rep",
        {"status": {"phase": "Ready", "resumeFrom": {"iteration": 1}}},
        subresource="status",
    )  # operator-owned keys must survive the agent's patches
    agent = StatusReporter("default/rep", kubeconfig=sandbox.kubeconfig, min_interval_s=0.0)
    for it in range(1, 41):
        agent.report_save_phase(it, "Writing", is_async=True)
        agent.report_saved(it, bytes=it, files=1, manifest_digest=f"d{it}", verified=it % 2 == 0)
    agent.report_corrupt(38, "/ckpt/rep/iter_0000038/common.pt", "crc32 mismatch")
    agent.report_resume(30, "persistent", generation=2)
    agent.report_heartbeat("Idle", pid=1234)
    assert agent.flush()
    agent.close()

    status = sandbox.get("checkpoints", "rep")["status"]
    iterations = [s["iteration"] for s in status["savedIterations"]]
    assert iterations == list(range(9, 41)) and len(iterations) == contract.MAX_SAVED_ITERATIONS
    assert status["latestCommittedIteration"] == 40 and "saveInProgress" not in status
    assert status["corruptIterations"][0]["iteration"] == 38
    assert status["lastResume"]["iteration"] == 30 and status["agentGeneration"] == 2
    assert status["asyncWorker"]["pid"] == 1234
    assert status["phase"] == "Ready" and status["resumeFrom"] == {"iteration": 1}
    for patch in _status_patches(sandbox, "rep")[1:]:  # [0] is this test's operator-key patch
        assert isinstance(patch, dict)
        assert set(patch["status"]) <= contract.AGENT_STATUS_KEYS  # type: ignore[arg-type]
    assert_schema_clean(sandbox.get("checkpoints", "rep"))

    successor = StatusReporter("default/rep", api_url=sandbox.url, min_interval_s=0.0)
    successor.report_saved(41, bytes=41, files=1, verified=True)
    successor.report_deleted([9, 10])
    assert successor.flush()
    successor.close()
    status = sandbox.get("checkpoints", "rep")["status"]
    assert [s["iteration"] for s in status["savedIterations"]] == list(range(11, 42))
    assert status["corruptIterations"][0]["iteration"] == 38  # history kept across processes


def test_throttles_to_min_interval(sandbox: Sandbox) -> None:
    sandbox.create(checkpoint("throttle"))
    agent = StatusReporter("default/throttle", api_url=sandbox.url, min_interval_s=0.4)
    start = time.monotonic()
    while time.monotonic() - start < 1.0:
        agent.report_heartbeat("Idle")
        time.sleep(0.01)
    assert agent.flush()
    agent.close()
    sent = len(_status_patches(sandbox, "throttle"))
    assert 2 <= sent <= 5  # ~90 reports in 1 s, at most one patch per 0.4 s plus the flush
    assert sandbox.get("checkpoints", "throttle")["status"]["asyncWorker"]["state"] == "Idle"


def test_never_raises_into_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    agent = StatusReporter("default/x", api_url=dead, min_interval_s=0.0)
    start = time.monotonic()
    agent.report_saved(1, bytes=1, files=1)
    agent.report_heartbeat("Idle")
    agent.report_save_phase(2, "NotAPhase")
    assert time.monotonic() - start < 0.5  # reports never wait for the network
    assert agent.flush(timeout=1.0) is False
    agent.close(timeout=0.5)

    monkeypatch.delenv(contract.ENV_CHECKPOINT, raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert StatusReporter().enabled is False
    bad = tmp_path / "kubeconfig"
    bad.write_text("current-context: none\n")
    disabled = StatusReporter("default/x", kubeconfig=bad)
    assert disabled.enabled is False
    disabled.report_saved(1)
    assert disabled.flush()


def test_reference_from_the_environment(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.create(checkpoint("fromenv"))
    monkeypatch.setenv(contract.ENV_CHECKPOINT, "default/fromenv")
    monkeypatch.setenv("KUBECONFIG", str(sandbox.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    agent = StatusReporter(min_interval_s=0.0)
    agent.report_resume(0, "none", generation=0)
    assert agent.flush()
    agent.close()
    wait_for(
        lambda: sandbox.get("checkpoints", "fromenv")["status"]["lastResume"]["source"] == "none"
    )
