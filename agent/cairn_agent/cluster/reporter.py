"""``StatusReporter``: the training job's rank 0 reports checkpoint progress to its Checkpoint.

Every ``report_*`` call only updates an in-memory pending patch and returns at once; a daemon
thread sends it as a JSON merge patch to the ``status`` subresource through the official
``kubernetes`` client, at most once per ``min_interval_s`` (newer values of a key replace older
unsent ones). Only the agent's status keys (``contract.AGENT_STATUS_KEYS``) are ever written, so
the operator's keys are never clobbered. Nothing here raises into training: 409/429/5xx answers
are retried by the client's transport (``config.retry_policy``); any other failure is logged
(bounded) and the patch is resent with backoff. ``savedIterations`` and ``corruptIterations`` are
bounded and seeded from the server before the first patch, so a restarted job keeps its
predecessor's history. Torch-free.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient, CustomObjectsApi

from cairn_agent.cluster._backoff import Backoff, FailureLog, describe
from cairn_agent.cluster.config import new_api_client
from cairn_agent.cluster.status_history import StatusHistory
from cairn_agent.resource import contract
from cairn_agent.resource.status import (
    SAVE_PHASES,
    WORKER_STATES,
    AsyncWorker,
    CorruptIteration,
    LastResume,
    ResumeTier,
    SavedIteration,
    SaveInProgress,
    SavePhase,
    WorkerState,
    is_save_phase,
    is_worker_state,
)
from cairn_agent.resource.times import format_time, now_time

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
_TIMEOUT_S = (5.0, 10.0)  # (connect, read) per request
_RETRY_INITIAL_S = 1.0
_RETRY_MAX_S = 10.0


def _now() -> str:
    return now_time(fractional=True)


def _rfc3339(value: dt.datetime | str | None) -> str:
    if value is None:
        return _now()
    return value if isinstance(value, str) else format_time(value, fractional=True)


class StatusReporter:
    """Reports to ``status`` of the Checkpoint ``checkpoint_ref`` (``<namespace>/<name>``).

    The API: ``api_client`` if given (shared with the Checkpoint watcher, not closed here), else
    ``config.new_api_client(api_url, kubeconfig)``: ``api_url`` (no credentials, emulators),
    ``kubeconfig``, the in-cluster service account, ``$KUBECONFIG``, ``~/.kube/config``. With no
    Checkpoint named (argument or ``$CAIRN_CHECKPOINT``) or no API found, the reporter is
    disabled and every call is a no-op.
    """

    def __init__(
        self,
        checkpoint_ref: str | None = None,
        *,
        api_url: str | None = None,
        kubeconfig: str | Path | None = None,
        api_client: ApiClient | None = None,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s={min_interval_s} must be >= 0")
        self._min_interval = min_interval_s
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[str, Any] = {}
        self._history = StatusHistory()  # merged with the server's by _seed
        self._seeded = False
        self._in_flight = False
        self._force = False
        self._closing = False
        self._last_sent = float("-inf")
        self._thread: threading.Thread | None = None
        self._backoff = Backoff(initial_s=_RETRY_INITIAL_S, max_s=_RETRY_MAX_S)
        self._failures = FailureLog(log, "status report")
        self._owns_client = api_client is None
        self._target = self._configure(checkpoint_ref, api_url, kubeconfig, api_client)

    # --- configuration ------------------------------------------------------------------------
    @staticmethod
    def _configure(
        ref: str | None,
        api_url: str | None,
        kubeconfig: str | Path | None,
        api_client: ApiClient | None,
    ) -> tuple[CustomObjectsApi, str, str] | None:
        ref = ref or os.environ.get(contract.ENV_CHECKPOINT)
        if not ref:
            log.info("status reporting disabled: %s is not set", contract.ENV_CHECKPOINT)
            return None
        try:
            namespace, name = contract.parse_checkpoint_ref(ref)
            client = api_client or new_api_client(api_url, kubeconfig)
        except Exception as exc:  # noqa: BLE001 - a bad config must not stop training
            log.warning("status reporting disabled: %s", exc)
            return None
        if client is None:
            log.info("status reporting disabled: no Kubernetes API configuration found")
            return None
        return CustomObjectsApi(client), namespace, name

    @property
    def enabled(self) -> bool:
        """Whether reports go anywhere."""
        return self._target is not None

    @property
    def checkpoint_ref(self) -> str:
        """``<namespace>/<name>`` of the Checkpoint reported to ("" when disabled)."""
        return f"{self._target[1]}/{self._target[2]}" if self._target is not None else ""

    @property
    def api_client(self) -> ApiClient | None:
        """The API client reports go through (shared with the Checkpoint watch), if enabled."""
        return self._target[0].api_client if self._target is not None else None

    def report_fields(self, fields: Mapping[str, Any]) -> None:
        """Merge-patch agent-owned top-level status keys (``contract.AGENT_STATUS_KEYS``)."""
        unknown = set(fields) - contract.AGENT_STATUS_KEYS
        if unknown:
            raise ValueError(f"status keys {sorted(unknown)} are not the agent's to write")
        self._update(lambda: dict(fields))

    # --- public reports -----------------------------------------------------------------------
    def report_saved(
        self,
        iteration: int,
        committed_at: dt.datetime | str | None = None,
        bytes: int = 0,
        files: int = 0,
        manifest_digest: str | None = None,
        verified: bool = False,
    ) -> None:
        """A checkpoint of ``iteration`` was committed (tracker published)."""
        entry = SavedIteration(
            iteration=int(iteration),
            committed_at=_rfc3339(committed_at),
            bytes=int(bytes),
            files=int(files),
            manifest_digest=manifest_digest,
            verified=bool(verified),
        ).to_status()
        self._update(
            lambda: self._history.saved(entry, self._pending.get(contract.SAVE_IN_PROGRESS) or {})
        )

    def report_deleted(self, iterations: Iterable[int]) -> None:
        """Retention removed these iterations from disk."""
        gone = {int(i) for i in iterations}
        self._update(lambda: self._history.deleted(gone))

    def report_save_phase(
        self,
        iteration: int | None,
        phase: SavePhase | None,
        started_at: dt.datetime | str | None = None,
        is_async: bool = False,
    ) -> None:
        """A save is in ``phase`` (one of ``SAVE_PHASES``); None clears it."""
        if iteration is None or phase is None:
            self._update(lambda: {contract.SAVE_IN_PROGRESS: None})
            return
        if not is_save_phase(phase):  # a caller outside mypy's reach; the operator must not see it
            log.warning("ignoring unknown save phase %r (expected one of %s)", phase, SAVE_PHASES)
            return
        value = SaveInProgress(
            iteration=int(iteration),
            phase=phase,
            started_at=_rfc3339(started_at),
            is_async=bool(is_async),
        ).to_status()
        self._update(lambda: {contract.SAVE_IN_PROGRESS: value})

    def report_heartbeat(self, state: WorkerState, pid: int | None = None) -> None:
        """The async worker is alive and in ``state`` (one of ``WORKER_STATES``)."""
        if not is_worker_state(state):  # a caller outside mypy's reach
            log.warning(
                "ignoring unknown worker state %r (expected one of %s)", state, WORKER_STATES
            )
            return
        value = AsyncWorker(
            state=state,
            heartbeat_time=_now(),
            pid=int(pid if pid is not None else os.getpid()),
        ).to_status()
        self._update(lambda: {contract.ASYNC_WORKER: value})

    def report_resume(
        self,
        iteration: int,
        source: str,
        generation: int,
        tier: ResumeTier | None = None,
        reason: str | None = None,
    ) -> None:
        """The job resumed from ``iteration`` (found as ``source``, read from ``tier``) in
        restart ``generation``; ``reason`` says why a newer tier was passed over."""
        value = LastResume(
            iteration=int(iteration),
            source=source,
            time=_now(),
            generation=int(generation),
            tier=tier,
            reason=reason,
        ).to_status()
        self._update(
            lambda: {contract.LAST_RESUME: value, contract.AGENT_GENERATION: int(generation)}
        )

    def report_corrupt(self, iteration: int, file: str, check: str) -> None:
        """Loading ``iteration`` failed a check on ``file``."""
        entry = CorruptIteration(
            iteration=int(iteration), file=str(file), check=str(check), time=_now()
        ).to_status()
        self._update(lambda: self._history.corrupt(entry))

    def published_resume_point(self) -> Mapping[str, Any] | None:
        """``status.resumeFrom`` as the operator published it; None if unset or unreachable.

        Blocking (one GET), meant for start-up. Never raises.
        """
        status = self._fetch_status() if self.enabled else None
        point = status.get(contract.RESUME_FROM) if status is not None else None
        return point if isinstance(point, Mapping) else None

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Send what is pending now, ignoring the throttle; True when nothing is left unsent."""
        if not self.enabled:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._force = True
            self._cond.notify_all()
            while self._pending or self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush and stop the sender thread."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        stopped = self._thread is None or not self._thread.is_alive()
        if self._target is not None and self._owns_client and stopped:
            self._target[0].api_client.close()

    # --- state --------------------------------------------------------------------------------
    def _update(self, make: Callable[[], dict[str, Any]]) -> None:
        if not self.enabled:
            return
        try:
            with self._cond:
                self._pending.update(make())
                self._start_sender()
                self._cond.notify_all()
        except Exception:  # never raise into training; the report is lost, training goes on
            log.exception("status report dropped")

    def _seed(self) -> bool:
        """Merge the server's history under what this process reported (runs on the sender).

        False when the server could not be read: the caller must not patch the bounded lists
        yet, or the predecessor's history would be overwritten with this process's alone."""
        status = self._fetch_status()
        if status is None:
            return False
        with self._cond:
            self._history.merge_server(status)
            for key in (contract.SAVED_ITERATIONS, contract.CORRUPT_ITERATIONS):
                if key in self._pending:
                    self._pending[key] = self._history.lists()[key]
            self._seeded = True
        return True

    # --- sending ------------------------------------------------------------------------------
    def _start_sender(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._send_loop, name="cairn-status", daemon=True
            )
            self._thread.start()

    def _next_batch(self) -> dict[str, Any] | None:
        """Wait (holding the condition) until a batch may be sent; None when closing."""
        with self._cond:
            while True:
                if self._closing and not self._pending:
                    return None
                wait = self._last_sent + self._min_interval - self._clock()
                if self._pending and (wait <= 0 or self._force or self._closing):
                    batch, self._pending = self._pending, {}
                    self._in_flight, self._force = True, False
                    return batch
                self._cond.wait(wait if self._pending and wait > 0 else None)

    def _send_loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            first = not self._seeded
            ok = self._seeded or self._seed()
            if ok and first:
                batch = self._reseeded(batch)
            ok = ok and self._send(batch)
            with self._cond:
                self._in_flight = False
                self._last_sent = self._clock()
                if ok:
                    self._backoff.reset()
                elif not self._closing:
                    # Newer values that arrived meanwhile win over the failed batch's.
                    self._pending = {**batch, **self._pending}
                    retry_in = self._backoff.next_delay()
                    self._last_sent = self._clock() - self._min_interval + retry_in
                self._cond.notify_all()

    def _reseeded(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch`` with its bounded lists rebuilt over the history just seeded."""
        with self._cond:
            lists = self._history.lists()
        return {k: lists.get(k, v) for k, v in batch.items()}

    def _send(self, batch: dict[str, Any]) -> bool:
        unknown = set(batch) - contract.AGENT_STATUS_KEYS
        if unknown:  # a programming error; the operator owns these keys
            log.error("not sending operator-owned status keys %s", sorted(unknown))
            batch = {k: v for k, v in batch.items() if k in contract.AGENT_STATUS_KEYS}
        if self._target is None:
            return True
        api, namespace, name = self._target
        try:
            api.patch_namespaced_custom_object_status(
                contract.GROUP,
                contract.VERSION,
                namespace,
                contract.PLURAL,
                name,
                {"status": batch},
                _content_type=MERGE_PATCH,  # custom resources accept no strategic merge patch
                _request_timeout=_TIMEOUT_S,
            )
        except Exception as exc:  # noqa: BLE001 - any failure to report must not reach training
            self._failures.failed(f"patching {namespace}/{name}: {describe(exc)}")
            return False
        self._failures.succeeded()
        return True

    def _fetch_status(self) -> Mapping[str, Any] | None:
        """The Checkpoint's current status ({} if it has none); None when it cannot be read."""
        if self._target is None:
            return None
        api, namespace, name = self._target
        try:
            body = api.get_namespaced_custom_object(
                contract.GROUP,
                contract.VERSION,
                namespace,
                contract.PLURAL,
                name,
                _request_timeout=_TIMEOUT_S,
            )
        except Exception as exc:  # noqa: BLE001 - any failure to report must not reach training
            self._failures.failed(f"reading {namespace}/{name}: {describe(exc)}")
            return None
        status = body.get("status") if isinstance(body, Mapping) else None
        return status if isinstance(status, Mapping) else {}
