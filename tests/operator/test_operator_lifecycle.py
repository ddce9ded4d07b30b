"""Retention and deletion Jobs, and an operator restarted mid-way converging without duplicates."""

from __future__ import annotations

import copy
import os
import subprocess
from typing import Any

from cairn_agent.cluster import StatusReporter
from cairn_agent.resource import contract
from cairn_operator.run import RunningOperator, run_in_thread
from cairn_operator.testing import Sandbox, SandboxApiError, pruned_checkpoint_fields

from tests.operator.conftest import (
    FAST,
    ShiftedClock,
    assert_schema_clean,
    checkpoint,
    get_when,
    wait_events,
    wait_for,
)

ALL_CONDITIONS = {
    contract.COND_VALID,
    contract.COND_POLICY_APPLIED,
    contract.COND_RESUME_POINT_SELECTED,
    contract.COND_PREEMPTION_SAFE,
    contract.COND_DEGRADED,
}


def _jobs(sandbox: Sandbox, ckpt: str) -> list[dict[str, Any]]:
    return sandbox.list("jobs", "default", label_selector=f"cairn.dev/gc-for={ckpt}")


def _handled(op: RunningOperator, handler: str) -> float:
    samples = op.context.metrics.registry.get_sample_value(
        "cairn_operator_reconcile_duration_seconds_count", {"handler": handler}
    )
    return samples or 0.0


def _report_history(
    sandbox: Sandbox, name: str, iterations: list[int], state: str
) -> StatusReporter:
    # A long throttle so that the whole history goes out as one patch on flush().
    agent = StatusReporter(f"default/{name}", kubeconfig=sandbox.kubeconfig, min_interval_s=60)
    for it in iterations:
        agent.report_saved(it, bytes=100, files=2, manifest_digest=f"sha-{it}", verified=True)
    agent.report_heartbeat(state, pid=7)
    assert agent.flush()
    return agent


