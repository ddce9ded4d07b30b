"""``CheckpointWatch``: rank 0 follows its Checkpoint (spec, generation, annotations, status).

A daemon thread lists the one object (field selector ``metadata.name``), then watches it from the
list's ``resourceVersion`` through ``kubernetes.watch.Watch``, resuming from the last version seen
each time the server ends a stream. A ``410 Gone`` (the version left the server's window) means
re-list, at once. Any other failure (server away, connection cut, 5xx) means: back off
exponentially with jitter, log (bounded), re-list, watch again, so the snapshot converges however
the server came back (even with a history that no longer covers our last version).

The caller only ever reads :meth:`CheckpointWatch.snapshot`, an immutable
:class:`WatchedCheckpoint` swapped under a lock; it never raises and never waits on the network.
An API server that is away just leaves the snapshot stale. ``version`` counts changes of what a
job can act on (spec, generation, annotations, existence): status-only updates (the job's own
reports every few seconds) refresh ``status`` without bumping it, so consumers that agree on a
version across ranks are not woken by status churn. Torch-free.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

from cairn_agent.cluster._backoff import Backoff, FailureLog, describe
from cairn_agent.resource import contract

log = logging.getLogger(__name__)
_GONE = 410
_CONNECT_TIMEOUT_S = 5.0
_LIST_READ_TIMEOUT_S = 15.0
# A stream that ends this soon without an event counts as a failure (no busy reconnect loop
# against a server that closes watches at once).
_MIN_HEALTHY_STREAM_S = 1.0
_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


@dataclasses.dataclass(frozen=True, kw_only=True)
class WatchedCheckpoint:
    """The Checkpoint as rank 0 last saw it. Read-only: each snapshot owns its mappings."""

    version: int
    """Local counter from 1: +1 each time spec, generation, annotations or existence change."""
    exists: bool
    """False while the Checkpoint does not exist (never created, or deleted)."""
    spec: Mapping[str, Any]
    """``spec`` as stored (with the CRD's defaults applied by the server); empty if absent."""
    generation: int
    """``metadata.generation``: bumped by the server on every spec change; 0 if absent."""
    annotations: Mapping[str, str]
    """``metadata.annotations``."""
    status: Mapping[str, Any]
    """``status`` (both writers' keys), refreshed without bumping ``version``."""
    resource_version: str
    """``metadata.resourceVersion`` of this state (of the list, when the object is absent)."""
    uid: str
    """``metadata.uid``; a new one means the Checkpoint was deleted and created again."""

    @classmethod
    def of(cls, obj: Mapping[str, Any] | None, *, version: int, list_rv: str) -> Self:
        """The snapshot of ``obj`` (None: absent) numbered ``version``."""
        if obj is None:
            return cls(
                version=version,
                exists=False,
                spec=_EMPTY,
                generation=0,
                annotations=_EMPTY,
                status=_EMPTY,
                resource_version=list_rv,
                uid="",
            )
        meta = obj.get("metadata") or {}
        return cls(
            version=version,
            exists=True,
            spec=types.MappingProxyType(dict(obj.get("spec") or {})),
            generation=int(meta.get("generation") or 0),
            annotations=types.MappingProxyType(dict(meta.get("annotations") or {})),
            status=types.MappingProxyType(dict(obj.get("status") or {})),
            resource_version=str(meta.get("resourceVersion") or list_rv),
            uid=str(meta.get("uid") or ""),
        )

    def same_policy(self, other: WatchedCheckpoint) -> bool:
        """Whether both carry the same spec, generation, annotations and existence."""
        return (self.exists, self.uid, self.generation, self.spec, self.annotations) == (
            other.exists,
            other.uid,
            other.generation,
            other.spec,
            other.annotations,
        )


Callback = Callable[[WatchedCheckpoint], None]


class CheckpointWatch:
    """Follows Checkpoint ``namespace/name`` from a background daemon thread (rank 0 only).

    ``api`` may be shared with the ``StatusReporter``; it is never closed here. ``on_change`` is
    called on the watch thread with each snapshot whose ``version`` advanced; it must be quick,
    and what it raises is logged and dropped. ``watch_timeout_s`` is how long the server keeps
    one watch stream open (jittered); ``backoff_*`` pace reconnects after failures.
    """

    def __init__(
        self,
        api: ApiClient,
        namespace: str,
        name: str,
        *,
        on_change: Callback | None = None,
        watch_timeout_s: float = 300.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        if not namespace or not name:
            raise ValueError("CheckpointWatch needs the Checkpoint's namespace and name")
        if watch_timeout_s < 1:
            raise ValueError(f"watch_timeout_s={watch_timeout_s} must be at least 1 second")
        self._objects = CustomObjectsApi(api)
        self._namespace, self._name = namespace, name
        self._on_change = on_change
        self._watch_timeout = watch_timeout_s
        self._backoff = Backoff(initial_s=backoff_initial_s, max_s=backoff_max_s)
        self._failures = FailureLog(log, f"watching Checkpoint {namespace}/{name}")
        self._cond = threading.Condition()
        self._snapshot: WatchedCheckpoint | None = None
        self._synced = False
        self._stopping = threading.Event()
        self._watch = Watch()  # one per thread, reused for every stream
        # Private: the process-wide ``random`` belongs to the training script (its RNG state is
        # checkpointed); a background thread drawing from it would change what training draws.
        self._rng = random.Random()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_ref(cls, api: ApiClient, ref: str, **options: Any) -> Self:
        """A watch of ``<namespace>/<name>`` (the ``$CAIRN_CHECKPOINT`` form)."""
        namespace, name = contract.parse_checkpoint_ref(ref)
        return cls(api, namespace, name, **options)

    # --- the caller's side --------------------------------------------------------------------
    def start(self) -> Self:
        """Start the watch thread (once; later calls do nothing). Returns at once."""
        with self._cond:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"cairn-watch-{self._name}", daemon=True
                )
                self._thread.start()
        return self

    def snapshot(self) -> WatchedCheckpoint | None:
        """The latest state seen; None until the first successful list. Never blocks on I/O."""
        with self._cond:
            return self._snapshot

    @property
    def synced(self) -> bool:
        """True while the snapshot is current (listed and watching); False after a failure,
        until a re-list succeeds."""
        with self._cond:
            return self._synced

    def wait_for_version(
        self, after: int = 0, timeout: float | None = None
    ) -> WatchedCheckpoint | None:
        """Block until a snapshot with ``version > after`` exists; it, or None on timeout."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._snapshot is not None and self._snapshot.version > after, timeout
            )
            snap = self._snapshot
        return snap if snap is not None and snap.version > after else None

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread and wait up to ``timeout`` s for it; True once it has ended."""
        self._stopping.set()
        with self._cond:
            thread = self._thread
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        while thread is not None and thread.is_alive():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # Unblocks a read on an idle stream (shuts its socket down). Repeated: a stream that
            # was still connecting at the first call has its socket only now.
            self._watch.stop()
            thread.join(min(0.1, left))
        return True

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the watch thread ---------------------------------------------------------------------
    def _run(self) -> None:
        rv: str | None = None
        expired = False  # a 410 since the last stream that ended normally
        while not self._stopping.is_set():
            try:
                if rv is None:
                    rv = self._relist()
                rv = self._follow(rv)
                expired = False
            except ApiException as exc:
                rv = None
                if exc.status == _GONE and not expired:  # routine: re-list at once
                    expired = True
                    log.info("Checkpoint %s/%s: watch expired (410), re-listing", *self._key())
                    continue
                self._failed(describe(exc))  # includes 410 right after a re-list: back off
            except Exception as exc:  # noqa: BLE001 - a watch failure must never reach training
                rv = None
                self._failed(describe(exc))

    def _key(self) -> tuple[str, str]:
        return self._namespace, self._name

    def _failed(self, error: str) -> None:
        with self._cond:
            self._synced = False
        if self._stopping.is_set():
            return
        delay = self._backoff.next_delay()
        self._failures.failed(error, delay)
        self._stopping.wait(delay)

    def _selector(self) -> str:
        return f"metadata.name={self._name}"

    def _relist(self) -> str:
        """List the object; apply it (or its absence); the list's resourceVersion."""
        body = self._objects.list_namespaced_custom_object(
            contract.GROUP,
            contract.VERSION,
            self._namespace,
            contract.PLURAL,
            field_selector=self._selector(),
            _request_timeout=(_CONNECT_TIMEOUT_S, _LIST_READ_TIMEOUT_S),
        )
        listed: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
        items = listed.get("items") or []
        list_rv = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        found = next((i for i in items if isinstance(i, Mapping)), None)
        self._apply(found, list_rv)
        with self._cond:
            self._synced = True
        self._failures.succeeded()
        return list_rv

    def _follow(self, rv: str) -> str:
        """Watch from ``rv`` until the server ends the stream; the last resourceVersion seen."""
        started, events = time.monotonic(), 0
        for event in self._events(rv):
            obj = event.get("raw_object")
            if not isinstance(obj, Mapping):
                continue
            events += 1
            kind = event.get("type")
            seen = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
            if kind in ("ADDED", "MODIFIED"):
                self._apply(obj, seen)
            elif kind == "DELETED":
                self._apply(None, seen)
            rv = seen  # BOOKMARK events only move the version on
        if not events and time.monotonic() - started < _MIN_HEALTHY_STREAM_S:
            raise ConnectionError("the server ended the watch stream at once")
        self._backoff.reset()
        return rv

    def _events(self, rv: str) -> Iterator[dict[str, Any]]:
        if self._stopping.is_set():
            return iter(())
        timeout = int(self._watch_timeout * self._rng.uniform(1.0, 1.2))
        stream: Iterator[dict[str, Any]] = self._watch.stream(
            self._objects.list_namespaced_custom_object,
            contract.GROUP,
            contract.VERSION,
            self._namespace,
            contract.PLURAL,
            field_selector=self._selector(),
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,  # also keeps Watch from retrying a 410 itself
            # A read timeout past the server's own end of the stream catches a dead connection.
            _request_timeout=(_CONNECT_TIMEOUT_S, timeout + 30.0),
        )
        return stream

    def _apply(self, obj: Mapping[str, Any] | None, rv: str) -> None:
        """Install the new state; bump the version if a job could act on the difference."""
        with self._cond:
            previous = self._snapshot
            fresh = WatchedCheckpoint.of(obj, version=1, list_rv=rv)
            if previous is not None:
                bump = 0 if fresh.same_policy(previous) else 1
                fresh = dataclasses.replace(fresh, version=previous.version + bump)
            changed = previous is None or fresh.version != previous.version
            self._snapshot = fresh
            self._cond.notify_all()
        if changed and self._on_change is not None:
            try:
                self._on_change(fresh)
            except Exception:  # a consumer's bug must not end the watch
                log.exception("Checkpoint %s/%s: on_change callback failed", *self._key())
