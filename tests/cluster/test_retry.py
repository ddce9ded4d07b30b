"""Conflicts, throttling and server errors are retried with backoff, honouring Retry-After, and
an API that keeps failing never raises into training."""

from __future__ import annotations

from pathlib import Path

import pytest
from cairn_agent.cluster import StatusReporter

from tests.cluster.servers import CheckpointServer, Pki, make_pki

# These servers are reached by bare https URL, which (as for the sandbox) is not verified.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_409_429_and_503_are_retried_and_retry_after_is_honoured(pki: Pki) -> None:
    failures = ((409, {}), (429, {"Retry-After": "1"}), (503, {}))
    with CheckpointServer(pki, failures=failures) as server:
        # The first request (the seeding GET) takes all three failures, then its last retry
        # succeeds: the transport retried, the reporter never saw a failure.
        reporter = StatusReporter("default/tls", api_url=server.url, min_interval_s=0.0)
        reporter.report_resume(3, "persistent", generation=3)
        assert reporter.flush(timeout=20)
        reporter.close()
    assert [s.status for s in server.seen] == [409, 429, 503, 200, 200]
    assert [s.method for s in server.seen] == ["GET"] * 4 + ["PATCH"]
    after_throttle = server.seen[2].at - server.seen[1].at
    assert after_throttle >= 0.9  # waited for Retry-After: 1, not just the backoff
    assert server.status["agentGeneration"] == 3


def test_an_api_that_keeps_failing_never_raises(pki: Pki, tmp_path: Path) -> None:
    failures = ((500, {}),) * 100
    with CheckpointServer(pki, failures=failures) as server:
        reporter = StatusReporter("default/tls", api_url=server.url, min_interval_s=0.0)
        reporter.report_resume(1, "persistent", generation=1)
        reporter.report_saved(2, bytes=1, files=1)
        assert reporter.flush(timeout=2.0) is False
        reporter.close(timeout=0.5)
        assert reporter.published_resume_point() is None  # a failed read is "no pin", not an error
    assert server.seen and {s.status for s in server.seen} == {500}
    assert "agentGeneration" not in server.status
