"""The demo's step where the SRE steers the running job with ``kubectl patch``.

The job (generation 2) trains at a visible pace; the SRE lowers the save interval and raises
retention on the Checkpoint; the job picks the edit up at its next step boundary, on every rank,
and says so in ``status.appliedPolicy``, which ``kubectl get ckpt`` shows as APPLIED-GEN beside
SPEC-GEN. The saved iterations before and after the edit show the new cadence.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cairn_agent.cli.demo_cluster import (
    DemoCluster,
    finish_training,
    start_training,
    wait_for,
)
from cairn_agent.resource import contract

LIVE_STEPS = 120
LIVE_PACE_S = 0.1
FIRST_SAVE = 60
"""The SRE edits once the job saved at its old cadence (generation 2 resumes at 50)."""
NEW_INTERVAL = 7
NEW_KEEP_LAST = 4


def _applied(cluster: DemoCluster, name: str) -> Mapping[str, Any]:
    applied = cluster.status(name).get(contract.APPLIED_POLICY)
    return applied if isinstance(applied, Mapping) else {}


def _generation(cluster: DemoCluster, name: str) -> int:
    return int((cluster.checkpoint(name).get("metadata") or {}).get("generation") or 0)


def _wait_applied(cluster: DemoCluster, name: str, generation: int) -> Mapping[str, Any]:
    def probe() -> Mapping[str, Any] | None:
        applied = _applied(cluster, name)
        return applied if applied.get("observedGeneration") == generation else None

    return wait_for(f"the job to apply spec generation {generation}", probe)


def steer_live(cluster: DemoCluster, name: str, argv: list[str], say: Any) -> list[int]:
    """Run generation 2, patch the spec mid-run, wait until the job applies it; saved steps."""
    job = start_training(
        cluster,
        [*argv, "--pace", str(LIVE_PACE_S)],
        generation=2,
        checkpoint=name,
        CAIRN_STATUS_MIN_INTERVAL_S="0.2",
    )
    before = _wait_applied(cluster, name, _generation(cluster, name))
    say(
        f"the running job applies spec generation {before.get('observedGeneration')}: save "
        f"every {before.get('values', {}).get('saveInterval')} steps (from "
        f"{before.get('sources', {}).get('saveInterval')}), keepLast "
        f"{before.get('values', {}).get('keepLast')}"
    )
    wait_for(
        f"the job to save iteration {FIRST_SAVE} at the old interval",
        lambda: (cluster.status(name).get(contract.LATEST_COMMITTED) or 0) >= FIRST_SAVE or None,
    )
    patch = {"spec": {"save": {"interval": NEW_INTERVAL}, "retention": {"keepLast": NEW_KEEP_LAST}}}
    cluster.kubectl("patch", "ckpt", name, "--type", "merge", "-p", json.dumps(patch))
    generation = _generation(cluster, name)
    after = _wait_applied(cluster, name, generation)
    say(
        f"the job applied generation {generation} at its next step boundary, on every rank: save "
        f"every {after.get('values', {}).get('saveInterval')} steps (from "
        f"{after.get('sources', {}).get('saveInterval')}), keepLast "
        f"{after.get('values', {}).get('keepLast')}; no restart"
    )
    cluster.kubectl("get", "ckpt")
    lines = finish_training(cluster, job)
    saved = _saved(lines)
    if not any(step % NEW_INTERVAL == 0 and step % 10 for step in saved):
        raise RuntimeError(f"no save at the new interval {NEW_INTERVAL} after the edit: {saved}")
    return saved


def _saved(lines: list[str]) -> list[int]:
    for line in reversed(lines):
        if ", saved [" in line:
            inside = line.rsplit("saved [", 1)[1].rstrip("]")
            return [int(x) for x in inside.split(",") if x.strip()]
    raise RuntimeError(f"the training job did not report its saves: {lines}")
