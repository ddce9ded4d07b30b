"""Which Checkpoint watch events carry nothing the operator has not already reconciled.

Every status write of the operator comes back on the watch as an event, and a busy job's writes
queue events faster than a loaded operator reads them. Reconciling either kind costs a whole
cycle and changes nothing (a stale event can even write outputs computed from old inputs, which
the next event then writes back). Resource versions settle it: since Kubernetes 1.35
(KEP-5504) the resourceVersions of one resource are positive integers that order its writes.

Per Checkpoint the operator keeps one watermark, the newest resourceVersion whose state needs
no reconcile: the last event it reconciled, or its own status write when the server's answer is
exactly the state predicted from the reconciled input (no other writer slipped in between). An
event at or below the watermark is skipped; when another writer did slip in, the watermark stops
just below the operator's write, so that write's event, which holds the other writer's change,
is reconciled. Any write by someone else (the agent, a user, the pod watchers' ledger, the
health scanner) has a newer resourceVersion and is reconciled as before. An API server with
resourceVersions that are not such integers gets no watermark: every event is reconciled.
Torch-free and kopf-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Key = tuple[str, str]
# What a reconcile reads or writes of the metadata; the rest changes on every write.
_METADATA_READ = (
    "uid",
    "generation",
    "deletionTimestamp",
    "annotations",
    "finalizers",
    "labels",
    "ownerReferences",
)


def resource_version(obj: Mapping[str, Any]) -> int | None:
    """``metadata.resourceVersion`` as the integer KEP-5504 defines, else None."""
    text = (obj.get("metadata") or {}).get("resourceVersion")
    if not isinstance(text, str) or not text.isdigit() or text.startswith("0"):
        return None
    return int(text)


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with a JSON merge patch (RFC 7386) applied; neither argument is modified."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def predicted(
    obj: Mapping[str, Any], patch: Mapping[str, Any], *, finalizer: str | None
) -> dict[str, Any]:
    """The object the server holds after ``patch`` and, if named, ``finalizer`` are written
    onto ``obj`` with nobody else writing."""
    after: dict[str, Any] = merge_patch(obj, patch)
    if finalizer is not None:
        meta = dict(after.get("metadata") or {})
        present = list(meta.get("finalizers") or [])
        if finalizer not in present:
            meta["finalizers"] = [*present, finalizer]
        after["metadata"] = meta
    return after


def same_state(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether a reconcile would read the same from ``a`` and ``b`` and write the same."""
    return _essence(a) == _essence(b)


def _essence(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = obj.get("metadata") or {}
    return (
        {k: meta[k] for k in _METADATA_READ if k in meta},
        obj.get("spec"),
        obj.get("status"),
    )


class Watermarks:
    """Per Checkpoint, the newest resourceVersion whose state needs no reconcile."""

    def __init__(self) -> None:
        self._through: dict[Key, int] = {}

    def covers(self, key: Key, obj: Mapping[str, Any]) -> bool:
        """True when ``obj`` is no newer than a state already reconciled (or written clean)."""
        version = resource_version(obj)
        mark = self._through.get(key)
        return version is not None and mark is not None and version <= mark

    def reconciled(self, key: Key, obj: Mapping[str, Any]) -> None:
        """``obj`` was reconciled and nothing needed writing."""
        self._raise(key, resource_version(obj))

    def wrote(
        self, key: Key, reconciled: Mapping[str, Any], expected: Mapping[str, Any], answer: Any
    ) -> None:
        """The reconcile of ``reconciled`` wrote; ``answer`` is the server's object after it,
        ``expected`` the state predicted from ``reconciled``."""
        written = resource_version(answer) if isinstance(answer, Mapping) else None
        if written is None:
            self._raise(key, resource_version(reconciled))
        elif same_state(expected, answer):
            self._raise(key, written)
        else:
            self._raise(key, written - 1)

    def forget(self, key: Key) -> None:
        """The Checkpoint is gone."""
        self._through.pop(key, None)

    def _raise(self, key: Key, version: int | None) -> None:
        if version is not None and version > self._through.get(key, 0):
            self._through[key] = version
