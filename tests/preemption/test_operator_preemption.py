"""The operator against the sandbox: each signal that announces the end of a job's pods asks the
job for a save (``spec.saveNow``), once per preemption, with an Event and a metric; the job's
answer lands in ``status.lastPreemption``; ``PreemptionSafe`` follows the measured save times."""

from __future__ import annotations

from typing import Any

from cairn_agent.resource import contract
from cairn_operator.reconcile import preemption
from cairn_operator.run import RunningOperator
from cairn_operator.testing import Sandbox, SandboxApiError

from tests.operator.conftest import checkpoint, condition, get_when, wait_events, wait_for
from tests.preemption.conftest import node, training_pod


def save_now(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("spec") or {}).get("saveNow") or {})


def last_preemption(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("status") or {}).get(contract.LAST_PREEMPTION) or {})


def preemptions(op: RunningOperator, name: str, reason: str) -> float:
    """The operator's preemption counter. It moves once the handler's write has returned, just
    after the object changed, so tests wait for it rather than read it once."""
    labels = {"namespace": "default", "name": name, "reason": reason}
    value = op.context.metrics.registry.get_sample_value("cairn_preemptions_total", labels)
    return value or 0.0


def answer(sandbox: Sandbox, name: str, request_id: str, iteration: int) -> None:
    """What the job's agent writes once its requested save committed."""
    status = {
        contract.LAST_SAVE_REQUEST: {
            "requestId": request_id,
            "reason": "whatever the spec said",
            "requestedIteration": iteration,
            "iteration": iteration,
            "committedAt": "2026-03-01T12:00:04Z",
            "saveSeconds": 1.5,
            "outcome": "Committed",
        }
    }
    sandbox.patch("checkpoints", name, {"status": status}, subresource="status")


def test_node_drain_asks_once_and_records_the_answer(
    sandbox: Sandbox, operator: RunningOperator
) -> None:
    sandbox.create(checkpoint("drain"))
    sandbox.create(node("worker-1"))
    pod = sandbox.create(training_pod("drain-0", "drain", "worker-1", grace=45, finalizer=True))
    uid = pod["metadata"]["uid"]

    # Cordon (the first step of kubectl drain): a save request at once.
    sandbox.patch("nodes", "worker-1", {"spec": {"unschedulable": True}}, namespace=None)
    obj = get_when(sandbox, "drain", lambda o: save_now(o), what="a save request")
    request = save_now(obj)
    assert request["requestId"] == f"preempt-node-worker-1-{uid}"
    assert request["reason"].startswith("NodeCordoned: node/worker-1")
    events = wait_events(sandbox, "drain", "PreemptionAnnounced")
    assert request["requestId"] in events[0]["message"]
    wait_for(lambda: preemptions(operator, "drain", "NodeCordoned") == 1, what="the counter")
    obj = get_when(sandbox, "drain", lambda o: last_preemption(o).get("outcome") == "Pending")
    assert last_preemption(obj)["reason"] == "NodeCordoned"

    # The eviction of the pod follows before the job answered: it joins the same request.
    sandbox.delete("pods", "drain-0")
    obj = get_when(sandbox, "drain", lambda o: len(last_preemption(o).get("signals") or []) == 2)
    assert save_now(obj) == request
    assert last_preemption(obj)["signals"] == [
        "NodeCordoned node/worker-1",
        "PodDeleting pod/drain-0",
    ]
    assert preemptions(operator, "drain", "PodDeleting") == 0

    # The job answers: status.lastPreemption says what was saved, and an Event tells it.
    answer(sandbox, "drain", request["requestId"], 37)
    obj = get_when(sandbox, "drain", lambda o: last_preemption(o).get("outcome") == "Committed")
    recorded = last_preemption(obj)
    assert (recorded["iteration"], recorded["saveSeconds"]) == (37, 1.5)
    assert recorded["deadline"] > recorded["announcedAt"]
    saved = wait_events(sandbox, "drain", "PreemptionSaved")
    assert "iteration 37" in saved[0]["message"]
    sandbox.patch("pods", "drain-0", {"metadata": {"finalizers": None}})


def test_pod_deletion_alone_asks_for_a_save(sandbox: Sandbox, operator: RunningOperator) -> None:
    sandbox.create(checkpoint("deleted"))
    sandbox.create(node("worker-2"))
    pod = sandbox.create(training_pod("deleted-0", "deleted", "worker-2", finalizer=True))
    sandbox.delete("pods", "deleted-0")
    obj = get_when(sandbox, "deleted", lambda o: save_now(o), what="a save request")
    assert save_now(obj)["requestId"] == f"preempt-pod-{pod['metadata']['uid']}"
    assert save_now(obj)["reason"].startswith("PodDeleting")
    wait_for(lambda: preemptions(operator, "deleted", "PodDeleting") == 1, what="the counter")
    sandbox.patch("pods", "deleted-0", {"metadata": {"finalizers": None}})


