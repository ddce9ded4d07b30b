"""``kubectl cairn describe`` prints the very plan the operator publishes in ``status.retention``."""

from __future__ import annotations

import time

from cairn_agent.cli import kubectl_views
from cairn_agent.cluster import StatusReporter
from cairn_operator.run import RunningOperator
from cairn_operator.testing import Sandbox

from tests.operator.conftest import checkpoint, get_when


def _published(obj: dict[str, object]) -> bool:
    status = obj.get("status") or {}
    assert isinstance(status, dict)
    return bool(
        (status.get("retention") or {}).get("plannedDeletions") and status.get("resumeFrom")
    )


def test_describe_and_status_retention_agree(sandbox: Sandbox, operator: RunningOperator) -> None:
    policy = {"keepLast": 2, "keepEvery": 300, "pinned": [100]}
    sandbox.create(checkpoint("views", retention=policy, save={"interval": 100}))
    agent = StatusReporter("default/views", kubeconfig=sandbox.kubeconfig, min_interval_s=60)
    for it in range(100, 800, 100):
        agent.report_saved(it, bytes=it, files=1, verified=it != 700)
    # The newest verified one is corrupt: the resume point falls back to 500.
    agent.report_corrupt(600, "__0_0.distcp", "crc32 mismatch")
    agent.report_heartbeat("Idle", pid=7)
    assert agent.flush()

    obj = get_when(sandbox, "views", _published, what="status.retention and resumeFrom")
    plan = kubectl_views.retention_preview(obj)
    published = obj["status"]["retention"]

    assert obj["status"]["resumeFrom"]["iteration"] == 500
    assert list(plan.delete) == published["plannedDeletions"] == [200, 400]
    assert len(plan.keep) == published["retainedCount"] == 5
    assert sum(plan.keep) == published["retainedBytes"]
    table = kubectl_views.describe(obj, time.time()).split("Retention plan")[1].splitlines()[2:9]
    printed = {int(row.split()[0]): row.split()[1] for row in table}
    assert printed == {d.iteration: d.action for d in plan.decisions}
    assert "the resume point; newest verified checkpoint" in table[4]
    agent.close()
