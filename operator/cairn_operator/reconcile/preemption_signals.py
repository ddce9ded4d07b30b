"""Save before preemption: reading the announcements of a job's end off cluster objects. Pure.

Each reader turns one object (a pod being deleted or evicted, a node cordoned or tainted
``NoExecute``, a Kueue ``Workload`` evicted, a Job or JobSet suspended) into a ``Signal`` with a
deterministic key, or None; ``reconcile.preemption`` turns signals into save requests and keeps
the ledger.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

from cairn_agent.resource import contract

from cairn_operator.reconcile.preemption import DEFAULT_GRACE_SECONDS, Signal, SignalReason

_FINISHED_PHASES: Final = frozenset({"Succeeded", "Failed"})
_WORKLOAD_CONDITIONS: Final[dict[str, SignalReason]] = {
    "Evicted": "WorkloadEvicted",
    "Preempted": "WorkloadPreempted",
}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _true_condition(obj: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == ctype and cond.get("status") == "True":
            return cond
    return None


def pod_signal(pod: Mapping[str, Any]) -> Signal | None:
    """A running pod being deleted or evicted (``DisruptionTarget``); None otherwise."""
    meta = _meta(pod)
    if (pod.get("status") or {}).get("phase") in _FINISHED_PHASES:
        return None  # a finished pod's deletion ends no training
    key, subject = f"pod-{meta.get('uid') or meta.get('name')}", f"pod/{meta.get('name')}"
    disruption = _true_condition(pod, "DisruptionTarget")
    if disruption is not None:
        why = disruption.get("reason") or "a disruption"
        return Signal(key=key, reason="PodEvicted", subject=subject, message=f"{subject}: {why}")
    if meta.get("deletionTimestamp"):
        return Signal(
            key=key,
            reason="PodDeleting",
            subject=subject,
            message=f"{subject} is being deleted",
        )
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeState:
    """Why a node announces the end of the pods on it."""

    reason: Literal["NodeCordoned", "NodeTainted"]
    detail: str


def node_state(node: Mapping[str, Any]) -> NodeState | None:
    """A node cordoned (``spec.unschedulable``) or tainted ``NoExecute``; None when neither."""
    spec = node.get("spec") or {}
    taints = [t for t in spec.get("taints") or () if isinstance(t, Mapping)]
    no_execute = [str(t.get("key")) for t in taints if t.get("effect") == "NoExecute"]
    if no_execute:
        return NodeState(reason="NodeTainted", detail="tainted NoExecute " + ",".join(no_execute))
    if spec.get("unschedulable"):
        return NodeState(reason="NodeCordoned", detail="cordoned")
    return None


def node_signal(node_name: str, state: NodeState, pod_uid: str, pod_name: str) -> Signal:
    """The node under one pod announces that pod's end (one key per pod and node)."""
    return Signal(
        key=f"node-{node_name}-{pod_uid}",
        reason=state.reason,
        subject=f"node/{node_name}",
        message=f"node/{node_name} (running pod/{pod_name}) is {state.detail}",
    )


def workload_signal(workload: Mapping[str, Any]) -> Signal | None:
    """A Kueue ``Workload`` with condition Evicted or Preempted True; None otherwise.

    The key holds the condition's transition time: a workload readmitted and evicted again is a
    new preemption."""
    meta = _meta(workload)
    for ctype, reason in _WORKLOAD_CONDITIONS.items():
        cond = _true_condition(workload, ctype)
        if cond is None:
            continue
        when = re.sub(r"[^0-9]", "", str(cond.get("lastTransitionTime") or ""))
        subject = f"workload/{meta.get('name')}"
        why = cond.get("reason") or ctype
        return Signal(
            key=f"kueue-{meta.get('uid') or meta.get('name')}-{when}",
            reason=reason,
            subject=subject,
            message=f"{subject} {ctype.lower()} by Kueue ({why}): {cond.get('message') or ''}",
        )
    return None


def suspended_signal(obj: Mapping[str, Any], reason: SignalReason) -> Signal | None:
    """A Job or JobSet with ``spec.suspend: true``; its generation tells suspensions apart."""
    if not (obj.get("spec") or {}).get("suspend"):
        return None
    meta = _meta(obj)
    kind = "jobset" if reason == "JobSetSuspended" else "job"
    subject = f"{kind}/{meta.get('name')}"
    return Signal(
        key=f"{kind}-{meta.get('uid') or meta.get('name')}-g{meta.get('generation') or 0}",
        reason=reason,
        subject=subject,
        message=f"{subject} was suspended",
    )


def _template_labels(templates: list[Any]) -> list[Mapping[str, Any]]:
    found = []
    for template in templates:
        labels = ((template or {}).get("metadata") or {}).get("labels")
        if isinstance(labels, Mapping):
            found.append(labels)
    return found


def checkpoint_of(obj: Mapping[str, Any]) -> str | None:
    """The Checkpoint a Workload, JobSet or Job belongs to: its own ``cairn.dev/checkpoint``
    label, else that of a pod template it carries (Kueue copies the job's pod templates into
    ``spec.podSets``; a JobSet has them under ``spec.replicatedJobs``)."""
    spec = obj.get("spec") or {}
    templates: list[Any] = [s.get("template") for s in spec.get("podSets") or ()]
    for replicated in spec.get("replicatedJobs") or ():
        templates.append(
            (((replicated or {}).get("template") or {}).get("spec") or {}).get("template")
        )
    templates.append(spec.get("template"))
    for labels in [_meta(obj).get("labels") or {}, *_template_labels(templates)]:
        value = labels.get(contract.LABEL_CHECKPOINT)
        if isinstance(value, str) and value:
            return value
    return None


def grace_seconds_of(pod: Mapping[str, Any]) -> int:
    """The pod's ``terminationGracePeriodSeconds`` (Kubernetes' default when unset)."""
    value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return value if isinstance(value, int) and value >= 0 else DEFAULT_GRACE_SECONDS
