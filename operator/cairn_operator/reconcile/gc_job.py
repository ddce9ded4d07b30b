"""The batch/v1 Job that runs ``cairn gc`` on a Checkpoint's PVC, and how to read its outcome.

Job names are deterministic (a digest of the purpose and the exact command), so a restarted
operator re-deriving the same plan finds the same Job (HTTP 409 on create) instead of starting a
second one. GC pods carry ``cairn.dev/gc-for``, never ``cairn.dev/checkpoint``: they are not
training pods and must not count as restarts or as a running job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from cairn_agent.resource import contract
from cairn_agent.resource.retention import StatusPlan, gc_options
from cairn_agent.resource.spec import RetentionSpec
from cairn_agent.storage.retention.arguments import to_arguments

LABEL_GC_FOR = f"{contract.GROUP}/gc-for"
LABEL_PURPOSE = f"{contract.GROUP}/gc-purpose"
VOLUME_NAME = "checkpoints"
JobState = Literal["Running", "Succeeded", "Failed"]
_MAX_NAME = 63


def retention_command(
    path: str, retention: RetentionSpec, view: StatusPlan, *, deep: bool = False
) -> list[str]:
    """``cairn gc`` arguments that apply ``retention`` to the root with the plan's protections
    (``--deep`` when ``spec.verification.deep``)."""
    return to_arguments(path, gc_options(retention, view, deep=deep))


def job_name(checkpoint: str, purpose: str, command: Sequence[str]) -> str:
    """``cairn-gc-<name>-<digest>``, at most 63 characters, stable for the same command."""
    digest = hashlib.sha256(json.dumps([purpose, *command]).encode()).hexdigest()[:10]
    prefix = f"cairn-gc-{checkpoint}"[: _MAX_NAME - len(digest) - 1].rstrip("-.")
    return f"{prefix}-{digest}"


def build_gc_job(
    *,
    name: str,
    namespace: str,
    checkpoint: str,
    owner_uid: str | None,
    purpose: str,
    claim_name: str,
    mount_path: str,
    command: Sequence[str],
    image: str,
    service_account: str | None = None,
    backoff_limit: int = 2,
    ttl_seconds: int | None = None,
) -> dict[str, Any]:
    """The Job manifest; ``owner_uid`` makes the Checkpoint its owner (None for clean-up Jobs)."""
    labels = {LABEL_GC_FOR: checkpoint, LABEL_PURPOSE: purpose}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "gc",
                "image": image,
                "command": ["cairn", *command],
                "volumeMounts": [{"name": VOLUME_NAME, "mountPath": mount_path}],
            }
        ],
        "volumes": [{"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": claim_name}}],
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if owner_uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": contract.API_VERSION,
                "kind": contract.KIND,
                "name": checkpoint,
                "uid": owner_uid,
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    job_spec: dict[str, Any] = {
        "backoffLimit": backoff_limit,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if ttl_seconds is not None:
        job_spec["ttlSecondsAfterFinished"] = ttl_seconds
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def job_state(job: Mapping[str, Any]) -> JobState:
    """Succeeded / Failed from the Job's conditions or counters, else Running."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or ():
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if cond.get("status") == "True" and cond.get("type") in ("Failed", "FailureTarget"):
            return "Failed"
    if (status.get("succeeded") or 0) >= 1:
        return "Succeeded"
    return "Running"
