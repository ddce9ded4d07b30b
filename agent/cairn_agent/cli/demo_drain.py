"""The demo's step where the node under the training job is drained.

The job (generation 3) saves rarely, as large jobs do, so a preemption between two saves would
cost every step since the last one. The sandbox has no kubelet: the demo creates the Node and the
job's Pod itself (a finalizer stands in for the kubelet keeping a terminating pod until its
containers stopped), then plays the drain:

1. ``kubectl cordon``: the operator sees the job's node cordoned and publishes ``spec.saveNow``;
   the job commits a save of the step it reached at its next step boundary
   (``status.lastPreemption``);
2. the pod is deleted (the eviction of ``kubectl drain``) and, as the kubelet would, the demo
   sends SIGTERM to the job: its ranks agree to stop at the next boundary, save the step reached
   unless it is committed already, and exit 143;
3. the restarted job (generation 4) resumes from exactly that step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cairn_agent.cli.demo_cluster import (
    NAMESPACE,
    TRAIN_TIMEOUT_S,
    DemoCluster,
    TrainingJob,
    finish_training,
    start_training,
    wait_for,
)
from cairn_agent.errors import PreemptedExit
from cairn_agent.resource import contract

DRAIN_GENERATION = 3
RESTART_GENERATION = 4
RARE_INTERVAL = 100
"""``spec.save.interval`` for this step: saves are rare, so only the preemption's save helps."""
PACE_S = 0.2
LONG_RUN = 1_000
"""Steps generation 3 would train: it is stopped long before, by the drain."""
RESTART_STEPS = 3
"""Steps the restarted job trains after resuming (no periodic save falls in them)."""
TRAIN_FIRST_S = 1.5
"""How long the job trains between applying the spec and the drain (a few steps)."""
NODE, NEW_NODE = "demo-node-1", "demo-node-2"
POD, NEW_POD = "demo-train-0", "demo-train-1"
GRACE_S = 30
KUBELET_FINALIZER = "cairn.dev/demo-kubelet"
"""Keeps the deleted pod Terminating until the demo (the kubelet) saw the job exit."""
_STOPPED = re.compile(r"stopped at step (\d+) on SIGTERM")
_RESUMED = re.compile(r"resumed from iteration (\d+)")

Argv = Callable[[int], list[str]]
"""The training job's arguments for a run to the given step."""
Say = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class DrainOutcome:
    """What the drain step saw."""

    drain_saved: int
    """The iteration the job committed when asked at the cordon."""
    stopped_at: int
    """The step at which the job stopped on SIGTERM (and whose checkpoint it left)."""
    resumed_from: int
    """The iteration the restarted job resumed from."""


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}}


