"""Where the agent's reporter finds the API: kubeconfig contexts and merged ``$KUBECONFIG`` files,
read by the official client (authentication forms and in-cluster: tests/cluster/test_auth.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from cairn_agent.cluster import StatusReporter, load_configuration
from cairn_agent.resource import contract
from cairn_operator.testing import Sandbox

from tests.operator.conftest import checkpoint, wait_for


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_merged_kubeconfig_files_and_their_current_context(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.create(checkpoint("ctx"))
    # As kubectl merges $KUBECONFIG: the first file names the current context; the clusters,
    # users and contexts come from both. Context "a" points nowhere; "b" at the sandbox.
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text(yaml.safe_dump({"current-context": "b", "contexts": [], "clusters": []}))
    clusters = [
        {"name": "one", "cluster": {"server": _dead_url()}},
        {"name": "two", "cluster": {"server": sandbox.url}},
    ]
    contexts = [
        {"name": "a", "context": {"cluster": "one", "user": "u"}},
        {"name": "b", "context": {"cluster": "two", "user": "u"}},
    ]
    users = [{"name": "u", "user": {"token": "t"}}]
    second.write_text(yaml.safe_dump({"clusters": clusters, "contexts": contexts, "users": users}))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    monkeypatch.setenv(contract.ENV_CHECKPOINT, "default/ctx")

    configuration = load_configuration()
    assert configuration is not None and configuration.host == sandbox.url
    reporter = StatusReporter(min_interval_s=0.0)
    reporter.report_resume(4, "persistent", generation=4)
    assert reporter.flush()
    reporter.close()
    wait_for(lambda: sandbox.get("checkpoints", "ctx")["status"]["agentGeneration"] == 4)
    request = [r for r in list(sandbox.emulator._requests) if str(r.url).endswith("/ctx/status")]
    assert request and request[-1].headers.get("Authorization") == "Bearer t"


def test_an_explicit_url_wins_and_nothing_configured_means_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    explicit = load_configuration(api_url="http://127.0.0.1:1/")
    assert explicit is not None and explicit.host == "http://127.0.0.1:1"
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config either
    assert load_configuration() is None
    assert StatusReporter("default/x").enabled is False
