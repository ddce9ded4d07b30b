"""``kubectl cairn describe`` shows whether a final save fits and the last preemption."""

from __future__ import annotations

from typing import Any

from cairn_agent.cli import kubectl_views
from cairn_agent.resource import contract
from cairn_agent.resource.times import parse_time


def _obj(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": "llama", "namespace": "default"},
        "spec": {"storage": {"persistent": {"claimName": "c", "mountPath": "/c", "path": "/c/l"}}},
        "status": status,
    }


def test_describe_shows_preemption_safety_and_the_last_preemption() -> None:
    now = parse_time("2026-03-01T12:05:00Z").timestamp()  # type: ignore[union-attr]
    status = {
        contract.CONDITIONS: [
            {
                "type": contract.COND_PREEMPTION_SAFE,
                "status": "False",
                "reason": "SaveExceedsGracePeriod",
                "message": "needs 42.2s; terminationGracePeriodSeconds is 30",
            }
        ],
        contract.LAST_PREEMPTION: {
            "reason": "NodeCordoned",
            "message": "node/w1 (running pod/llama-0) is cordoned",
            "announcedAt": "2026-03-01T12:00:00Z",
            "requestId": "preempt-node-w1-u1",
            "signals": ["NodeCordoned node/w1", "PodEvicted pod/llama-0"],
            "outcome": "Committed",
            "iteration": 4812,
            "saveSeconds": 11.4,
            "answeredBy": "sigterm-3-4812",
        },
    }
    text = kubectl_views.describe(_obj(status), now)
    section = text[text.index("Preemption:") :]
    assert "Safe:" in section and "False (SaveExceedsGracePeriod): needs 42.2s" in section
    assert "NodeCordoned: node/w1 (running pod/llama-0) is cordoned" in section
    assert "(5m ago)" in section
    assert "Committed iteration 4812 in 11.4s (answered by sigterm-3-4812)" in section
    assert "Preemption:" not in kubectl_views.describe(_obj({}), now)
