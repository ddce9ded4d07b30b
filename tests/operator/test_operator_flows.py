"""The operator against the sandbox API server over HTTP, fed by the real agent reporter."""

from __future__ import annotations

from typing import Any

from cairn_agent.cluster import StatusReporter
from cairn_operator.run import RunningOperator
from cairn_operator.testing import Sandbox

from tests.operator.conftest import (
    ShiftedClock,
    assert_schema_clean,
    checkpoint,
    condition,
    events_for,
    get_when,
    wait_events,
    wait_for,
)


def _reporter(sandbox: Sandbox, name: str) -> StatusReporter:
    return StatusReporter(f"default/{name}", kubeconfig=sandbox.kubeconfig, min_interval_s=0.0)


def _status(sandbox: Sandbox, name: str) -> dict[str, Any]:
    return dict(sandbox.get("checkpoints", name).get("status") or {})


def test_valid_then_invalid_spec_is_reported(sandbox: Sandbox, operator: RunningOperator) -> None:
    sandbox.create(checkpoint("valid", save={"interval": 100}))
    obj = get_when(sandbox, "valid", lambda o: condition(o, "Valid"))
    obj = get_when(
        sandbox, "valid", lambda o: "cairn.dev/cleanup" in (o["metadata"].get("finalizers") or ())
    )
    valid = condition(obj, "Valid")
    assert valid and valid["status"] == "True" and valid["observedGeneration"] == 1
    assert obj["status"]["observedGeneration"] == 1 and obj["status"]["phase"] == "Pending"

    sandbox.patch("checkpoints", "valid", {"spec": {"retention": {"keepEvery": 250}}})
    obj = get_when(
        sandbox, "valid", lambda o: (condition(o, "Valid") or {}).get("status") == "False"
    )
    invalid = condition(obj, "Valid")
    assert invalid and invalid["reason"] == "InvalidSpec" and invalid["observedGeneration"] == 2
    assert "keepEvery=250" in invalid["message"] and obj["status"]["phase"] == "Invalid"
    assert wait_for(lambda: events_for(sandbox, "valid", "InvalidSpec"))
    assert_schema_clean(obj)


def test_resume_point_follows_agent_and_falls_back_on_corruption(
    sandbox: Sandbox, operator: RunningOperator
) -> None:
    sandbox.create(checkpoint("resume", retention={"keepLast": 10}))
    agent = _reporter(sandbox, "resume")
    for it in (100, 200, 300):
        agent.report_saved(it, bytes=1000, files=3, manifest_digest=f"d{it}", verified=it < 300)
    assert agent.flush()

    def resume_at(expected: int) -> dict[str, Any] | None:
        status = _status(sandbox, "resume")
        return status if (status.get("resumeFrom") or {}).get("iteration") == expected else None

    status = wait_for(lambda: resume_at(200), what="resumeFrom=200 (newest verified)")
    assert status["resumeFrom"] == {
        "iteration": 200,
        "path": "/ckpt/resume/iter_0000200",
        "source": "persistent",
        "reason": "LatestVerified",
    }
    assert status["phase"] == "Ready"

    agent.report_corrupt(200, "/ckpt/resume/iter_0000200/__0_0.distcp", "size 10 != manifest 1000")
    assert agent.flush()
    status = wait_for(lambda: resume_at(100), what="fallback to 100")
    assert status["resumeFrom"]["reason"] == "FallbackFromCorrupt"
    cond = condition({"status": status}, "ResumePointSelected")
    assert cond and cond["status"] == "True" and "iteration 200 is corrupt" in cond["message"]
    fallback = wait_for(lambda: events_for(sandbox, "resume", "ResumeFallback"))
    assert fallback[0]["type"] == "Warning"
    assert_schema_clean(sandbox.get("checkpoints", "resume"))
    agent.close()


