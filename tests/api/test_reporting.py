"""With ``CAIRN_CHECKPOINT`` set, rank 0 reports commits, retention and the resume point to the
Checkpoint's status (here a stand-in API server over real HTTP)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.api._reporting import (
    report_async_saves,
    report_saves_and_resume,
    resume_under_cluster_pin,
)
from tests.distributed import run_ranks


class _StatusApi(BaseHTTPRequestHandler):
    patches: ClassVar[list[dict[str, Any]]] = []
    # What the operator published (operator-owned status keys) for GETs to return.
    published: ClassVar[dict[str, Any]] = {}

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply({"status": dict(type(self).published)})

    def do_PATCH(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        patch = json.loads(self.rfile.read(length))
        type(self).patches.append({"path": self.path, **patch})
        self._reply({"status": patch.get("status", {})})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def status_api(tmp_path: Path) -> Iterator[tuple[list[dict[str, Any]], dict[str, str]]]:
    """(patches received, pod environment that points the reporter at this server)."""
    _StatusApi.patches = []
    _StatusApi.published = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "current-context": "test",
                "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
                ],
                "users": [{"name": "u", "user": {}}],
            }
        )
    )
    yield _StatusApi.patches, {"KUBECONFIG": str(kubeconfig), "CAIRN_CHECKPOINT": "team/run-1"}
    server.shutdown()


def test_commits_retention_and_resume_reach_the_checkpoint_status(
    status_api: tuple[list[dict[str, Any]], dict[str, str]], tmp_path: Path
) -> None:
    patches, env = status_api
    assert run_ranks(report_saves_and_resume, 2, str(tmp_path / "run"), env) == [True, True]
    assert patches, "rank 0 sent no status patch"
    assert all(p["path"].endswith("/namespaces/team/checkpoints/run-1/status") for p in patches)
    statuses = [p["status"] for p in patches]
    saved = [s["savedIterations"] for s in statuses if "savedIterations" in s][-1]
    assert [entry["iteration"] for entry in saved] == [2]  # iteration 1 was deleted by retention
    assert saved[0]["manifestDigest"] and saved[0]["verified"]
    resume = [s["lastResume"] for s in statuses if "lastResume" in s][-1]
    assert (resume["iteration"], resume["source"]) == (2, "tracker")


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ({"iteration": 1, "reason": "Pinned"}, 1),  # an SRE ran `kubectl cairn resume-from`
        ({"iteration": 1, "reason": "FallbackFromCorrupt"}, 1),  # the operator moved back
        ({"iteration": 1, "reason": "LatestVerified"}, 2),  # no override: the tracker wins
        ({"iteration": 7, "reason": "Pinned"}, 2),  # stale pin (not on disk): the tracker wins
        (None, 2),  # nothing published yet
    ],
    ids=["pinned", "fallback", "latest", "stale-pin", "unpublished"],
)
def test_resume_honours_the_point_the_cluster_pinned(
    status_api: tuple[list[dict[str, Any]], dict[str, str]],
    tmp_path: Path,
    published: dict[str, Any] | None,
    expected: int,
) -> None:
    _, env = status_api
    if published is not None:
        _StatusApi.published = {"resumeFrom": {**published, "source": "persistent"}}
    resumed = run_ranks(resume_under_cluster_pin, 2, str(tmp_path / "run"), env)
    assert resumed == [expected, expected]


def test_async_saves_report_the_save_in_flight_and_the_worker_heartbeat(
    status_api: tuple[list[dict[str, Any]], dict[str, str]], tmp_path: Path
) -> None:
    patches, env = status_api
    # The reporter coalesces patches sent within its interval; make every report its own.
    env = {**env, "CAIRN_STATUS_MIN_INTERVAL_S": "0"}
    assert run_ranks(report_async_saves, 2, str(tmp_path / "run"), env) == [True, True]
    statuses = [p["status"] for p in patches]
    in_flight = [s["saveInProgress"] for s in statuses if "saveInProgress" in s]
    assert any(v and v["phase"] == "Writing" and v["async"] for v in in_flight)
    assert in_flight[-1] is None, "the save in flight was not cleared after its commit"
    beats = [s["asyncWorker"] for s in statuses if "asyncWorker" in s]
    assert any(isinstance(b.get("pid"), int) for b in beats), beats
    assert beats[-1]["state"] == "Stopped"
    saved = [s["savedIterations"] for s in statuses if "savedIterations" in s][-1]
    assert [entry["iteration"] for entry in saved] == [1, 2]
