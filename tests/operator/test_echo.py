"""The operator reconciles each change once: its own writes' echoes and events queued behind them
are skipped by resourceVersion (``reconcile.echo``), and every other writer is still seen."""

from __future__ import annotations

import time

from cairn_agent.cluster import StatusReporter
from cairn_operator.reconcile.echo import Watermarks, merge_patch, predicted, resource_version
from cairn_operator.run import RunningOperator
from cairn_operator.testing import Sandbox

from tests.operator.conftest import checkpoint, condition, get_when

KEY = ("default", "a")


def _obj(rv: str, **status: object) -> dict[str, object]:
    return {"metadata": {"name": "a", "resourceVersion": rv}, "spec": {}, "status": status}


def test_resource_versions_are_read_as_kep_5504_integers() -> None:
    assert resource_version(_obj("15")) == 15
    for text in ("0", "015", "12a", "", "-3"):
        assert resource_version(_obj(text)) is None


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    patch = {"a": {"b": None, "c": [3]}, "e": {"f": 2}}
    assert merge_patch(target, patch) == {"a": {"c": [3]}, "d": 1, "e": {"f": 2}}
    assert target == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_a_clean_write_covers_its_echo_and_what_queued_before_it() -> None:
    marks = Watermarks()
    seen = _obj("10", phase="Pending")
    assert not marks.covers(KEY, seen)
    write = {"status": {"phase": "Ready"}}
    answer = {**_obj("14", phase="Ready")}
    marks.wrote(KEY, seen, predicted(seen, write, finalizer=None), answer)
    assert marks.covers(KEY, _obj("12"))  # an agent write already contained in the answer
    assert marks.covers(KEY, answer)  # the echo
    assert not marks.covers(KEY, _obj("15"))  # anything newer


def test_a_write_another_writer_slipped_under_is_reconciled() -> None:
    marks = Watermarks()
    seen = _obj("10", phase="Pending")
    # The agent reported a save between the operator's read and its write.
    answer = _obj("14", phase="Ready", latestCommittedIteration=200)
    marks.wrote(KEY, seen, predicted(seen, {"status": {"phase": "Ready"}}, finalizer=None), answer)
    assert marks.covers(KEY, _obj("13"))
    assert not marks.covers(KEY, answer)


def test_opaque_resource_versions_are_always_reconciled() -> None:
    marks = Watermarks()
    seen = {"metadata": {"resourceVersion": "abc"}, "status": {}}
    marks.reconciled(KEY, seen)
    assert not marks.covers(KEY, seen)


def _count(op: RunningOperator, name: str, labels: dict[str, str] | None = None) -> float:
    return op.context.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def _cycles(op: RunningOperator) -> float:
    return _count(op, "cairn_operator_reconcile_duration_seconds_count", {"handler": "checkpoint"})


def _settled(op: RunningOperator) -> float:
    """The cycle count once it has not moved for a second (the health scanner's writes too)."""
    last, since = _cycles(op), time.monotonic()
    while time.monotonic() - since < 1.0:
        time.sleep(0.1)
        now = _cycles(op)
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_one_agent_change_costs_one_reconcile(sandbox: Sandbox, operator: RunningOperator) -> None:
    sandbox.create(checkpoint("a", save={"interval": 100}))
    get_when(sandbox, "a", lambda o: condition(o, "Degraded"))
    agent = StatusReporter("default/a", kubeconfig=sandbox.kubeconfig, min_interval_s=60)
    before = _settled(operator)
    skipped = _count(operator, "cairn_operator_checkpoint_events_skipped_total")
    agent.report_saved(100, bytes=10, files=2, manifest_digest="sha-100", verified=True)
    assert agent.flush()
    get_when(sandbox, "a", lambda o: (o["status"].get("resumeFrom") or {}).get("iteration") == 100)
    assert _settled(operator) == before + 1
    assert _count(operator, "cairn_operator_checkpoint_events_skipped_total") >= skipped + 1
    # A user's edit of an operator-owned field is someone else's write: it is reconciled back.
    sandbox.patch("checkpoints", "a", {"status": {"resumeFrom": None}}, subresource="status")
    get_when(sandbox, "a", lambda o: (o["status"].get("resumeFrom") or {}).get("iteration") == 100)
    agent.close()