def training_pod(name: str, checkpoint: str, node_name: str) -> dict[str, Any]:
    """The job's pod as the operator sees it: its Checkpoint label, its node, its grace period."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {contract.LABEL_CHECKPOINT: checkpoint},
            "finalizers": [KUBELET_FINALIZER],
        },
        "spec": {
            "nodeName": node_name,
            "terminationGracePeriodSeconds": GRACE_S,
            "containers": [{"name": "train", "image": "cairn-demo-train"}],
        },
    }


def drain(cluster: DemoCluster, name: str, argv: Argv, say: Say) -> DrainOutcome:
    """The whole step: a job on a node, the drain, the final save, the resume."""
    _save_rarely(cluster, name, say)
    _place_pod(cluster, name, POD, NODE, say)
    job = _start_and_settle(cluster, name, argv)
    drain_saved = _cordon_and_save(cluster, name, say)
    stopped_at = _evict_and_stop(cluster, name, job, say)
    _place_pod(cluster, name, NEW_POD, NEW_NODE, say)
    resumed_from = _restart(cluster, name, argv, stopped_at, say)
    return DrainOutcome(drain_saved=drain_saved, stopped_at=stopped_at, resumed_from=resumed_from)


# --- before the drain ----------------------------------------------------------------------------
def _save_rarely(cluster: DemoCluster, name: str, say: Say) -> None:
    patch = {"spec": {"save": {"interval": RARE_INTERVAL}}}
    cluster.kubectl("patch", "ckpt", name, "--type", "merge", "-p", json.dumps(patch))
    say(
        f"the job now saves every {RARE_INTERVAL} steps, as large jobs do: without Cairn, a "
        "preemption between two saves costs every step since the last one"
    )


def _place_pod(cluster: DemoCluster, name: str, pod: str, node_name: str, say: Say) -> None:
    cluster.create(node(node_name))
    cluster.create(training_pod(pod, name, node_name))
    say(
        f"no kubelet in the sandbox: the demo stands in for it and creates Node {node_name} and "
        f"the job's Pod {pod} on it (label {contract.LABEL_CHECKPOINT}={name}, "
        f"terminationGracePeriodSeconds {GRACE_S})"
    )


def _start_and_settle(cluster: DemoCluster, name: str, argv: Argv) -> TrainingJob:
    """Start generation 3 and wait until it resumed and applies the current spec."""
    job = start_training(
        cluster,
        [*argv(LONG_RUN), "--pace", str(PACE_S)],
        generation=DRAIN_GENERATION,
        checkpoint=name,
        CAIRN_STATUS_MIN_INTERVAL_S="0.2",
        CAIRN_TERMINATION_GRACE_SECONDS=str(GRACE_S),
    )
    generation = int((cluster.checkpoint(name).get("metadata") or {}).get("generation") or 0)

    def running() -> bool | None:
        if job.proc.poll() is not None:
            raise RuntimeError(f"training exited {job.proc.returncode}:\n{job.log.read_text()}")
        status = cluster.status(name)
        resumed = (status.get(contract.LAST_RESUME) or {}).get("generation") == DRAIN_GENERATION
        applied = (status.get(contract.APPLIED_POLICY) or {}).get("observedGeneration")
        return True if resumed and applied == generation else None

    what = f"generation {DRAIN_GENERATION} to resume and apply spec generation {generation}"
    wait_for(what, running)
    job.show_new_lines(cluster.out)
    # Not a wait for anything: the job trains a few steps past its resume point before the drain.
    time.sleep(TRAIN_FIRST_S)
    return job


# --- the drain -----------------------------------------------------------------------------------
def _cordon_and_save(cluster: DemoCluster, name: str, say: Say) -> int:
    """Cordon the node; show the save request and the job's committed answer; its iteration."""
    cluster.kubectl("cordon", NODE)
    request = wait_for("the operator's spec.saveNow", lambda: _spec(cluster, name).get("saveNow"))
    say(f"the operator asked the job for a save at once: spec.saveNow = {json.dumps(request)}")
    last = wait_for(
        "the job to commit the requested save",
        lambda: _settled(_last_preemption(cluster, name), request["requestId"]),
    )
    if last.get("outcome") != "Committed":
        raise RuntimeError(f"the requested save was not committed: {dict(last)}")
    answer = cluster.status(name).get(contract.LAST_SAVE_REQUEST) or {}
    say(
        f"status.lastPreemption: {last['reason']} announced at {last['announcedAt']}, request "
        f"{last['requestId']}: iteration {last['iteration']} saved in {last['saveSeconds']}s "
        f"({last['outcome']}); status.lastSaveRequest answered {answer.get('requestId')}"
    )
    _wait_resume_from(cluster, name, int(last["iteration"]))
    cluster.kubectl("get", "ckpt")
    return int(last["iteration"])


