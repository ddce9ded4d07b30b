"""Kubernetes I/O of the operator, at the edge: the few API calls handlers make themselves.

Everything else (watching, status patches of the object being handled, finalizers, Events) goes
through kopf. These calls reuse kopf's authenticated session (its ``api`` client and credentials
vault, available inside handlers), so the operator logs in once, however it was configured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf
from cairn_agent.resource import contract

from cairn_operator._kopf_compat import api as kopf_api
from cairn_operator._kopf_compat import errors as kopf_errors

_MERGE = {"Content-Type": "application/merge-patch+json"}
# A single attempt: callers are handlers that kopf retries as a whole, idempotently.
_NO_RETRY: tuple[float, ...] = ()

Body = dict[str, Any]
Conflict = kopf_errors.APIConflictError
"""Raised by ``merge_patch`` when the patch's ``metadata.resourceVersion`` is stale."""


def checkpoint_url(namespace: str, name: str | None = None, *, status: bool = False) -> str:
    """URL path of a Checkpoint (or of the collection when ``name`` is None)."""
    base = f"/apis/{contract.API_VERSION}/namespaces/{namespace}/{contract.PLURAL}"
    if name is None:
        return base
    return f"{base}/{name}/status" if status else f"{base}/{name}"


def job_url(namespace: str, name: str | None = None) -> str:
    """URL path of a batch/v1 Job (or of the collection)."""
    base = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    return base if name is None else f"{base}/{name}"


async def get(
    url: str, *, settings: kopf.OperatorSettings, logger: logging.Logger | Any
) -> Body | None:
    """GET an object; None when it does not exist."""
    try:
        result: Body = await kopf_api.get(url, settings=settings, logger=logger)
    except kopf_errors.APINotFoundError:
        return None
    return result


async def merge_patch(
    url: str, patch: Mapping[str, Any], *, settings: kopf.OperatorSettings, logger: Any
) -> Body | None:
    """JSON-merge-patch an object; None when it is gone. 409 (stale resourceVersion) raises."""
    try:
        result: Body = await kopf_api.patch(
            url, payload=dict(patch), headers=dict(_MERGE), settings=settings, logger=logger
        )
    except kopf_errors.APINotFoundError:
        return None
    return result


async def set_finalizers(
    body: Mapping[str, Any], finalizers: list[str], *, settings: kopf.OperatorSettings, logger: Any
) -> Body | None:
    """Replace ``metadata.finalizers`` if the object is unchanged since ``body`` was read.

    A JSON patch guarded by a ``test`` of the resourceVersion: another controller's finalizer
    added meanwhile is never dropped. Returns the object after the write; None when the object
    changed or is gone (retry later).
    """
    meta = body.get("metadata") or {}
    url = checkpoint_url(meta.get("namespace", ""), meta.get("name", ""))
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
        {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
    ]
    try:
        result: Body = await kopf_api.patch(
            url,
            payload=ops,
            headers={"Content-Type": "application/json-patch+json"},
            settings=settings,
            logger=logger,
        )
    except (
        kopf_errors.APINotFoundError,
        kopf_errors.APIConflictError,
        kopf_errors.APIUnprocessableEntityError,
    ):
        return None
    return result


async def create_if_absent(
    url: str, body: Mapping[str, Any], *, settings: kopf.OperatorSettings, logger: Any
) -> tuple[Body, bool]:
    """POST ``body``; on 409 return the existing object. Returns (object, created)."""
    name = body["metadata"]["name"]
    try:
        created: Body = await kopf_api.post(
            url, payload=dict(body), backoffs=_NO_RETRY, settings=settings, logger=logger
        )
        return created, True
    except kopf_errors.APIConflictError:
        existing = await get(f"{url}/{name}", settings=settings, logger=logger)
        if existing is None:
            raise kopf.TemporaryError(f"{url}/{name} conflicts but cannot be read", delay=1)
        return existing, False


def object_ref(body: Mapping[str, Any]) -> dict[str, Any]:
    """A minimal Checkpoint body that ``kopf.event`` can address."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid") if k in meta},
    }
