"""Prometheus metrics derived from the agent's status, scraped over HTTP."""

from __future__ import annotations

import socket
import urllib.request

from cairn_operator.metrics import Metrics

KEY = ("ns", "job")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_counters_follow_status_changes_and_gauges_are_scraped() -> None:
    now = [1_800_000_100.0]
    metrics = Metrics(clock=lambda: now[0])
    metrics.observe(KEY, {"latestCommittedIteration": 100, "lastSaveTime": "2027-01-15T08:00:00Z"})
    metrics.observe(
        KEY,
        {"latestCommittedIteration": 100, "saveInProgress": {"iteration": 200, "phase": "Writing"}},
    )
    metrics.observe(
        KEY,
        {
            "latestCommittedIteration": 200,
            "saveInProgress": None,
            "retention": {"retainedCount": 2, "retainedBytes": 4096},
            "restarts": {"count": 3},
        },
    )
    metrics.observe(
        KEY,
        {"latestCommittedIteration": 200, "saveInProgress": {"iteration": 300, "phase": "Writing"}},
    )
    metrics.observe(KEY, {"latestCommittedIteration": 200, "saveInProgress": None})  # 300 failed
    labels = {"namespace": "ns", "name": "job"}
    value = metrics.registry.get_sample_value
    assert value("cairn_checkpoint_saves_committed_total", labels) == 1
    assert value("cairn_checkpoint_saves_failed_total", labels) == 1
    assert value("cairn_checkpoint_latest_committed_iteration", labels) == 200
    assert (
        value("cairn_checkpoint_seconds_since_last_commit", labels)
        == 1_800_000_100.0 - 1_800_000_000.0
    )

    metrics.reconcile_seconds.labels(handler="resume").observe(0.002)
    port = _free_port()
    metrics.serve(port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'cairn_checkpoint_retained_bytes{name="job",namespace="ns"} 4096.0' in text
    assert 'cairn_checkpoint_job_restarts{name="job",namespace="ns"} 3.0' in text
    assert (
        'cairn_operator_reconcile_duration_seconds_bucket{handler="resume",le="0.0025"} 1.0' in text
    )

    metrics.forget(KEY)
    assert value("cairn_checkpoint_latest_committed_iteration", labels) is None