def _evict_and_stop(cluster: DemoCluster, name: str, job: TrainingJob, say: Say) -> int:
    """Delete the pod and SIGTERM the job as the kubelet does; the step it stopped (and saved) at."""
    cluster.kubectl("delete", "pod", POD, "--wait=false")
    # The kubelet signals the containers when the pod is marked deleted; the demo waits for the
    # operator to have seen the deletion too, so that the job's answer comes after it.
    deleting = wait_for(
        "the operator to see the pod deleted", lambda: _announced(cluster, name, "PodDeleting")
    )
    say(
        f"the operator saw the pod deleted, a new preemption: save request "
        f"{deleting['requestId']}. The job answers whatever reaches its next step boundary "
        "first, this request or the SIGTERM, and saves a step at most once"
    )
    say(f"the kubelet (the demo) sends SIGTERM to the job; it has {GRACE_S}s before SIGKILL")
    os.kill(job.proc.pid, signal.SIGTERM)
    code = _wait_exit(job)
    lines = job.show_new_lines(cluster.out)
    stopped = [int(m.group(1)) for line in lines if (m := _STOPPED.search(line))]
    if code != PreemptedExit.CODE or not stopped:
        raise RuntimeError(
            f"training exited {code}, not stopped by SIGTERM:\n{job.log.read_text()}"
        )
    last = wait_for(
        f"status.lastPreemption to record the save of iteration {stopped[-1]}",
        lambda: _final(_last_preemption(cluster, name), stopped[-1]),
    )
    say(
        f"the job exited {code} at step {stopped[-1]}, its checkpoint committed: "
        f"status.lastPreemption {last['reason']} answered by {last.get('answeredBy')}, "
        f"iteration {last['iteration']} ({last['outcome']})"
    )
    cluster.kubectl(
        "patch", "pod", POD, "--type", "merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    _wait_resume_from(cluster, name, stopped[-1])
    cluster.kubectl("get", "ckpt")
    return stopped[-1]


def _wait_exit(job: TrainingJob) -> int:
    try:
        return job.proc.wait(timeout=TRAIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        job.stop()
        raise RuntimeError(f"the job did not stop after SIGTERM:\n{job.log.read_text()}") from None


def _restart(cluster: DemoCluster, name: str, argv: Argv, stopped_at: int, say: Say) -> int:
    job = start_training(
        cluster,
        argv(stopped_at + RESTART_STEPS),
        generation=RESTART_GENERATION,
        checkpoint=name,
    )
    lines = finish_training(cluster, job)
    resumed = [int(m.group(1)) for line in lines if (m := _RESUMED.search(line))]
    if resumed != [stopped_at]:
        raise RuntimeError(
            f"the restarted job did not resume from {stopped_at}; it printed {lines}"
        )
    say(
        f"the restarted job resumed from iteration {stopped_at}, the step the drained job had "
        "reached: no step lost"
    )
    return resumed[0]


# --- reading the Checkpoint ---------------------------------------------------------------------
def _spec(cluster: DemoCluster, name: str) -> Mapping[str, Any]:
    spec = cluster.checkpoint(name).get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _last_preemption(cluster: DemoCluster, name: str) -> Mapping[str, Any]:
    last = cluster.status(name).get(contract.LAST_PREEMPTION)
    return last if isinstance(last, Mapping) else {}


def _wait_resume_from(cluster: DemoCluster, name: str, iteration: int) -> None:
    """Wait until the operator publishes ``iteration`` as the resume point (the table shows it)."""

    def probe() -> bool | None:
        point = cluster.status(name).get(contract.RESUME_FROM)
        return True if isinstance(point, Mapping) and point.get("iteration") == iteration else None

    wait_for(f"status.resumeFrom = iteration {iteration}", probe)


def _announced(cluster: DemoCluster, name: str, reason: str) -> Mapping[str, Any] | None:
    last = _last_preemption(cluster, name)
    return last if last.get("reason") == reason else None


def _settled(last: Mapping[str, Any], request_id: str) -> Mapping[str, Any] | None:
    ours = last.get("requestId") == request_id
    return last if ours and last.get("outcome") in ("Committed", "Failed") else None


def _final(last: Mapping[str, Any], iteration: int) -> Mapping[str, Any] | None:
    done = last.get("outcome") == "Committed" and last.get("iteration") == iteration
    return last if done else None