def test_kueue_eviction_and_suspended_jobset(sandbox: Sandbox, operator: RunningOperator) -> None:
    sandbox.create(checkpoint("queued"))
    labels = {contract.LABEL_CHECKPOINT: "queued"}
    workload = {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "Workload",
        "metadata": {"name": "job-queued-abc"},
        "spec": {
            "podSets": [{"name": "main", "count": 2, "template": {"metadata": {"labels": labels}}}]
        },
    }
    sandbox.create(workload)
    evicted = {
        "type": "Evicted",
        "status": "True",
        "reason": "Preempted",
        "message": "Preempted to accommodate a higher priority Workload",
        "lastTransitionTime": "2026-03-01T12:00:00Z",
    }
    sandbox.patch(
        "workloads", "job-queued-abc", {"status": {"conditions": [evicted]}}, subresource="status"
    )
    obj = get_when(sandbox, "queued", lambda o: save_now(o), what="a save request")
    assert save_now(obj)["reason"].startswith("WorkloadEvicted: workload/job-queued-abc")
    wait_for(lambda: preemptions(operator, "queued", "WorkloadEvicted") == 1, what="the counter")
    first = save_now(obj)["requestId"]

    # After the answer, the JobSet of the job being suspended is a new preemption.
    answer(sandbox, "queued", first, 10)
    get_when(sandbox, "queued", lambda o: last_preemption(o).get("outcome") == "Committed")
    jobset = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "queued", "labels": labels},
        "spec": {"suspend": False, "replicatedJobs": []},
    }
    sandbox.create(jobset)
    sandbox.patch("jobsets", "queued", {"spec": {"suspend": True}})
    # The announcement (spec.saveNow) and the reconcile it causes (status.lastPreemption) are
    # two writes: wait for the second.
    obj = get_when(
        sandbox,
        "queued",
        lambda o: (
            save_now(o).get("requestId") != first
            and last_preemption(o).get("requestId") == save_now(o).get("requestId")
        ),
    )
    assert save_now(obj)["reason"].startswith("JobSetSuspended: jobset/queued")
    assert last_preemption(obj)["outcome"] == "Pending"
    wait_for(lambda: preemptions(operator, "queued", "JobSetSuspended") == 1, what="the counter")


def grace(obj: dict[str, Any]) -> int | None:
    """The pods' grace period the operator recorded in the Checkpoint's preemption ledger."""
    text = (obj["metadata"].get("annotations") or {}).get(preemption.LEDGER_ANNOTATION)
    return preemption.load_ledger(text).grace_seconds


def _gone(sandbox: Sandbox, name: str) -> bool:
    try:
        sandbox.get("checkpoints", name)
    except SandboxApiError as exc:
        return exc.status == 404
    return False


def test_a_checkpoint_created_again_gets_the_grace_period_recorded_again(
    sandbox: Sandbox, operator: RunningOperator
) -> None:
    sandbox.create(checkpoint("again"))
    sandbox.create(node("worker-4"))
    sandbox.create(training_pod("again-0", "again", "worker-4", grace=25))
    get_when(sandbox, "again", lambda o: grace(o) == 25, what="the grace period recorded")

    sandbox.delete("checkpoints", "again")
    wait_for(lambda: _gone(sandbox, "again"), what="the Checkpoint deleted")
    # Nothing of the deleted Checkpoint stays in the operator's per-Checkpoint caches.
    key = ("default", "again")
    wait_for(
        lambda: key not in operator.context.recorded_grace and key not in operator.context.locks,
        what="the deleted Checkpoint forgotten",
    )

    # The same name again, and the restarted job's pod with the same grace period: the new
    # object's ledger starts empty, so the operator must write the grace period again.
    sandbox.create(checkpoint("again"))
    sandbox.create(training_pod("again-1", "again", "worker-4", grace=25))
    get_when(sandbox, "again", lambda o: grace(o) == 25, what="the grace period recorded again")


def test_preemption_safe_follows_the_measured_saves(
    sandbox: Sandbox, operator: RunningOperator
) -> None:
    sandbox.create(checkpoint("sized"))
    sandbox.create(node("worker-3"))
    sandbox.create(training_pod("sized-0", "sized", "worker-3", grace=20))

    def safe(status: str) -> Any:
        def probe(obj: dict[str, Any]) -> bool:
            cond = condition(obj, contract.COND_PREEMPTION_SAFE)
            return cond is not None and cond["status"] == status

        return probe

    obj = get_when(sandbox, "sized", safe("Unknown"), what="PreemptionSafe Unknown")
    assert condition(obj, contract.COND_PREEMPTION_SAFE)["reason"] == "NoMeasurements"  # type: ignore[index]

    get_when(sandbox, "sized", lambda o: grace(o) == 20, what="the pods' grace period recorded")

    def measured(seconds: list[float]) -> None:
        stats = {"stepTimeSeconds": 1.0, "persistent": {"recentStallSeconds": seconds}}
        sandbox.patch(
            "checkpoints", "sized", {"status": {contract.SAVE_STATS: stats}}, subresource="status"
        )

    measured([8.0, 9.0])  # (9 + 1) * 1.2 + 5 = 17 s <= 20 s
    get_when(sandbox, "sized", safe("True"), what="PreemptionSafe True")
    measured([8.0, 9.0, 25.0])  # (25 + 1) * 1.2 + 5 = 36.2 s > 20 s
    obj = get_when(sandbox, "sized", safe("False"), what="PreemptionSafe False")
    message = condition(obj, contract.COND_PREEMPTION_SAFE)["message"]  # type: ignore[index]
    assert "needs 36.2s" in message and "at least 37" in message
