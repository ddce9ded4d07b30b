"""The operator's pure reconcile functions: decisions from spec and agent status, no I/O."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cairn_agent.resource.times import format_time
from cairn_operator.reconcile import conditions, gc_job, restarts
from cairn_operator.reconcile.health import assess_health
from cairn_operator.reconcile.resume_point import choose_resume_point
from cairn_operator.reconcile.retention_plan import job_active, plan_for
from cairn_operator.reconcile.spec import read_spec
from cairn_operator.reconcile.validation import validate

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "storage": {"persistent": {"claimName": "p", "mountPath": "/c", "path": "/c/run"}}
    }
    body.update(overrides)
    return body


def saved(*items: tuple[int, bool], **status: Any) -> dict[str, Any]:
    entries = [{"iteration": it, "verified": ok, "bytes": 10} for it, ok in items]
    return {"savedIterations": entries, **status}


def ago(seconds: float) -> str:
    return format_time(NOW - dt.timedelta(seconds=seconds))


# --- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"replication": {"factor": 2}}, "storage.local.path is not set"),
        ({"save": {"nonPersistentType": "local"}}, "nonPersistentType=local"),
        ({"save": {"interval": 100}, "retention": {"keepEvery": 250}}, "keepEvery=250"),
        ({"asyncWorker": {"enabled": True}, "retention": {"keepLast": 1}}, "keepLast=1"),
    ],
)
def test_cross_field_errors_say_what_to_change(overrides: dict[str, Any], needle: str) -> None:
    result = validate(read_spec(spec(**overrides)))
    assert len(result.errors) == 1 and needle in result.errors[0]


def test_valid_spec_with_warnings() -> None:
    view = read_spec(
        spec(
            save={"interval": 100, "nonPersistentInterval": 100},
            retention={"keepEvery": 1000, "pinned": [150, 200]},
            storage={
                "persistent": {"claimName": "p", "mountPath": "/c", "path": "/c/r"},
                "local": {"path": "/l"},
            },
            replication={"factor": 2},
        )
    )
    result = validate(view, saved=[100, 300])
    assert result.errors == ()
    assert any("[150]" in w and "multiples" in w for w in result.warnings)
    assert any("[150, 200]" in w and "not among" in w for w in result.warnings)
    assert any("nonPersistentInterval=100" in w for w in result.warnings)


# --- resume point -------------------------------------------------------------------------------
def test_latest_verified_then_fallback_past_corruption() -> None:
    view = read_spec(spec())
    status = saved((100, True), (200, True), (300, False))
    assert choose_resume_point(view, status).iteration == 200
    status["corruptIterations"] = [{"iteration": 200, "file": "f", "check": "size"}]
    decision = choose_resume_point(view, status)
    assert (decision.iteration, decision.fallback_from, decision.reason) == (
        100,
        200,
        "FallbackFromCorrupt",
    )
    assert decision.resume_from("/c/run") == {
        "iteration": 100,
        "path": "/c/run/iter_0000100",
        "source": "persistent",
        "reason": "FallbackFromCorrupt",
    }


def test_policies_and_empty_history() -> None:
    status = saved((100, True), (200, False))
    assert (
        choose_resume_point(read_spec(spec(resume={"policy": "LatestCommitted"})), status).iteration
        == 200
    )
    pinned = choose_resume_point(
        read_spec(spec(resume={"policy": "Pinned", "iteration": 100})), status
    )
    assert (pinned.iteration, pinned.reason) == (100, "Pinned")
    none = choose_resume_point(read_spec(spec()), {})
    assert none.iteration is None and none.resume_from("/c") is None
    unverified = choose_resume_point(read_spec(spec()), saved((5, False)))
    assert (unverified.iteration, unverified.reason) == (5, "NoVerifiedCheckpoint")


def test_pinned_retention_iteration_is_the_last_resort() -> None:
    view = read_spec(spec(retention={"pinned": [50]}))
    status = saved((100, True), corruptIterations=[{"iteration": 100, "file": "f", "check": "crc"}])
    assert choose_resume_point(view, status).iteration == 50
    status["corruptIterations"].append({"iteration": 50, "file": "f", "check": "crc"})
    assert choose_resume_point(view, status).reason == "NoValidCheckpoint"


# --- health -------------------------------------------------------------------------------------
def test_health_verdicts_with_injected_clock() -> None:
    view = read_spec(
        spec(asyncWorker={"enabled": True, "heartbeatTimeoutSeconds": 60, "saveStallSeconds": 300})
    )
    beat = {"asyncWorker": {"state": "Idle", "heartbeatTime": ago(30)}}
    assert assess_health(view, beat, now=NOW, job_running=None).reason == "Healthy"
    silent = {"asyncWorker": {"state": "Idle", "heartbeatTime": ago(61)}}
    assert assess_health(view, silent, now=NOW, job_running=True).reason == "AgentSilent"
    assert assess_health(view, silent, now=NOW, job_running=False).degraded is False
    stopped = {"asyncWorker": {"state": "Stopped", "heartbeatTime": ago(6100)}}
    assert assess_health(view, stopped, now=NOW, job_running=None).degraded is False
    stalled = {
        **beat,
        "saveInProgress": {"iteration": 7, "phase": "Writing", "startedAt": ago(301)},
    }
    verdict = assess_health(view, stalled, now=NOW, job_running=True)
    assert verdict.reason == "SaveStalled" and "iteration 7" in verdict.message
    # Messages name timestamps, not ages, so re-judging later writes nothing new.
    later = assess_health(view, stalled, now=NOW + dt.timedelta(seconds=5), job_running=True)
    assert later == verdict


# --- retention ----------------------------------------------------------------------------------
def test_plan_protects_resume_point_and_renders_the_same_policy_for_gc() -> None:
    view = read_spec(spec(retention={"keepLast": 2, "keepEvery": 1000, "pinned": [300]}))
    status = saved(
        *((it, True) for it in (100, 200, 300, 400, 1000, 1100, 1200)),
        latestCommittedIteration=1200,
    )
    plan = plan_for(view, status, resume_iteration=200)
    assert plan.plan.delete == (100, 400) and plan.protected == (200, 1200)
    assert plan.retained_bytes == 50
    assert gc_job.retention_command(view.path, view.retention, plan) == [
        "gc",
        "/c/run",
        "--keep-last",
        "2",
        "--keep-every",
        "1000",
        "--pin",
        "300",
        "--protect",
        "200",
        "1200",
    ]


def test_nothing_newer_than_the_commit_is_planned_while_saving() -> None:
    view = read_spec(spec(retention={"keepLast": 1}))
    status = saved(
        (1, True),
        (2, True),
        (3, False),
        latestCommittedIteration=2,
        saveInProgress={"iteration": 4, "phase": "Writing"},
    )
    assert 3 not in plan_for(view, status, resume_iteration=None).plan.delete


def test_job_is_active_while_pods_run_or_the_agent_is_alive() -> None:
    view = read_spec(spec())
    assert job_active(view, {}, now=NOW, pods_running=True)
    assert not job_active(view, {}, now=NOW, pods_running=False)
    assert job_active(
        view,
        {"asyncWorker": {"state": "Idle", "heartbeatTime": ago(5)}},
        now=NOW,
        pods_running=None,
    )
    assert not job_active(
        view,
        {"asyncWorker": {"state": "Stopped", "heartbeatTime": ago(5)}},
        now=NOW,
        pods_running=None,
    )
    assert job_active(view, {"saveInProgress": {"iteration": 1}}, now=NOW, pods_running=False)


# --- GC Job -------------------------------------------------------------------------------------
def test_job_names_are_deterministic_and_dns_safe() -> None:
    a = gc_job.job_name("x" * 80, "retention", ["gc", "/r", "--keep-last", "2"])
    assert a == gc_job.job_name("x" * 80, "retention", ["gc", "/r", "--keep-last", "2"])
    assert len(a) <= 63 and a.startswith("cairn-gc-x")
    assert a != gc_job.job_name("x" * 80, "retention", ["gc", "/r", "--keep-last", "3"])


def test_job_state() -> None:
    assert gc_job.job_state({}) == "Running"
    assert gc_job.job_state({"status": {"succeeded": 1}}) == "Succeeded"
    assert (
        gc_job.job_state({"status": {"conditions": [{"type": "Failed", "status": "True"}]}})
        == "Failed"
    )


# --- restarts ledger ----------------------------------------------------------------------------
def pod(uid: str, restarts_: int, *, phase: str = "Running", name: str = "p") -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, "name": name},
        "status": {"phase": phase, "containerStatuses": [{"restartCount": restarts_}]},
    }


def test_ledger_counts_each_restart_once() -> None:
    ledger = restarts.load_ledger(None)
    steps = [
        (pod("a", 0), False),
        (pod("a", 2), False),
        (pod("a", 2), False),
        (pod("a", 2), True),
        (pod("b", 0), False),
        (pod("b", 0), False),
    ]
    seen = []
    for body, deleted in steps:
        ledger, messages = restarts.record(
            ledger, restarts.observe_pod(body, deleted=deleted), now=NOW, max_pods=8
        )
        seen.append(len(messages))
        ledger = restarts.load_ledger(restarts.dump_ledger(ledger))  # survives a round trip
    assert seen == [0, 1, 0, 0, 1, 0]
    assert restarts.restart_count(ledger) == 3 and restarts.job_running(ledger) is True


def test_replacement_under_the_same_name_without_a_deleted_event() -> None:
    ledger = restarts.load_ledger(None)
    ledger, _ = restarts.record(
        ledger, restarts.observe_pod(pod("a", 0, name="w-0"), deleted=False), now=NOW, max_pods=8
    )
    ledger, messages = restarts.record(
        ledger, restarts.observe_pod(pod("b", 0, name="w-0"), deleted=False), now=NOW, max_pods=8
    )
    assert messages == ["pod w-0 replaced pod w-0"] and restarts.restart_count(ledger) == 1


def test_ledger_is_bounded_without_losing_the_count() -> None:
    ledger = restarts.load_ledger(None)
    for i in range(20):
        ledger, _ = restarts.record(
            ledger,
            restarts.observe_pod(pod(f"u{i}", 1, name=f"p{i}"), deleted=False),
            now=NOW,
            max_pods=4,
        )
    assert len(ledger["pods"]) == 4 and restarts.restart_count(ledger) == 20


def test_last_resumed_iteration_only_after_the_restart() -> None:
    ledger = {"base": 1, "last": ago(10), "pods": {}}
    assert "lastResumedIteration" not in restarts.restarts_status(
        ledger, {"iteration": 5, "time": ago(20)}
    )
    assert (
        restarts.restarts_status(ledger, {"iteration": 6, "time": ago(5)})["lastResumedIteration"]
        == 6
    )


# --- conditions ---------------------------------------------------------------------------------
def test_upsert_keeps_transition_time_while_status_holds() -> None:
    first = conditions.make_condition("Degraded", False, "Healthy", "ok", now=NOW, generation=1)
    later = conditions.make_condition(
        "Degraded", False, "Healthy", "ok", now=NOW + dt.timedelta(hours=1), generation=1
    )
    merged = conditions.upsert([first], later)
    assert merged[0]["lastTransitionTime"] == first["lastTransitionTime"]
    flipped = conditions.make_condition(
        "Degraded", True, "AgentSilent", "x", now=NOW + dt.timedelta(hours=1), generation=1
    )
    assert (
        conditions.upsert(merged, flipped)[0]["lastTransitionTime"] == flipped["lastTransitionTime"]
    )


def test_phase() -> None:
    invalid = [conditions.make_condition("Valid", False, "InvalidSpec", "x", now=NOW, generation=1)]
    assert conditions.derive_phase({}, invalid, False) == "Invalid"
    assert conditions.derive_phase({}, [], True) == "Deleting"
    assert conditions.derive_phase({"saveInProgress": {"iteration": 1}}, [], False) == "Saving"
    assert conditions.derive_phase({"latestCommittedIteration": 3}, [], False) == "Ready"
    assert conditions.derive_phase({}, [], False) == "Pending"
