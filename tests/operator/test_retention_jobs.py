"""Retention Jobs at scale: creations are bounded, the cache of known Jobs stays one per
Checkpoint. Drives ``handlers.retention.reconcile`` directly, with the API call replaced."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from cairn_operator import k8s
from cairn_operator.handlers import common, retention
from cairn_operator.handlers.common import OperatorContext
from cairn_operator.metrics import Metrics

from tests.operator.conftest import FAST, checkpoint


def _idle_job_with_history(name: str, iterations: list[int]) -> dict[str, Any]:
    """A Checkpoint whose job has stopped and whose history exceeds ``keepLast`` 2."""
    obj = checkpoint(name, retention={"keepLast": 2}, save={"interval": 100})
    obj["metadata"]["uid"] = f"uid-{name}"
    obj["status"] = {
        "savedIterations": [
            {"iteration": it, "verified": True, "bytes": 10, "files": 1} for it in iterations
        ],
        "latestCommittedIteration": iterations[-1],
        "asyncWorker": {"state": "Stopped", "heartbeatTime": "2026-01-01T00:00:00Z", "pid": 1},
    }
    return obj


class _FakeJobsApi:
    """``k8s.create_if_absent`` for Jobs: records names and the most creations in flight."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.in_flight = 0
        self.peak = 0

    async def create_if_absent(
        self, url: str, body: dict[str, Any], **_: Any
    ) -> tuple[dict[str, Any], bool]:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.005)  # a request's round trip: others start meanwhile
        self.in_flight -= 1
        self.names.append(body["metadata"]["name"])
        return {"metadata": {"creationTimestamp": "2026-01-02T00:00:00Z"}}, True


@pytest.fixture
def jobs_api(monkeypatch: pytest.MonkeyPatch) -> _FakeJobsApi:
    api = _FakeJobsApi()
    monkeypatch.setattr(k8s, "create_if_absent", api.create_if_absent)
    monkeypatch.setattr(retention, "post_event", lambda *_a, **_k: None)
    return api


def _context() -> OperatorContext:
    return OperatorContext(settings=FAST, metrics=Metrics())


def test_a_burst_of_retention_jobs_is_created_a_few_at_a_time(jobs_api: _FakeJobsApi) -> None:
    objs = [_idle_job_with_history(f"job-{i:03d}", [100, 200, 300]) for i in range(60)]

    async def burst() -> list[kopf.Patch]:
        ctx = _context()
        patches = [kopf.Patch() for _ in objs]
        await asyncio.gather(*(retention.reconcile(o, p, ctx) for o, p in zip(objs, patches)))
        return patches

    patches = asyncio.run(burst())
    # Every Checkpoint got its Job and its lastRun, never more than the bound at once.
    assert len(set(jobs_api.names)) == len(objs)
    assert jobs_api.peak == common.JOB_CREATIONS_IN_FLIGHT
    for patch in patches:
        assert patch["status"]["retention"]["lastRun"] == "2026-01-02T00:00:00Z"
        assert patch["status"]["retention"]["plannedDeletions"] == [100]


def test_known_jobs_keep_one_entry_per_checkpoint_and_forget_deleted_ones(
    jobs_api: _FakeJobsApi,
) -> None:
    ctx = _context()

    async def reconcile(iterations: list[int]) -> None:
        obj = _idle_job_with_history("run", iterations)
        await retention.reconcile(obj, kopf.Patch(), ctx)

    asyncio.run(reconcile([100, 200, 300]))
    asyncio.run(reconcile([100, 200, 300]))  # the same plan: known, no second request
    assert len(jobs_api.names) == 1
    asyncio.run(reconcile([100, 200, 300, 400]))  # a new plan: a new Job replaces the entry
    assert len(jobs_api.names) == 2 and jobs_api.names[0] != jobs_api.names[1]
    assert ctx.known_jobs == {("default", "run"): (jobs_api.names[1], "2026-01-02T00:00:00Z")}

    retention.forget(("default", "run"), ctx)
    assert ctx.known_jobs == {}
