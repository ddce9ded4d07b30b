"""The cluster side of the preemption soak: an API sandbox, the operator, and the signals.

The sandbox (Checkpoint and Kueue ``Workload`` CRDs) and the operator run in the driver's
process. The sandbox has no kubelet: for an announced preemption the soak creates the job's Node
and Pod (and Workload) itself, plays the announcement (pod deletion, cordon, Evicted condition),
deletes the pod where the real cluster would, and sends SIGTERM to the ranks as the kubelet does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

from cairn_agent.resource import contract

Kind = Literal[
    "sigterm_every_rank",
    "sigterm_one_rank",
    "sigterm_async_in_flight",
    "pod_deleted",
    "node_cordoned",
    "workload_evicted",
]
KINDS: Final[tuple[Kind, ...]] = (
    "sigterm_every_rank",
    "sigterm_one_rank",
    "sigterm_async_in_flight",
    "pod_deleted",
    "node_cordoned",
    "workload_evicted",
)
ANNOUNCED: Final[frozenset[Kind]] = frozenset({"pod_deleted", "node_cordoned", "workload_evicted"})
NAME = "soak"
NAMESPACE = "default"
KUEUE_CRD = (
    Path(__file__).resolve().parent.parent / "tests/preemption/fixtures/kueue-workload-crd.yaml"
)
NOTICE_S = (0.2, 2.0)
"""Gap between a cordon or a Kueue eviction and the SIGTERM that follows it."""
ANNOUNCE_WAIT_S = 10.0
STAGING_WAIT_S = 10.0
_HOLD = "bench.cairn.dev/kubelet"
T = TypeVar("T")


def _poll(probe: Callable[[], T | None], timeout_s: float, every_s: float = 0.005) -> T | None:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


class Cluster:
    """The sandbox and the operator, running until the context exits."""

    def __init__(self, grace_s: int) -> None:
        self.grace_s = grace_s
        self._stack = contextlib.ExitStack()
        self.sandbox: Any = None

    def __enter__(self) -> Self:
        from cairn_operator.run import run_in_thread
        from cairn_operator.settings import OperatorSettings
        from cairn_operator.testing import Sandbox
        from cairn_operator.testing.schema import DEFAULT_CRD_PATH

        # The operator's per-preemption warnings would drown the soak's own lines.
        for name in ("kopf", "cairn_operator"):
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            crds = (DEFAULT_CRD_PATH, KUEUE_CRD)
            self.sandbox = self._stack.enter_context(Sandbox(crd_paths=crds))
            settings = OperatorSettings(health_interval_s=5.0)
            self._stack.enter_context(run_in_thread(self.sandbox.url, settings=settings))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def create_checkpoint(self, root: Path) -> None:
        """The job's Checkpoint: its root as persistent storage; the script picks sync/async."""
        self.sandbox.create(
            {
                "apiVersion": contract.API_VERSION,
                "kind": contract.KIND,
                "metadata": {"name": NAME, "namespace": NAMESPACE},
                "spec": {
                    "storage": {
                        "persistent": {
                            "claimName": "soak",
                            "mountPath": str(root),
                            "path": str(root),
                        }
                    },
                    "retention": {"keepLast": 3},
                },
            }
        )

    def job_env(self) -> dict[str, str]:
        return {
            contract.ENV_CHECKPOINT: f"{NAMESPACE}/{NAME}",
            "KUBECONFIG": str(self.sandbox.kubeconfig),
            "CAIRN_STATUS_MIN_INTERVAL_S": "0.2",
            "CAIRN_TERMINATION_GRACE_SECONDS": str(self.grace_s),
            "PYTHONWARNINGS": "ignore",
        }

    # --- the job's objects -------------------------------------------------------------------
    def place(self, index: int, kind: Kind) -> None:
        """Node and Pod (and Workload) of run ``index`` when its preemption is announced."""
        if kind not in ANNOUNCED:
            return
        self.sandbox.create(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{index}"}, "spec": {}}
        )
        labels = {contract.LABEL_CHECKPOINT: NAME}
        self.sandbox.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                # The finalizer keeps a deleted pod Terminating, as the kubelet does until the
                # containers exited (the operator sees its deletionTimestamp).
                "metadata": {"name": f"train-{index}", "labels": labels, "finalizers": [_HOLD]},
                "spec": {
                    "nodeName": f"node-{index}",
                    "terminationGracePeriodSeconds": self.grace_s,
                    "containers": [{"name": "train", "image": "trainer"}],
                },
            }
        )
        if kind == "workload_evicted":
            self.sandbox.create(
                {
                    "apiVersion": "kueue.x-k8s.io/v1beta1",
                    "kind": "Workload",
                    "metadata": {"name": f"job-{index}"},
                    "spec": {
                        "podSets": [
                            {
                                "name": "main",
                                "count": 2,
                                "template": {"metadata": {"labels": labels}},
                            }
                        ]
                    },
                }
            )

    def clean_up(self, index: int, kind: Kind) -> None:
        """The run exited: its pod goes (the kubelet confirmed the containers stopped)."""
        if kind in ANNOUNCED:
            self.sandbox.patch("pods", f"train-{index}", {"metadata": {"finalizers": None}})

    # --- the signals -------------------------------------------------------------------------
    def inject(
        self, kind: Kind, index: int, pids: list[int], root: Path, rng: random.Random
    ) -> dict[str, Any]:
        """Preempt run ``index`` by ``kind``; when SIGTERM went out, and what the cluster saw."""
        if kind == "sigterm_every_rank":
            return _sigterm(pids)
        if kind == "sigterm_one_rank":
            return _sigterm([rng.choice(pids)])
        if kind == "sigterm_async_in_flight":
            return _sigterm_in_flight(root, pids)
        return self._announced(kind, index, pids, rng)

    def _announced(
        self, kind: Kind, index: int, pids: list[int], rng: random.Random
    ) -> dict[str, Any]:
        before = self._save_now().get("requestId")
        started = time.monotonic()
        if kind == "pod_deleted":
            # The kubelet signals the containers as soon as the pod is marked deleted.
            self.sandbox.delete("pods", f"train-{index}")
            sent = _sigterm(pids)
            request = _poll(lambda: self._new_request(before), ANNOUNCE_WAIT_S)
            return {**sent, "announced": request is not None}
        if kind == "node_cordoned":
            self.sandbox.patch(
                "nodes", f"node-{index}", {"spec": {"unschedulable": True}}, namespace=None
            )
        else:
            evicted = {
                "type": "Evicted",
                "status": "True",
                "reason": "Preempted",
                "message": "Preempted to accommodate a higher priority Workload",
                "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self.sandbox.patch(
                "workloads",
                f"job-{index}",
                {"status": {"conditions": [evicted]}},
                subresource="status",
            )
        request = _poll(lambda: self._new_request(before), ANNOUNCE_WAIT_S)
        announce_s = time.monotonic() - started
        notice = rng.uniform(*NOTICE_S)
        time.sleep(max(0.0, notice - announce_s))
        saved = request is not None and self._answered(request)
        # Then the pods go (kubectl drain evicts them; Kueue stops the job), and the kubelet
        # sends SIGTERM.
        self.sandbox.delete("pods", f"train-{index}")
        return {
            **_sigterm(pids),
            "announced": request is not None,
            "announce_s": round(announce_s, 3),
            "notice_s": round(notice, 3),
            "saved_before_sigterm": saved,
        }

    def _save_now(self) -> dict[str, Any]:
        obj = self.sandbox.get(contract.PLURAL, NAME, NAMESPACE)
        return dict((obj.get("spec") or {}).get("saveNow") or {})

    def _new_request(self, before: Any) -> str | None:
        request = self._save_now().get("requestId")
        return str(request) if request and request != before else None

    def _answered(self, request: str) -> bool:
        obj = self.sandbox.get(contract.PLURAL, NAME, NAMESPACE)
        answer = (obj.get("status") or {}).get(contract.LAST_SAVE_REQUEST) or {}
        return bool(answer.get("requestId") == request and answer.get("outcome") == "Committed")


