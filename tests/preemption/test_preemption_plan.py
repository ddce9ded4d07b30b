"""The pure preemption logic: which objects announce an end, one request per preemption, the
job's answer in ``status.lastPreemption``, and the ``PreemptionSafe`` verdict."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cairn_agent.resource import contract
from cairn_operator.reconcile import preemption, preemption_safe, preemption_signals
from cairn_operator.reconcile.node_index import NodeIndex, PodRef

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def pod(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "train-0", "uid": "u-1", "labels": {contract.LABEL_CHECKPOINT: "job"}},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 90},
        "status": {"phase": "Running"},
    }
    for key, value in extra.items():
        body[key] = {**body[key], **value}
    return body


def test_pod_signals() -> None:
    assert preemption_signals.pod_signal(pod()) is None
    deleting = preemption_signals.pod_signal(
        pod(metadata={"deletionTimestamp": "2026-03-01T12:00:00Z"})
    )
    assert deleting is not None and deleting.reason == "PodDeleting"
    evicted = pod(
        status={
            "conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
            ]
        },
        metadata={"deletionTimestamp": "2026-03-01T12:00:00Z"},
    )
    signal = preemption_signals.pod_signal(evicted)
    assert signal is not None and signal.reason == "PodEvicted"
    assert "EvictionByEvictionAPI" in signal.message
    # One pod, one announcement: eviction and deletion of the same pod share the key.
    assert signal.key == deleting.key and signal.request_id == "preempt-pod-u-1"
    finished = pod(metadata={"deletionTimestamp": "x"}, status={"phase": "Succeeded"})
    assert preemption_signals.pod_signal(finished) is None
    assert preemption_signals.grace_seconds_of(pod()) == 90
    assert preemption_signals.grace_seconds_of({"spec": {}}) == preemption.DEFAULT_GRACE_SECONDS


def test_node_workload_and_jobset_signals() -> None:
    assert preemption_signals.node_state({"spec": {}}) is None
    cordoned = preemption_signals.node_state({"spec": {"unschedulable": True}})
    assert cordoned is not None and cordoned.reason == "NodeCordoned"
    prefer = {"spec": {"taints": [{"key": "a", "effect": "PreferNoSchedule"}]}}
    assert preemption_signals.node_state(prefer) is None
    tainted = preemption_signals.node_state(
        {"spec": {"taints": [{"key": "spot/reclaim", "effect": "NoExecute"}]}}
    )
    assert tainted is not None and tainted.reason == "NodeTainted"
    assert "spot/reclaim" in tainted.detail

    workload: dict[str, Any] = {
        "metadata": {"name": "wl", "uid": "w-1"},
        "spec": {
            "podSets": [{"template": {"metadata": {"labels": {contract.LABEL_CHECKPOINT: "job"}}}}]
        },
        "status": {"conditions": [{"type": "Admitted", "status": "True"}]},
    }
    assert preemption_signals.checkpoint_of(workload) == "job"
    assert preemption_signals.workload_signal(workload) is None
    workload["status"]["conditions"].append(
        {
            "type": "Evicted",
            "status": "True",
            "reason": "Preempted",
            "lastTransitionTime": "2026-03-01T12:00:00Z",
        }
    )
    first = preemption_signals.workload_signal(workload)
    assert first is not None and first.reason == "WorkloadEvicted"
    # Evicted again after a readmission: a new transition time, a new preemption.
    workload["status"]["conditions"][-1]["lastTransitionTime"] = "2026-03-01T13:00:00Z"
    again = preemption_signals.workload_signal(workload)
    assert again is not None and again.key != first.key

    jobset: dict[str, Any] = {
        "metadata": {
            "name": "js",
            "uid": "j-1",
            "generation": 3,
            "labels": {contract.LABEL_CHECKPOINT: "job"},
        },
        "spec": {"suspend": True},
    }
    signal = preemption_signals.suspended_signal(jobset, "JobSetSuspended")
    assert signal is not None and signal.key == "jobset-j-1-g3"
    assert preemption_signals.checkpoint_of(jobset) == "job"
    assert preemption_signals.checkpoint_of({"metadata": {"name": "other"}}) is None


def signal(
    key: str = "pod-u-1", reason: preemption.SignalReason = "PodDeleting"
) -> preemption.Signal:
    return preemption.Signal(key=key, reason=reason, subject="pod/train-0", message="m")


def test_one_request_per_preemption_and_idempotent() -> None:
    first = preemption.announce(
        preemption.Ledger(), signal("node-n1-u-1", "NodeCordoned"), spec={}, status={}, now=NOW
    )
    assert first is not None and first.new_preemption
    assert first.save_now == {
        "requestId": "preempt-node-n1-u-1",
        "reason": "NodeCordoned: m",
        "requestedAt": "2026-03-01T12:00:00Z",
    }
    spec = {"saveNow": first.save_now}
    # The same signal again (a re-list, an operator restart): nothing to do.
    assert (
        preemption.announce(
            first.ledger, signal("node-n1-u-1", "NodeCordoned"), spec=spec, status={}, now=NOW
        )
        is None
    )
    # The pod's eviction while the request is unanswered joins it: no second save.
    joined = preemption.announce(first.ledger, signal(), spec=spec, status={}, now=NOW)
    assert joined is not None and joined.save_now is None and not joined.new_preemption
    assert joined.entry.request_id == "preempt-node-n1-u-1"
    # After the job answered, a later signal asks for a fresh save.
    answered = {
        contract.LAST_SAVE_REQUEST: {"requestId": "preempt-node-n1-u-1", "outcome": "Committed"}
    }
    later = preemption.announce(
        joined.ledger, signal("pod-u-2"), spec=spec, status=answered, now=NOW
    )
    assert later is not None and later.new_preemption and later.save_now is not None
    # The ledger round-trips through its annotation text, bounded.
    assert preemption.load_ledger(preemption.dump_ledger(later.ledger)) == later.ledger
    assert preemption.load_ledger("not json") == preemption.Ledger()


def test_last_preemption_takes_the_jobs_answer() -> None:
    status: dict[str, Any] = {
        contract.LAST_SAVE_REQUEST: {"requestId": "older", "outcome": "Committed"}
    }
    first = preemption.announce(
        preemption.Ledger(grace_seconds=60), signal(), spec={}, status=status, now=NOW
    )
    assert first is not None
    pending = preemption.last_preemption(first.ledger, status)
    assert pending is not None
    assert pending["outcome"] == "Pending" and pending["deadline"] == "2026-03-01T12:01:00Z"
    assert pending["signals"] == ["PodDeleting pod/train-0"]
    status[contract.LAST_SAVE_REQUEST] = {
        "requestId": "preempt-pod-u-1",
        "outcome": "Committed",
        "iteration": 37,
        "saveSeconds": 2.5,
        "committedAt": "2026-03-01T12:00:04Z",
    }
    done = preemption.last_preemption(first.ledger, status)
    assert done is not None
    assert (done["outcome"], done["iteration"], done["saveSeconds"]) == ("Committed", 37, 2.5)
    # A SIGTERM save made after the announcement answers it too (the pod was signalled first).
    status[contract.LAST_SAVE_REQUEST] = {
        "requestId": "sigterm-2-38",
        "outcome": "Failed",
        "message": "no time",
    }
    sigterm = preemption.last_preemption(first.ledger, status)
    assert sigterm is not None
    assert (sigterm["outcome"], sigterm["answeredBy"], sigterm["message"]) == (
        "Failed",
        "sigterm-2-38",
        "no time",
    )


def test_node_index_meets_pods_and_nodes_in_either_order() -> None:
    index = NodeIndex()
    ref = PodRef(uid="u-1", name="train-0", namespace="default", checkpoint="job", node="n1")
    assert index.pod_seen(ref) is None
    state = preemption_signals.node_state({"spec": {"unschedulable": True}})
    assert index.node_seen("n1", state) == [ref]
    later = PodRef(uid="u-2", name="train-1", namespace="default", checkpoint="job", node="n1")
    assert index.pod_seen(later) == state
    assert index.node_seen("n1", None) == []
    index.pod_gone("u-1")
    assert index.node_seen("n1", state) == [later]


def stats(
    durable: list[float] | None = None, stall: list[float] | None = None, step: float = 1.0
) -> dict[str, Any]:
    persistent: dict[str, Any] = {}
    if durable is not None:
        persistent["recentDurableSeconds"] = durable
    if stall is not None:
        persistent["recentStallSeconds"] = stall
    return {contract.SAVE_STATS: {"stepTimeSeconds": step, "persistent": persistent}}


@pytest.mark.parametrize(
    ("status", "grace", "expected"),
    [
        (stats(durable=[10.0, 12.0, 11.0]), 30, "True"),  # (12 + 1) * 1.2 + 5 = 20.6 <= 30
        (stats(durable=[10.0, 30.0]), 30, "False"),  # (30 + 1) * 1.2 + 5 = 42.2 > 30
        (stats(durable=[10.0, 30.0]), 60, "True"),
        (stats(stall=[20.0]), 30, "False"),  # no durations: the stalls stand in
        (stats(), 30, "Unknown"),
        ({}, 30, "Unknown"),
    ],
)
def test_preemption_safe(status: dict[str, Any], grace: int, expected: str) -> None:
    verdict = preemption_safe.judge(status, grace, grace_source="the job's pods")
    assert verdict.status == expected


def test_preemption_safe_says_what_to_change() -> None:
    verdict = preemption_safe.judge(
        stats(durable=[40.0] * 19 + [90.0], step=3.0), 30, grace_source="x"
    )
    # p95 of 20 samples by nearest rank is the 19th: 40 s, not the single 90 s outlier.
    assert verdict.needed_seconds == pytest.approx((40.0 + 3.0) * 1.2 + 5.0)
    assert verdict.reason == "SaveExceedsGracePeriod"
    assert "at least 57" in verdict.message and "nonPersistentType: local" in verdict.message
    unknown = preemption_safe.judge({}, 30, grace_source="x")
    assert unknown.reason == "NoMeasurements"
