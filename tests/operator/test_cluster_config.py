"""Where the agent's reporter finds the API: in-cluster service account or a kubeconfig."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cairn_agent.cluster.config import in_cluster_config, kubeconfig_config, load_api_config


def test_in_cluster_service_account_token_is_reread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "ca.crt").write_text("PEM")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    config = in_cluster_config(tmp_path)
    assert config is not None and config.server == "https://10.0.0.1:6443"
    assert config.ca_file == tmp_path / "ca.crt" and config.bearer() == "first"
    (tmp_path / "token").write_text("rotated")
    assert config.bearer() == "rotated"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert in_cluster_config(tmp_path) is None


def test_kubeconfig_current_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config"
    ca = base64.b64encode(b"-----PEM-----").decode()
    path.write_text(f"""
current-context: b
contexts:
- {{name: a, context: {{cluster: one, user: u1}}}}
- {{name: b, context: {{cluster: two, user: u2}}}}
clusters:
- {{name: one, cluster: {{server: "https://one:443"}}}}
- {{name: two, cluster: {{server: "https://two:443", certificate-authority-data: "{ca}"}}}}
users:
- {{name: u1, user: {{token: t1}}}}
- {{name: u2, user: {{token: t2}}}}
""")
    config = kubeconfig_config(path)
    assert (config.server, config.bearer(), config.ca_data) == (
        "https://two:443",
        "t2",
        "-----PEM-----",
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    found = load_api_config()
    assert found is not None and found.server == "https://two:443"
    explicit = load_api_config(api_url="http://127.0.0.1:1")
    assert explicit is not None and explicit.server == "http://127.0.0.1:1"
    with pytest.raises(ValueError, match="http"):
        load_api_config(api_url="127.0.0.1:1")
