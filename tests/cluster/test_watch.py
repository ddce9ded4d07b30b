"""Rank 0's Checkpoint watch and status reporter against the sandbox API server over real HTTP:
spec edits seen within seconds, 410 Gone handled by re-listing, an API server that goes away and
comes back (same state, or restarted empty on the same port) converged on without raising."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator

import pytest
from cairn_agent.cluster import CheckpointWatch, StatusReporter, WatchedCheckpoint, new_api_client
from cairn_operator.testing import Sandbox
from kubernetes.client import ApiClient

from tests.cluster.servers import TcpRelay
from tests.operator.conftest import checkpoint, wait_for

FAST = {"backoff_initial_s": 0.2, "backoff_max_s": 1.0}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


def _client(url: str) -> ApiClient:
    client = new_api_client(api_url=url)
    assert client is not None
    return client


def _interval(snap: WatchedCheckpoint | None) -> object:
    return None if snap is None else (snap.spec.get("save") or {}).get("interval")


def test_sees_spec_edits_annotations_and_deletion(sandbox: Sandbox) -> None:
    sandbox.create(checkpoint("live"))
    changes: list[WatchedCheckpoint] = []
    api = _client(sandbox.url)
    watch = CheckpointWatch(api, "default", "live", on_change=changes.append).start()
    first = watch.wait_for_version(0, timeout=10)
    assert first is not None and first.exists and first.generation == 1 and watch.synced

    subprocess.run(
        ["kubectl", "--kubeconfig", str(sandbox.kubeconfig), "patch", "ckpt", "live",
         "--type", "merge", "-p", '{"spec":{"save":{"interval":500}}}'],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    edited = watch.wait_for_version(first.version, timeout=2)
    assert edited is not None and _interval(edited) == 500 and edited.generation == 2

    # The job's own status reports refresh status but do not count as a change to act on.
    reporter = StatusReporter("default/live", api_client=api, min_interval_s=0.0)
    reporter.report_resume(7, "persistent", generation=7)
    assert reporter.flush()
    seen = wait_for(lambda: (s := watch.snapshot()) and s.status.get("agentGeneration") == 7 and s)
    assert seen.version == edited.version

    sandbox.patch("checkpoints", "live", {"metadata": {"annotations": {"cairn.dev/x": "1"}}})
    annotated = watch.wait_for_version(edited.version, timeout=5)
    assert annotated is not None and annotated.annotations == {"cairn.dev/x": "1"}

    sandbox.delete("checkpoints", "live")
    gone = watch.wait_for_version(annotated.version, timeout=5)
    assert gone is not None and not gone.exists and gone.spec == {}
    assert [c.version for c in changes] == [1, 2, 3, 4]
    assert watch.stop(timeout=2.0)
    reporter.close()


def test_relists_after_410_gone(caplog: pytest.LogCaptureFixture) -> None:
    # A four-event resume window: the watch's version falls out of it after a little churn on
    # another object, so resuming the next stream answers 410 Gone.
    caplog.set_level(logging.INFO, logger="cairn_agent.cluster.watch")
    with Sandbox(emulator_options={"watch_window": 4}) as sandbox:
        sandbox.create(checkpoint("gone"))
        sandbox.create(checkpoint("noise"))
        watch = CheckpointWatch(_client(sandbox.url), "default", "gone", watch_timeout_s=1, **FAST)
        first = watch.start().wait_for_version(0, timeout=10)
        assert first is not None
        for i in range(10):
            sandbox.patch("checkpoints", "noise", {"metadata": {"annotations": {"n": str(i)}}})
        wait_for(lambda: "watch expired (410)" in caplog.text, what="a 410 and a re-list")
        sandbox.patch("checkpoints", "gone", {"spec": {"save": {"interval": 40}}})
        wait_for(lambda: _interval(watch.snapshot()) == 40, what="the edit after re-listing")
        assert watch.stop(timeout=2.0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # 410 is routine


def test_api_server_away_then_back(sandbox: Sandbox) -> None:
    sandbox.create(checkpoint("away"))
    relay = TcpRelay(int(sandbox.url.rsplit(":", 1)[1]))
    api = _client(relay.url)
    watch = CheckpointWatch(api, "default", "away", **FAST).start()
    reporter = StatusReporter("default/away", api_client=api, min_interval_s=0.1)
    assert watch.wait_for_version(0, timeout=10) is not None
    reporter.report_resume(1, "persistent", generation=1)
    assert reporter.flush()

    relay.cut()
    sandbox.patch("checkpoints", "away", {"spec": {"save": {"interval": 77}}})  # another client
    reporter.report_saved(5, bytes=5, files=1)
    assert reporter.flush(timeout=3.0) is False  # the server is away for these seconds
    assert _interval(watch.snapshot()) is None and not watch.synced  # stale, and says so

    relay.restore()
    wait_for(lambda: _interval(watch.snapshot()) == 77, timeout=20, what="the watch catching up")
    wait_for(
        lambda: sandbox.get("checkpoints", "away")["status"].get("latestCommittedIteration") == 5,
        timeout=20,
        what="the report sent during the outage",
    )
    assert watch.synced and watch.stop(timeout=2.0)
    reporter.close()
    relay.cut()


def test_api_server_restarted_empty_on_the_same_port() -> None:
    first = Sandbox()
    first.start()
    port = int(first.url.rsplit(":", 1)[1])
    first.create(checkpoint("restart"))
    api = _client(first.url)
    watch = CheckpointWatch(api, "default", "restart", **FAST).start()
    reporter = StatusReporter("default/restart", api_client=api, min_interval_s=0.1)
    listed = watch.wait_for_version(0, timeout=10)
    assert listed is not None
    # An edit seen proves the watch stream is open: the server's shutdown closes open streams,
    # while one still connecting could outlive it (an artifact of stopping in-process).
    first.patch("checkpoints", "restart", {"metadata": {"annotations": {"seen": "yes"}}})
    before = watch.wait_for_version(listed.version, timeout=10)
    assert before is not None
    first.stop()

    with Sandbox(port=port) as second:  # a new server, its store rebuilt from manifests
        second.create(checkpoint("restart", save={"interval": 9}))
        after = wait_for(lambda: (s := watch.snapshot()) and _interval(s) == 9 and s, timeout=20)
        assert after.uid != before.uid and after.version > before.version
        reporter.report_resume(2, "persistent", generation=2)
        wait_for(
            lambda: (
                second.get("checkpoints", "restart").get("status", {}).get("agentGeneration") == 2
            ),
            timeout=20,
        )
        assert watch.stop(timeout=2.0)
        reporter.close()
