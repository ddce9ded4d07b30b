"""The emulator stays fast and small over long runs: bounded request log, history and events."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from cairn_operator.testing import Sandbox

WINDOW = 100


def _rate(conn: http.client.HTTPConnection, path: str, start: int, count: int) -> float:
    began = time.perf_counter()
    for i in range(start, start + count):
        body = json.dumps({"status": {"latestCommittedIteration": i}})
        conn.request("PATCH", path, body, {"Content-Type": "application/merge-patch+json"})
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise AssertionError(f"status patch {i} answered {answer.status}")
    return count / (time.perf_counter() - began)


def _best_rate(conn: http.client.HTTPConnection, path: str, start: int) -> float:
    # Best of three windows: other processes on a shared machine only ever slow a window down.
    return max(_rate(conn, path, start + k * WINDOW, WINDOW) for k in range(3))


def test_throughput_does_not_decay_with_the_request_log(
    checkpoint: Callable[..., dict[str, Any]],
) -> None:
    with Sandbox(emulator_options={"request_log_limit": 256}) as sandbox:
        # A user reaction that never matches makes every request consult the request log.
        sandbox.emulator["get", "/never-requested"] << 418
        name = sandbox.create(checkpoint())["metadata"]["name"]
        url = urllib.parse.urlparse(sandbox.url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        path = sandbox.path("ckpt", name, subresource="status")
        _rate(conn, path, 0, 200)
        early = _best_rate(conn, path, 200)
        _rate(conn, path, 500, 2000 - 500)
        late = _best_rate(conn, path, 2000)
        conn.close()
        assert sandbox.emulator.request_count >= 2300
        assert len(list(sandbox.emulator)) <= 256
    assert late / early >= 0.5, f"{early:.0f} req/s after 200 requests, {late:.0f} req/s after 2000"


def test_object_history_and_events_are_bounded(checkpoint: Callable[..., dict[str, Any]]) -> None:
    with Sandbox(emulator_options={"history_limit": 3, "event_limit": 5}) as sandbox:
        name = sandbox.create(checkpoint())["metadata"]["name"]
        for i in range(10):
            sandbox.patch(
                "ckpt", name, {"status": {"latestCommittedIteration": i}}, subresource="status"
            )
        for i in range(8):
            sandbox.create(
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": f"ev-{i}"},
                    "reason": "Saved",
                    "message": str(i),
                }
            )
        stored = sandbox.emulator.objects["cairn.dev/v1alpha1/checkpoints", "default", name]
        assert len(stored.history) == 3
        assert stored["status"]["latestCommittedIteration"] == 9
        names = [e["metadata"]["name"] for e in sandbox.list("events", "default")]
    assert names == [f"ev-{i}" for i in range(3, 8)]