def test_retention_job_once_across_operator_restarts(sandbox: Sandbox, clock: ShiftedClock) -> None:
    sandbox.create(
        checkpoint("gc", retention={"keepLast": 2, "pinned": [100]}, save={"interval": 100})
    )
    with run_in_thread(sandbox.url, settings=FAST, clock=clock):
        get_when(sandbox, "gc", lambda o: (o.get("status") or {}).get("phase"))
        agent = _report_history(sandbox, "gc", [100, 200, 300, 400, 500], "Idle")
        obj = get_when(
            sandbox, "gc", lambda o: (o["status"].get("retention") or {}).get("plannedDeletions")
        )
        assert obj["status"]["retention"]["plannedDeletions"] == [200, 300]
        assert (
            _jobs(sandbox, "gc") == []
        )  # the job is alive (fresh heartbeat): in-job retention only

        agent.report_heartbeat("Stopped", pid=7)
        assert agent.flush()
        job = wait_for(lambda: _jobs(sandbox, "gc"), what="the retention Job")[0]
        obj = get_when(
            sandbox,
            "gc",
            lambda o: (
                o["status"]["retention"].get("lastRun")
                # Every condition is set, the health scanner's Degraded included: the status is
                # settled, so a restarted operator must leave it exactly as it is.
                and {c["type"] for c in o["status"].get("conditions") or ()} >= ALL_CONDITIONS
            ),
        )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "cairn",
        "gc",
        "/ckpt/gc",
        "--keep-last",
        "2",
        "--pin",
        "100",
        "--protect",
        "500",
    ]
    assert container["volumeMounts"] == [{"name": "checkpoints", "mountPath": "/ckpt"}]
    assert job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "ckpt-pvc"
    }
    assert job["metadata"]["name"].startswith("cairn-gc-gc-")
    assert job["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert "cairn.dev/checkpoint" not in job["spec"]["template"]["metadata"]["labels"]
    assert (
        obj["status"]["retention"]["retainedCount"] == 3
        and obj["status"]["retention"]["retainedBytes"] == 300
    )
    wait_events(sandbox, "gc", "RetentionJobCreated")
    before = copy.deepcopy(obj["status"])

    with run_in_thread(sandbox.url, settings=FAST, clock=clock) as second:
        wait_for(lambda: _handled(second, "retention") >= 1, what="the restarted operator's pass")
        sandbox.patch("checkpoints", "gc", {"metadata": {"annotations": {"touch": "1"}}})
        wait_for(lambda: _handled(second, "retention") >= 2, what="a second pass")
        assert [j["metadata"]["name"] for j in _jobs(sandbox, "gc")] == [job["metadata"]["name"]]
        assert sandbox.get("checkpoints", "gc")["status"] == before
    agent.close()
    assert_schema_clean(sandbox.get("checkpoints", "gc"))


def test_dry_run_only_reports_the_plan(sandbox: Sandbox, clock: ShiftedClock) -> None:
    sandbox.create(checkpoint("dry", retention={"keepLast": 1, "dryRun": True}))
    with run_in_thread(sandbox.url, settings=FAST, clock=clock) as op:
        agent = _report_history(sandbox, "dry", [10, 20, 30], "Stopped")
        obj = get_when(
            sandbox,
            "dry",
            lambda o: (o.get("status", {}).get("retention") or {}).get("plannedDeletions"),
        )
        assert obj["status"]["retention"] == {
            "retainedCount": 1,
            "retainedBytes": 100,
            "plannedDeletions": [10, 20],
            "dryRun": True,
        }
        assert _handled(op, "retention") >= 1 and _jobs(sandbox, "dry") == []
    agent.close()


def test_delete_policy_runs_cleanup_job_before_releasing(
    sandbox: Sandbox, clock: ShiftedClock
) -> None:
    sandbox.create(checkpoint("wipe", deletionPolicy="Delete"))
    with run_in_thread(sandbox.url, settings=FAST, clock=clock):
        get_when(
            sandbox,
            "wipe",
            lambda o: "cairn.dev/cleanup" in (o["metadata"].get("finalizers") or ()),
        )
        sandbox.delete("checkpoints", "wipe")
        job = wait_for(lambda: _jobs(sandbox, "wipe"), what="the clean-up Job")[0]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "cairn",
        "gc",
        "/ckpt/wipe",
        "--delete-all",
    ]
    assert (
        job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        == "ckpt-pvc"
    )
    assert "ownerReferences" not in job["metadata"]
    held = sandbox.get("checkpoints", "wipe")
    assert held["metadata"]["finalizers"] == ["cairn.dev/cleanup"]

    with run_in_thread(sandbox.url, settings=FAST, clock=clock) as second:  # restarted mid-deletion
        wait_for(
            lambda: _handled(second, "cleanup") >= 1, what="the restarted operator's clean-up pass"
        )
        assert len(_jobs(sandbox, "wipe")) == 1
        assert sandbox.get("checkpoints", "wipe")["metadata"]["finalizers"] == ["cairn.dev/cleanup"]
        sandbox.patch(
            "jobs",
            job["metadata"]["name"],
            {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
            subresource="status",
        )

        def gone() -> bool:
            try:
                sandbox.get("checkpoints", "wipe")
            except SandboxApiError as exc:
                return exc.status == 404
            return False

        wait_for(gone, what="the finalizer to be released")


def test_retain_policy_releases_at_once(sandbox: Sandbox, clock: ShiftedClock) -> None:
    sandbox.create(checkpoint("keep"))
    with run_in_thread(sandbox.url, settings=FAST, clock=clock):
        get_when(
            sandbox,
            "keep",
            lambda o: "cairn.dev/cleanup" in (o["metadata"].get("finalizers") or ()),
        )
        sandbox.delete("checkpoints", "keep")
        wait_for(
            lambda: (
                not [
                    o
                    for o in sandbox.list("checkpoints", "default")
                    if o["metadata"]["name"] == "keep"
                ]
            ),
            what="deletion",
        )
    assert _jobs(sandbox, "keep") == []


def test_every_status_patch_fits_the_schema(sandbox: Sandbox) -> None:
    """Runs last in this module: every status write the operator made would be stored as sent."""
    patches = [
        r.data
        for r in sandbox.emulator.recent_requests
        if str(r.method).endswith("PATCH")
        and str(r.url).endswith("/status")
        and "/checkpoints/" in str(r.url)
        and isinstance(r.data, dict)
    ]
    assert len(patches) > 10
    for patch in patches:
        obj = checkpoint("x")
        obj["status"] = {k: v for k, v in patch["status"].items() if v is not None}
        assert pruned_checkpoint_fields(obj) == [], patch


def test_cairn_operator_command_uses_the_kubeconfig(sandbox: Sandbox) -> None:
    """The real entry point (``cairn operator``) in its own process, logged in via $KUBECONFIG."""
    sandbox.create(checkpoint("cli"))
    env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = subprocess.Popen(
        ["cairn", "operator", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        obj = get_when(
            sandbox,
            "cli",
            lambda o: (o.get("status") or {}).get("phase") == "Pending",
            timeout=60,
            what="the operator process to reconcile",
        )
        # The finalizer follows the status write (with its answer's resourceVersion).
        assert obj["metadata"].get("finalizers") == ["cairn.dev/cleanup"] or wait_for(
            lambda: (
                sandbox.get("checkpoints", "cli")["metadata"].get("finalizers")
                == ["cairn.dev/cleanup"]
            )
        )
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err, err.decode()[-2000:]