def test_stale_heartbeat_degrades_and_recovers(
    sandbox: Sandbox, operator: RunningOperator, clock: ShiftedClock
) -> None:
    sandbox.create(
        checkpoint(
            "health",
            asyncWorker={"enabled": True, "heartbeatTimeoutSeconds": 60, "saveStallSeconds": 600},
        )
    )
    agent = _reporter(sandbox, "health")
    agent.report_heartbeat("Idle", pid=42)
    assert agent.flush()

    def degraded(reason: str) -> dict[str, Any] | None:
        cond = condition(sandbox.get("checkpoints", "health"), "Degraded")
        return cond if cond and cond["reason"] == reason else None

    wait_for(lambda: degraded("Healthy"))
    clock.advance(120)  # the timer, not a watch event, must notice the silence
    silent = wait_for(lambda: degraded("AgentSilent"), what="AgentSilent")
    assert silent["status"] == "True" and "heartbeatTimeoutSeconds=60" in silent["message"]
    wait_for(lambda: _status(sandbox, "health")["phase"] == "Degraded", what="phase Degraded")
    agent.report_heartbeat("Writing", pid=42)  # stamped with real time: still 120 s old for now
    agent.report_save_phase(500, "Writing", is_async=True)
    assert agent.flush()
    clock.reset()
    wait_for(lambda: degraded("Healthy"), what="recovery")
    wait_for(lambda: _status(sandbox, "health")["phase"] == "Saving", what="phase Saving")
    clock.advance(700)
    stalled = wait_for(lambda: degraded("SaveStalled"), what="SaveStalled")
    assert stalled["status"] == "True" and "iteration 500" in stalled["message"]
    agent.report_saved(500, bytes=10, files=1, verified=True)  # the save commits after all
    agent.report_heartbeat("Idle", pid=42)
    assert agent.flush()
    clock.reset()
    wait_for(lambda: degraded("Healthy"), what="recovery after the stall")
    assert wait_events(sandbox, "health", "SaveStalled")
    assert len(wait_events(sandbox, "health", "Recovered", 2)) == 2
    assert_schema_clean(sandbox.get("checkpoints", "health"))
    agent.close()


def _pod(name: str, ckpt: str, uid_hint: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"cairn.dev/checkpoint": ckpt, "hint": uid_hint},
        },
        "spec": {"containers": [{"name": "trainer", "image": "trainer:1"}]},
    }


def _pod_status(restarts: int, phase: str = "Running") -> dict[str, Any]:
    return {
        "status": {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": "trainer",
                    "restartCount": restarts,
                    "ready": True,
                    "image": "trainer:1",
                    "imageID": "",
                    "state": {"running": {}},
                }
            ],
        }
    }


def test_pod_restarts_are_counted_once(sandbox: Sandbox, operator: RunningOperator) -> None:
    sandbox.create(checkpoint("restarts"))
    sandbox.create(_pod("trainer-0", "restarts", "a"))
    sandbox.patch("pods", "trainer-0", _pod_status(0), subresource="status")
    wait_for(
        lambda: (
            "cairn.dev/observed-pods"
            in (sandbox.get("checkpoints", "restarts")["metadata"].get("annotations") or {})
        )
    )
    sandbox.patch("pods", "trainer-0", _pod_status(1), subresource="status")

    def count(n: int) -> dict[str, Any] | None:
        restarts = _status(sandbox, "restarts").get("restarts") or {}
        return restarts if restarts.get("count") == n else None

    wait_for(lambda: count(1), what="one container restart")
    sandbox.delete("pods", "trainer-0")
    sandbox.create(_pod("trainer-0", "restarts", "b"))  # same name, new uid: a replacement
    sandbox.patch("pods", "trainer-0", _pod_status(0), subresource="status")
    restarts = wait_for(lambda: count(2), what="a pod replacement")
    assert "lastRestartTime" in restarts and "lastResumedIteration" not in restarts

    agent = _reporter(sandbox, "restarts")
    agent.report_resume(1200, "persistent", generation=1)
    assert agent.flush()
    restarts = wait_for(lambda: (count(2) or {}).get("lastResumedIteration") == 1200)
    assert len(wait_events(sandbox, "restarts", "PodRestarted", 2)) == 2
    assert_schema_clean(sandbox.get("checkpoints", "restarts"))
    agent.close()
