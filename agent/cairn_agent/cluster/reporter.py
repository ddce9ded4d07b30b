"""``StatusReporter``: the training job's rank 0 reports checkpoint progress to its Checkpoint.

Every ``report_*`` call only updates an in-memory pending patch and returns at once; a daemon
thread sends it as a JSON merge patch to the ``status`` subresource, at most once per
``min_interval_s`` (newer values of a key replace older unsent ones). Only the agent's status
keys (``contract.AGENT_STATUS_KEYS``) are ever written, so the operator's keys are never
clobbered. Nothing here raises into training: failures are logged and the patch is retried with
the next send. ``savedIterations`` and ``corruptIterations`` are bounded and seeded from the
server on first use, so a restarted job keeps its predecessor's history. Torch-free, stdlib HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cairn_agent import contract
from cairn_agent.cluster.config import ApiConfig, load_api_config

log = logging.getLogger(__name__)
_TIMEOUT_S = 10.0
_RETRY_S = 5.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rfc3339(value: dt.datetime | str | None) -> str:
    if value is None:
        return _now()
    if isinstance(value, str):
        return value
    moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class StatusReporter:
    """Reports to ``status`` of the Checkpoint ``checkpoint_ref`` (``<namespace>/<name>``).

    Configuration, first match wins: ``api_url`` (no credentials, emulators), ``kubeconfig``,
    the in-cluster service account, ``$KUBECONFIG``. With no Checkpoint named (argument or
    ``$CAIRN_CHECKPOINT``) or no API found, the reporter is disabled and every call is a no-op.
    """

    def __init__(
        self,
        checkpoint_ref: str | None = None,
        *,
        api_url: str | None = None,
        kubeconfig: str | Path | None = None,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s={min_interval_s} must be >= 0")
        self._min_interval = min_interval_s
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[str, Any] = {}
        self._saved: dict[int, dict[str, Any]] = {}  # merged with the server's by _seed
        self._deleted: set[int] = set()
        self._corrupt: list[dict[str, Any]] = []
        self._in_flight = False
        self._force = False
        self._closing = False
        self._last_sent = float("-inf")
        self._thread: threading.Thread | None = None
        self._url, self._api = self._configure(checkpoint_ref, api_url, kubeconfig)

    # --- configuration ------------------------------------------------------------------------
    @staticmethod
    def _configure(
        ref: str | None, api_url: str | None, kubeconfig: str | Path | None
    ) -> tuple[str | None, ApiConfig | None]:
        ref = ref or os.environ.get(contract.ENV_CHECKPOINT)
        if not ref:
            log.info("status reporting disabled: %s is not set", contract.ENV_CHECKPOINT)
            return None, None
        try:
            namespace, name = contract.parse_checkpoint_ref(ref)
            api = load_api_config(api_url, kubeconfig)
        except (ValueError, OSError) as exc:  # a bad config must not stop training
            log.warning("status reporting disabled: %s", exc)
            return None, None
        if api is None:
            log.info("status reporting disabled: no Kubernetes API configuration found")
            return None, None
        path = (
            f"/apis/{contract.API_VERSION}/namespaces/{namespace}/{contract.PLURAL}/{name}/status"
        )
        return api.server.rstrip("/") + path, api

    @property
    def enabled(self) -> bool:
        """Whether reports go anywhere."""
        return self._url is not None

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
        entry: dict[str, Any] = {
            "iteration": int(iteration),
            "committedAt": _rfc3339(committed_at),
            "bytes": int(bytes),
            "files": int(files),
            "verified": bool(verified),
        }
        if manifest_digest:
            entry["manifestDigest"] = manifest_digest
        self._update(lambda: self._saved_patch(entry))

    def report_deleted(self, iterations: Iterable[int]) -> None:
        """Retention removed these iterations from disk."""
        gone = {int(i) for i in iterations}
        self._update(lambda: self._deleted_patch(gone))

    def report_save_phase(
        self,
        iteration: int | None,
        phase: str | None,
        started_at: dt.datetime | str | None = None,
        is_async: bool = False,
    ) -> None:
        """A save is in ``phase`` (one of ``contract.SAVE_PHASES``); None clears it."""
        if iteration is None or phase is None:
            self._update(lambda: {contract.SAVE_IN_PROGRESS: None})
            return
        if phase not in contract.SAVE_PHASES:
            log.warning(
                "ignoring unknown save phase %r (expected one of %s)", phase, contract.SAVE_PHASES
            )
            return
        value = {
            "iteration": int(iteration),
            "phase": phase,
            "startedAt": _rfc3339(started_at),
            "async": bool(is_async),
        }
        self._update(lambda: {contract.SAVE_IN_PROGRESS: value})

    def report_heartbeat(self, state: str, pid: int | None = None) -> None:
        """The async worker is alive and in ``state`` (e.g. Idle, Saving, Stopped)."""
        value = {
            "state": state,
            "heartbeatTime": _now(),
            "pid": int(pid if pid is not None else os.getpid()),
        }
        self._update(lambda: {contract.ASYNC_WORKER: value})

    def report_resume(self, iteration: int, source: str, generation: int) -> None:
        """The job resumed from ``iteration`` of tier ``source`` in restart ``generation``."""
        value = {
            "iteration": int(iteration),
            "source": source,
            "time": _now(),
            "generation": int(generation),
        }
        self._update(
            lambda: {contract.LAST_RESUME: value, contract.AGENT_GENERATION: int(generation)}
        )

    def report_corrupt(self, iteration: int, file: str, check: str) -> None:
        """Loading ``iteration`` failed a check on ``file``."""
        entry = {
            "iteration": int(iteration),
            "file": str(file),
            "check": str(check),
            "time": _now(),
        }
        self._update(lambda: self._corrupt_patch(entry))

    def published_resume_point(self) -> Mapping[str, Any] | None:
        """``status.resumeFrom`` as the operator published it; None if unset or unreachable.

        Blocking (one GET), meant for start-up. Never raises.
        """
        if not self.enabled:
            return None
        point = self._fetch_status().get(contract.RESUME_FROM)
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

    def _seed(self) -> None:
        """Merge the server's history under what this process reported (runs on the sender)."""
        status = self._fetch_status()
        with self._cond:
            for item in status.get(contract.SAVED_ITERATIONS) or ():
                it = item.get("iteration") if isinstance(item, Mapping) else None
                if isinstance(it, int) and it not in self._deleted:
                    self._saved.setdefault(it, dict(item))
            mine = {c["iteration"] for c in self._corrupt}
            old = [
                dict(c)
                for c in status.get(contract.CORRUPT_ITERATIONS) or ()
                if isinstance(c, Mapping) and c.get("iteration") not in mine
            ]
            self._corrupt = (old + self._corrupt)[-contract.MAX_CORRUPT_ITERATIONS :]
            for key in (contract.SAVED_ITERATIONS, contract.CORRUPT_ITERATIONS):
                if key in self._pending:
                    self._pending[key] = self._lists()[key]

    def _lists(self) -> dict[str, Any]:
        newest = sorted(self._saved)[-contract.MAX_SAVED_ITERATIONS :]
        self._saved = {it: self._saved[it] for it in newest}
        return {
            contract.SAVED_ITERATIONS: [self._saved[it] for it in newest],
            contract.CORRUPT_ITERATIONS: list(self._corrupt),
        }

    def _saved_patch(self, entry: dict[str, Any]) -> dict[str, Any]:
        self._saved[entry["iteration"]] = entry
        self._deleted.discard(entry["iteration"])
        saved = self._lists()[contract.SAVED_ITERATIONS]
        patch: dict[str, Any] = {
            contract.SAVED_ITERATIONS: saved,
            contract.LATEST_COMMITTED: saved[-1]["iteration"],
            contract.LAST_SAVE_TIME: entry["committedAt"],
        }
        flight = self._pending.get(contract.SAVE_IN_PROGRESS) or {}
        if not flight or flight.get("iteration", -1) <= entry["iteration"]:
            patch[contract.SAVE_IN_PROGRESS] = None
        return patch

    def _deleted_patch(self, gone: set[int]) -> dict[str, Any]:
        self._deleted |= gone
        for it in gone:
            self._saved.pop(it, None)
        return {contract.SAVED_ITERATIONS: self._lists()[contract.SAVED_ITERATIONS]}

    def _corrupt_patch(self, entry: dict[str, Any]) -> dict[str, Any]:
        self._corrupt = [c for c in self._corrupt if c.get("iteration") != entry["iteration"]]
        self._corrupt = (self._corrupt + [entry])[-contract.MAX_CORRUPT_ITERATIONS :]
        return {contract.CORRUPT_ITERATIONS: list(self._corrupt)}

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
        self._seed()
        while (batch := self._next_batch()) is not None:
            ok = self._send(batch)
            with self._cond:
                self._in_flight = False
                self._last_sent = self._clock()
                if not ok and not self._closing:
                    # Newer values that arrived meanwhile win over the failed batch's.
                    self._pending = {**batch, **self._pending}
                    self._last_sent = self._clock() - self._min_interval + _RETRY_S
                self._cond.notify_all()

    def _request(self, method: str, payload: dict[str, Any] | None) -> Any:
        if self._api is None or self._url is None:
            raise ValueError("status reporting is disabled")
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self._url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/merge-patch+json")
        token = self._api.bearer()
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(
            req, timeout=_TIMEOUT_S, context=self._api.ssl_context()
        ) as resp:
            return json.loads(resp.read() or b"{}")

    def _send(self, batch: dict[str, Any]) -> bool:
        unknown = set(batch) - contract.AGENT_STATUS_KEYS
        if unknown:  # a programming error; the operator owns these keys
            log.error("not sending operator-owned status keys %s", sorted(unknown))
            batch = {k: v for k, v in batch.items() if k in contract.AGENT_STATUS_KEYS}
        try:
            self._request("PATCH", {"status": batch})
        except Exception as exc:  # noqa: BLE001 - any failure to report must not reach training
            log.warning("status report to %s failed (will retry): %s", self._url, exc)
            return False
        return True

    def _fetch_status(self) -> Mapping[str, Any]:
        try:
            body = self._request("GET", None)
        except Exception as exc:  # noqa: BLE001 - any failure to report must not reach training
            log.warning("could not read the current status (starting a fresh history): %s", exc)
            return {}
        status = body.get("status") if isinstance(body, Mapping) else None
        return status if isinstance(status, Mapping) else {}
