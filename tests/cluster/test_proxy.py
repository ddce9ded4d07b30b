"""The agent reaches its API server through a proxy: a kubeconfig's ``proxy-url`` or
``HTTP_PROXY``/``NO_PROXY`` from the environment, as kubectl does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cairn_agent.cluster import StatusReporter
from cairn_operator.testing import Sandbox

from tests.cluster.servers import ForwardProxy
from tests.operator.conftest import checkpoint

STATUS = "/apis/cairn.dev/v1alpha1/namespaces/default/checkpoints/proxied/status"


def _report(reporter: StatusReporter) -> None:
    reporter.report_resume(1, "persistent", generation=1)
    assert reporter.flush()
    reporter.close()


def test_kubeconfig_proxy_url_and_environment_proxies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Sandbox() as sandbox, ForwardProxy() as proxy:
        sandbox.create(checkpoint("proxied"))
        config = yaml.safe_load(sandbox.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["proxy-url"] = proxy.url
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        _report(StatusReporter("default/proxied", kubeconfig=kubeconfig, min_interval_s=0.0))
        assert f"PATCH {sandbox.url}{STATUS}" in proxy.forwarded

        proxy.forwarded.clear()
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "")
        _report(StatusReporter("default/proxied", api_url=sandbox.url, min_interval_s=0.0))
        assert f"PATCH {sandbox.url}{STATUS}" in proxy.forwarded

        proxy.forwarded.clear()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        _report(StatusReporter("default/proxied", api_url=sandbox.url, min_interval_s=0.0))
        assert not [f for f in proxy.forwarded if f.endswith(STATUS)]
