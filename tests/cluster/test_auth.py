"""The agent authenticates through the official client: client certificates, exec credential
plugins and a rotating in-cluster service-account token, each against an HTTPS server that checks.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cairn_agent.cluster import StatusReporter, new_api_client
from cairn_agent.cluster.config import in_cluster_configuration
from kubernetes.client import ApiClient

from tests.cluster.servers import CheckpointServer, Pki, make_pki
from tests.operator.conftest import wait_for

REF = "default/tls"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _kubeconfig(path: Path, server: str, ca: Path, user: dict[str, object]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": server, "certificate-authority": str(ca)}}
                ],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


def _report_once(reporter: StatusReporter, generation: int) -> bool:
    reporter.report_resume(generation, "persistent", generation=generation)
    return reporter.flush(timeout=10)


@pytest.fixture
def cert_server(pki: Pki) -> Iterator[CheckpointServer]:
    with CheckpointServer(pki, require_client_cert=True) as server:
        yield server


def test_kubeconfig_with_a_client_certificate(
    cert_server: CheckpointServer, pki: Pki, tmp_path: Path
) -> None:
    user = {"client-certificate": str(pki.client_cert), "client-key": str(pki.client_key)}
    config = _kubeconfig(tmp_path / "kubeconfig", cert_server.url, pki.ca, user)
    reporter = StatusReporter(REF, kubeconfig=config, min_interval_s=0.0)
    assert _report_once(reporter, 3)
    reporter.close()
    patch = [s for s in cert_server.seen if s.method == "PATCH"][-1]
    assert patch.client_cn == "cairn-agent" and patch.status == 200
    assert patch.content_type == "application/merge-patch+json"
    assert cert_server.status["agentGeneration"] == 3

    # Without the certificate the handshake fails: nothing lands, nothing raises into training.
    anonymous = StatusReporter(
        REF,
        kubeconfig=_kubeconfig(tmp_path / "anon", cert_server.url, pki.ca, {}),
        min_interval_s=0.0,
    )
    anonymous.report_resume(4, "persistent", generation=4)
    assert anonymous.flush(timeout=1.0) is False
    anonymous.close(timeout=0.5)
    assert cert_server.status["agentGeneration"] == 3


def test_kubeconfig_with_an_exec_credential_plugin(pki: Pki, tmp_path: Path) -> None:
    # The plugin numbers its credentials and says they expire within the client's five-minute
    # skew, so the client must run it again for each request instead of caching the first.
    counter = tmp_path / "runs"
    plugin = tmp_path / "credential.py"
    plugin.write_text(
        textwrap.dedent(f"""
        import datetime as dt, json, pathlib
        runs = pathlib.Path({str(counter)!r})
        n = int(runs.read_text()) + 1 if runs.exists() else 1
        runs.write_text(str(n))
        soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)
        print(json.dumps({{
            "apiVersion": "client.authentication.k8s.io/v1",
            "kind": "ExecCredential",
            "status": {{"token": f"exec-{{n}}",
                       "expirationTimestamp": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}},
        }}))
        """)
    )
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "interactiveMode": "Never",
        }
    }
    with CheckpointServer(pki, accept_token=lambda t: t.startswith("exec-")) as server:
        config = _kubeconfig(tmp_path / "kubeconfig", server.url, pki.ca, user)
        reporter = StatusReporter(REF, kubeconfig=config, min_interval_s=0.0)
        assert _report_once(reporter, 1)
        assert _report_once(reporter, 2)
        reporter.close()
        tokens = server.tokens()
    assert server.status["agentGeneration"] == 2
    runs = [int(t.removeprefix("exec-")) for t in tokens]
    assert runs == sorted(runs) and len(set(runs)) >= 2  # refreshed as it expires, not cached


def test_in_cluster_service_account_token_rotation(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "ca.crt").write_bytes(pki.ca.read_bytes())
    token = sa_dir / "token"
    token.write_text("first")  # kubelet-projected tokens carry no trailing newline
    accepted = {"first"}
    with CheckpointServer(pki, accept_token=lambda t: t in accepted) as server:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        configuration = in_cluster_configuration(sa_dir, token_refresh_s=0.2)
        assert configuration is not None
        reporter = StatusReporter(REF, api_client=ApiClient(configuration), min_interval_s=0.0)
        assert _report_once(reporter, 1)

        # The kubelet rotates the token; the server stops accepting the old one.
        token.write_text("second")
        accepted.clear()
        accepted.add("second")
        reporter.report_resume(2, "persistent", generation=2)
        wait_for(lambda: server.status.get("agentGeneration") == 2, what="the rotated token")
        reporter.close()
    assert server.tokens()[0] == "first" and server.tokens()[-1] == "second"

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert in_cluster_configuration(sa_dir) is None  # outside a pod


def test_a_bare_server_url_and_broken_configurations(tmp_path: Path) -> None:
    assert new_api_client(api_url="http://127.0.0.1:1") is not None
    with pytest.raises(ValueError, match="http"):
        new_api_client(api_url="127.0.0.1:1")
    broken = tmp_path / "kubeconfig"
    broken.write_text(json.dumps({"current-context": "missing", "contexts": []}))
    with pytest.raises(ValueError, match=str(broken)):
        new_api_client(kubeconfig=broken)
    assert StatusReporter(REF, kubeconfig=broken).enabled is False
    broken.write_text("clusters: [unclosed\n")
    with pytest.raises(ValueError, match=str(broken)):
        new_api_client(kubeconfig=broken)
    assert StatusReporter(REF, kubeconfig=broken).enabled is False
