"""The agent's background threads never draw from the training script's random streams.

The process-wide ``random`` state is part of every checkpoint (and restored on resume): a watch
or reporter thread that retried with ``random.uniform`` would change what training draws next,
and resumes would silently stop being bit-exact.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cairn_agent.cluster import CheckpointWatch, StatusReporter
from cairn_agent.cluster.config import new_api_client


class _Flapping(BaseHTTPRequestHandler):
    """Lists answer, watches end at once, patches get 503: every retry path runs."""

    def do_GET(self) -> None:
        if "watch=true" in self.path:
            body = b""
        else:
            body = json.dumps(
                {"kind": "CheckpointList", "metadata": {"resourceVersion": "1"}, "items": []}
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def flapping_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flapping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_retrying_watch_and_reporter_leave_the_global_random_state_alone(
    flapping_server: str,
) -> None:
    random.seed(1234)
    before = random.getstate()
    api = new_api_client(flapping_server)
    assert api is not None
    watch = CheckpointWatch(api, "team", "run", backoff_initial_s=0.01, backoff_max_s=0.02).start()
    reporter = StatusReporter("team/run", api_client=api, min_interval_s=0.0)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # many failed lists, watches and patches in the threads
        reporter.report_heartbeat("Idle", 1)
        time.sleep(0.05)
    watch.stop()
    reporter.close(timeout=1.0)
    assert random.getstate() == before