def _sigterm(pids: list[int]) -> dict[str, Any]:
    at, wall = time.monotonic(), time.time()
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    return {"sigterm_at": at, "sigterm_wall": wall, "signalled_ranks": len(pids)}


def _sigterm_in_flight(root: Path, pids: list[int]) -> dict[str, Any]:
    """SIGTERM as soon as an async save is staged, from the run's second save on: the first
    one also starts the persistent worker process (seconds), which is not what is measured."""
    first = _poll(lambda: _staged(root), STAGING_WAIT_S, every_s=0.001)
    gone = first is not None and _poll(lambda: _none_staged(root), STAGING_WAIT_S, 0.001)
    staged = _poll(lambda: _staged(root), STAGING_WAIT_S, every_s=0.001) if gone else None
    signalled = _sigterm(pids)
    # Watched now, not read from the final listing: by the time the run stops, later saves
    # may have let retention (keep last 3) delete the in-flight one after its commit.
    committed = staged is not None and _poll(
        lambda: _committed(root, staged), STAGING_WAIT_S, every_s=0.001
    )
    return {**signalled, "in_flight_iteration": staged, "in_flight_committed": bool(committed)}


def _committed(root: Path, iteration: int) -> bool | None:
    from cairn_agent.storage import layout

    return True if (root / layout.iteration_dir_name(iteration)).is_dir() else None


def _staged(root: Path) -> int | None:
    """The iteration of a save staged (written, not committed yet) in ``root``, if any."""
    from cairn_agent.storage import layout

    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return None
    for name in names:
        parsed = layout.parse_staging_dir_name(name)
        iteration = layout.parse_iteration_dir_name(parsed[0]) if parsed else None
        if iteration is not None:
            return iteration
    return None


def _none_staged(root: Path) -> bool | None:
    return None if _staged(root) is not None else True
