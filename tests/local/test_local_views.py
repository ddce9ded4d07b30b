"""``kubectl cairn describe`` shows every tier: persistent, the node-local one, and the resume."""

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


def test_describe_shows_the_local_tier_and_the_tier_a_resume_read() -> None:
    now = parse_time("2026-03-01T12:05:00Z").timestamp()  # type: ignore[union-attr]
    status = {
        contract.LATEST_COMMITTED: 300,
        contract.LATEST_LOCAL: 340,
        contract.LOCAL_TIER: {
            "iteration": 340,
            "replicas": 1,
            "replicationFactor": 2,
            "nodes": ["node-0", "node-1"],
            "nodeCount": 2,
            "problem": "the parts of ranks [3] of local iteration 350 have no intact copy",
        },
        contract.LAST_RESUME: {
            "iteration": 340,
            "source": "non-persistent",
            "tier": "local",
            "time": "2026-03-01T12:00:00Z",
            "generation": 2,
            "reason": "local iteration 350 lost a part",
        },
    }
    text = " ".join(kubectl_views.describe(_obj(status), now).split())
    assert "Latest committed: 300" in text
    assert (
        "Latest local: iteration 340, 1/2 copies of each part on 2 node(s) (node-0, node-1); "
        "the parts of ranks [3] of local iteration 350 have no intact copy"
    ) in text
    assert "iteration 340 from non-persistent (local tier), 5m ago" in text
    assert "local iteration 350 lost a part" in text
