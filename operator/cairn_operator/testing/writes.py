"""How the API server turns a write request into the stored object (pure functions).

KMock merges every write into the stored dict. A real API server instead:

- applies the patch by its content type (JSON merge patch, JSON patch; strategic merge patch
  only for built-in kinds, answered as a merge patch here, 415 for custom resources);
- isolates the status subresource: writes to the main resource keep the stored ``.status``;
  writes to ``/status`` keep everything but ``.status``;
- owns the system metadata (uid, creationTimestamp, resourceVersion, generation,
  deletionTimestamp) whatever the client sends;
- bumps ``metadata.generation`` only when something outside ``metadata`` and ``status`` changed;
- rejects a write whose ``metadata.resourceVersion`` is not the stored one (409 Conflict).

Stored objects are never modified in place: every function here builds new dicts along the paths
it changes and shares the untouched subtrees (no deep copies on the hot path of status patches).
"""

from __future__ import annotations

import copy
import datetime
import uuid
from typing import Any

import jsonpatch
from kmock import KubernetesError

from cairn_operator.reconcile import echo

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_SYSTEM_METADATA = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "selfLink")


def now_rfc3339() -> str:
    """Current UTC time the way the API server writes timestamps (second precision, ``Z``)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: nulls delete keys, objects merge, everything else replaces.

    The operator's own implementation (it predicts what its writes make of an object), on a
    copy of the patch: the stored object must not share values with a request body.
    """
    return echo.merge_patch(target, copy.deepcopy(patch))


def apply_patch(stored: dict[str, Any], body: Any, content_type: str, *, custom: bool) -> Any:
    """The object after applying a PATCH body of the given content type; raises 415/422 as the
    server does for unsupported or malformed patches."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == JSON_PATCH:
        if not isinstance(body, list):
            raise KubernetesError(
                status=400, reason="BadRequest", message="JSON patch must be a list"
            )
        try:
            return jsonpatch.apply_patch(copy.deepcopy(stored), body)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc
    if kind == STRATEGIC_PATCH and custom:
        raise KubernetesError(
            status=415,
            reason="UnsupportedMediaType",
            message="strategic merge patch is not supported for custom resources; "
            "use --type=merge or --type=json",
        )
    if kind in (MERGE_PATCH, STRATEGIC_PATCH, "application/json", ""):
        if not isinstance(body, dict):
            raise KubernetesError(
                status=400, reason="BadRequest", message="merge patch must be an object"
            )
        return merge_patch(stored, body)
    raise KubernetesError(
        status=415,
        reason="UnsupportedMediaType",
        message=f"the patch type {kind!r} is not supported",
    )


def check_resource_version(stored: dict[str, Any], body: Any, *, label: str) -> None:
    """409 if the request carries a resourceVersion other than the stored one (optimistic
    concurrency); a request without one is unconditional."""
    sent = body.get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
    current = stored.get("metadata", {}).get("resourceVersion")
    if sent and str(sent) != str(current):
        raise KubernetesError(
            status=409,
            reason="Conflict",
            message=f"Operation cannot be fulfilled on {label}: the object has been modified; "
            "please apply your changes to the latest version and try again",
        )


def isolate_status(
    stored: dict[str, Any], candidate: dict[str, Any], *, subresource: str | None
) -> dict[str, Any]:
    """Apply the status-subresource rule to a candidate object (for kinds with ``/status``)."""
    if subresource == "status":
        result = dict(stored)
        if "status" in candidate:
            result["status"] = candidate["status"]
        else:
            result.pop("status", None)
        return result
    result = dict(candidate)
    if "status" in stored:
        result["status"] = stored["status"]
    else:
        result.pop("status", None)
    return result


def prepare_create(
    body: dict[str, Any],
    *,
    namespace: str | None,
    name: str,
    resource_version: int,
    with_status: bool,
) -> dict[str, Any]:
    """A new object as stored on creation: server-owned metadata set, status dropped for kinds
    with a status subresource (the server ignores it on create)."""
    obj = copy.deepcopy(body)
    if with_status:
        obj.pop("status", None)
    meta = obj.setdefault("metadata", {})
    for key in _SYSTEM_METADATA:
        meta.pop(key, None)
    meta["name"] = name
    if namespace is not None:
        meta["namespace"] = namespace
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now_rfc3339()
    meta["generation"] = 1
    meta["resourceVersion"] = str(resource_version)
    return obj


def finish_update(
    stored: dict[str, Any], candidate: dict[str, Any], *, resource_version: int
) -> dict[str, Any]:
    """The stored form of an updated object: identity and system metadata kept from the stored
    object, generation bumped on changes outside metadata and status, a new resourceVersion."""
    obj = dict(candidate)
    old_meta = stored.get("metadata", {})
    meta = obj["metadata"] = dict(obj.get("metadata") or {})
    for key in ("name", "namespace", *_SYSTEM_METADATA):
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)
    if _content(stored) != _content(obj):
        meta["generation"] = int(old_meta.get("generation", 1)) + 1
    meta["resourceVersion"] = str(resource_version)
    return obj


def mark_deleted(stored: dict[str, Any], *, resource_version: int) -> dict[str, Any]:
    """The object with a deletionTimestamp, as when a DELETE meets pending finalizers."""
    obj = dict(stored)
    meta = obj["metadata"] = dict(obj.get("metadata") or {})
    meta.setdefault("deletionTimestamp", now_rfc3339())
    meta.setdefault("deletionGracePeriodSeconds", 0)
    meta["resourceVersion"] = str(resource_version)
    return obj


def is_releasable(obj: dict[str, Any]) -> bool:
    """Whether a deleting object has no finalizers left and can be removed."""
    meta = obj.get("metadata", {})
    return bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
