"""The sandbox as `cairn cluster` runs it: serve until stopped, with a kubeconfig on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import kmock
import pytest
import yaml
from cairn_operator.testing import Sandbox, SandboxApiError, serve_forever

MINIMAL = Path(__file__).resolve().parents[2] / "examples" / "checkpoints" / "minimal.yaml"


def test_serve_forever_writes_a_kubeconfig_and_stops(tmp_path: Path) -> None:
    stop, ready = threading.Event(), threading.Event()
    seen: list[str] = []

    def on_ready(sandbox: Sandbox) -> None:
        seen.append(sandbox.get("crd", "checkpoints.cairn.dev")["metadata"]["name"])
        ready.set()

    path = tmp_path / "kube" / "config"
    thread = threading.Thread(
        target=serve_forever,
        args=("127.0.0.1", 0, path),
        kwargs={"stop": stop, "on_ready": on_ready},
    )
    thread.start()
    try:
        assert ready.wait(30)
        config = yaml.safe_load(path.read_text())
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert seen == ["checkpoints.cairn.dev"]
    assert config["contexts"][0]["context"]["namespace"] == "default"
    assert config["clusters"][0]["cluster"]["server"].startswith("http://127.0.0.1:")


def test_sigterm_stops_the_sandbox_and_removes_its_directory(tmp_path: Path) -> None:
    """``cairn cluster`` stopped by ``kill`` (a supervisor, a bench) leaves nothing behind."""
    kubeconfig = tmp_path / "kubeconfig"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    code = (
        "from cairn_operator.testing import serve_forever\n"
        f"serve_forever(kubeconfig_path={str(kubeconfig)!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(scratch)}
    )
    try:
        deadline = time.monotonic() + 60
        while not kubeconfig.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kubeconfig.exists(), "the sandbox did not start"
        assert list(scratch.glob("cairn-sandbox-*")), "the sandbox made no directory"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list(scratch.glob("cairn-sandbox-*"))


def test_wildcard_host_gives_a_reachable_url() -> None:
    with Sandbox(host="0.0.0.0") as sandbox:
        assert sandbox.url.startswith("http://127.0.0.1:")
        assert sandbox.list("namespaces")[0]["metadata"]["name"] == "default"


def test_unknown_resource_names_are_reported() -> None:
    with Sandbox() as sandbox, pytest.raises(SandboxApiError) as caught:
        sandbox.get("widgets", "x")
    assert caught.value.status == 404


def test_stop_ends_open_watches() -> None:
    sandbox = Sandbox()
    sandbox.start()
    lines: list[bytes] = []
    opened = threading.Event()

    def watch() -> None:
        with urllib.request.urlopen(
            f"{sandbox.url}{sandbox.path('ckpt')}?watch=true", timeout=60
        ) as stream:
            opened.set()
            lines.extend(stream)

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert opened.wait(30)
    began = time.monotonic()
    sandbox.stop()
    watcher.join(30)
    assert not watcher.is_alive() and time.monotonic() - began < 10
    assert lines == []


def test_user_reactions_inject_faults_and_the_write_does_not_happen() -> None:
    checkpoints = kmock.resource("cairn.dev", "v1alpha1", "checkpoints")
    with Sandbox() as sandbox:
        sandbox.create(yaml.safe_load(MINIMAL.read_text()))
        sandbox.emulator[kmock.action.UPDATE, checkpoints] << 503
        with pytest.raises(SandboxApiError) as caught:
            sandbox.patch("ckpt", "minimal", {"status": {"phase": "Ready"}}, subresource="status")
        listed = sandbox.list("ckpt", "default")
    assert caught.value.status == 503
    assert "status" not in listed[0]
