"""The emulator's object store: every write goes through the API server's rules here.

Synchronous on purpose: a write (read, check, store) runs without an ``await`` in between, so
concurrent requests on the emulator's event loop never interleave inside one. Each write returns
the watch events it caused; the emulator publishes them. Objects live in KMock's ``ObjectsArray``
(so ``emulator.objects[...]`` assertions keep working) with a bounded history per object.
"""

from __future__ import annotations

import collections
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

from kmock import KubernetesError, ObjectsArray, resource

from cairn_operator.testing import schema as crd_schema
from cairn_operator.testing import structural, writes
from cairn_operator.testing.registry import Served
from cairn_operator.testing.schema import CrdVersion

Event = dict[str, Any]
Key = tuple[Any, str | None, str]

# etcd's default request limit and the API server's cap on all annotations of one object.
MAX_OBJECT_BYTES = 1536 * 1024
MAX_ANNOTATION_BYTES = 256 * 1024

_NAMESPACES = resource(group="", version="v1", plural="namespaces")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _not_found(served: Served, name: str) -> KubernetesError:
    return KubernetesError(
        status=404,
        reason="NotFound",
        message=f'{served.label} "{name}" not found',
        details={"name": name, "group": served.group, "kind": served.plural},
    )


def _invalid(served: Served, name: str, errors: list[str]) -> KubernetesError:
    joined = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    causes = [
        {"reason": "FieldValueInvalid", "field": field, "message": rest.strip()}
        for field, _, rest in (e.partition(":") for e in errors)
    ]
    return KubernetesError(
        status=422,
        reason="Invalid",
        message=f'{served.kind}.{served.group or "core"} "{name}" is invalid: {joined}',
        details={"name": name, "group": served.group, "kind": served.kind, "causes": causes},
    )


class ObjectStore:
    """Objects of all served resources, written with the API server's semantics."""

    def __init__(self, objects: ObjectsArray, *, history_limit: int, event_limit: int) -> None:
        self.objects = objects
        self.history_limit = history_limit
        self.event_limit = event_limit
        self.resource_version = 1
        self._event_keys: collections.deque[Key] = collections.deque()
        self.before_store: (
            Callable[[Served, dict[str, Any] | None, dict[str, Any]], None] | None
        ) = None
        """Called with (resource, old, new) before each write is stored (new is {} on removal)."""
        self.served_of: Callable[[Any], Served | None] = lambda key: None
        """Finds the served resource of a stored key (for garbage collection of dependents)."""

    # --- reading -------------------------------------------------------------------------------

    def get(self, served: Served, namespace: str | None, name: str) -> dict[str, Any]:
        key = (served.key, namespace if served.namespaced else None, name)
        if key not in self.objects:
            raise _not_found(served, name)
        raw: dict[str, Any] = self.objects[key].raw
        return raw

    def select(
        self, served: Served, namespace: str | None, keep: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        found = []
        for (res, ns, _), obj in self.objects.items():
            if (
                res == served.key
                and (namespace is None or ns == namespace)
                and not obj.deleted
                and keep(obj.raw)
            ):
                found.append(obj.raw)
        return sorted(
            found, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"])
        )

    # --- writing -------------------------------------------------------------------------------

    def create(
        self, served: Served, namespace: str | None, body: Any, params: dict[str, str]
    ) -> tuple[dict[str, Any], list[Event]]:
        if not isinstance(body, dict):
            raise KubernetesError(
                status=400, reason="BadRequest", message="the body must be a JSON object"
            )
        namespace = self._namespace_for(served, namespace, body)
        name = self._name_for(served, namespace, body)
        if (served.key, namespace, name) in self.objects:
            raise KubernetesError(
                status=409,
                reason="AlreadyExists",
                message=f'{served.label} "{name}" already exists',
                details={"name": name, "group": served.group, "kind": served.plural},
            )
        obj = writes.prepare_create(
            body,
            namespace=namespace,
            name=name,
            resource_version=0,
            with_status=served.status_subresource,
        )
        obj["apiVersion"], obj["kind"] = served.api_version, served.kind
        obj = self._admit(served, obj, None, params)
        return obj, self._store(served, None, obj)

    def patch(
        self,
        served: Served,
        namespace: str | None,
        name: str,
        body: Any,
        content_type: str,
        subresource: str | None,
        params: dict[str, str],
    ) -> tuple[dict[str, Any], list[Event]]:
        stored = self.get(served, namespace, name)
        writes.check_resource_version(stored, body, label=f'{served.label} "{name}"')
        candidate = writes.apply_patch(stored, body, content_type, custom=served.crd is not None)
        return self._update(served, stored, candidate, subresource, params)

    def replace(
        self,
        served: Served,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None,
        params: dict[str, str],
    ) -> tuple[dict[str, Any], list[Event]]:
        stored = self.get(served, namespace, name)
        if not isinstance(body, dict):
            raise KubernetesError(
                status=400, reason="BadRequest", message="the body must be a JSON object"
            )
        sent_rv = body.get("metadata", {}).get("resourceVersion")
        if served.crd is not None and not sent_rv:
            # Custom resources allow no unconditional update (PUT without resourceVersion).
            raise _invalid(
                served,
                name,
                ["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"],
            )
        writes.check_resource_version(stored, body, label=f'{served.label} "{name}"')
        candidate = dict(body, apiVersion=served.api_version, kind=served.kind)
        return self._update(served, stored, candidate, subresource, params)

    def delete(
        self, served: Served, namespace: str | None, name: str
    ) -> tuple[dict[str, Any], list[Event]]:
        stored = self.get(served, namespace, name)
        if stored.get("metadata", {}).get("deletionTimestamp"):
            return stored, []
        if stored.get("metadata", {}).get("finalizers"):
            marked = writes.mark_deleted(stored, resource_version=self._next_rv())
            return marked, self._store(served, stored, marked)
        return stored, self._remove(served, stored)

    # --- internals -----------------------------------------------------------------------------

    def _update(
        self,
        served: Served,
        stored: dict[str, Any],
        candidate: Any,
        subresource: str | None,
        params: dict[str, str],
    ) -> tuple[dict[str, Any], list[Event]]:
        if not isinstance(candidate, dict):
            raise KubernetesError(
                status=422, reason="Invalid", message="the patched object is not an object"
            )
        if subresource == "status" and not served.status_subresource:
            raise _not_found(served, stored["metadata"]["name"])
        if served.status_subresource:
            candidate = writes.isolate_status(stored, candidate, subresource=subresource)
        updated = writes.finish_update(stored, candidate, resource_version=0)
        added = set(updated["metadata"].get("finalizers") or ()) - set(
            stored["metadata"].get("finalizers") or ()
        )
        if stored["metadata"].get("deletionTimestamp") and added:
            raise _invalid(
                served,
                stored["metadata"]["name"],
                [
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"
                ],
            )
        updated = self._admit(served, updated, stored, params)
        updated["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
        if updated == stored:
            return stored, []  # A no-op write is not stored: no new resourceVersion, no event.
        return updated, self._store(served, stored, updated)

    def _admit(
        self,
        served: Served,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        params: dict[str, str],
    ) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        if served.crd is not None:
            obj = self._admit_custom(served, served.crd, obj, old, params)
        errors = _metadata_errors(obj)
        if errors:
            raise _invalid(served, name, errors)
        size = len(json.dumps(obj))
        if size > MAX_OBJECT_BYTES:
            raise KubernetesError(
                status=413,
                reason="RequestEntityTooLarge",
                message=f"{served.label} {name!r} is {size} bytes; etcd's limit is {MAX_OBJECT_BYTES}",
            )
        return obj

    def _admit_custom(
        self,
        served: Served,
        crd: CrdVersion,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        params: dict[str, str],
    ) -> dict[str, Any]:
        schema = crd.schema
        strict = params.get("fieldValidation") == "Strict"
        unknown = (
            structural.pruned_paths(structural.drop_nulls(obj, schema), schema) if strict else []
        )
        if unknown:
            listed = ", ".join(f'unknown field "{path}"' for path in unknown)
            raise KubernetesError(
                status=400, reason="BadRequest", message=f"strict decoding error: {listed}"
            )
        normalized: dict[str, Any] = structural.normalize(obj, schema)
        errors = crd_schema.validate_object(normalized, crd, old)
        if errors:
            raise _invalid(served, obj["metadata"]["name"], errors)
        return normalized

    def _store(
        self, served: Served, old: dict[str, Any] | None, obj: dict[str, Any]
    ) -> list[Event]:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._next_rv())
        key = (served.key, meta.get("namespace") if served.namespaced else None, meta["name"])
        if self.before_store is not None:
            self.before_store(served, old, obj)  # before storing: KMock stores a copy
        if old is None:
            self.objects[key] = obj
        else:
            history = self.objects[key].history
            history.append(obj)
            del history[: -self.history_limit]
        events = [{"type": "ADDED" if old is None else "MODIFIED", "object": obj}]
        if writes.is_releasable(obj):
            events += self._remove(served, obj)
        if old is None and served.plural == "events":
            events += self._expire_events(served, key)
        return events

    def _remove(self, served: Served, obj: dict[str, Any]) -> list[Event]:
        meta = obj["metadata"]
        del self.objects[
            served.key, meta.get("namespace") if served.namespaced else None, meta["name"]
        ]
        gone = dict(obj, metadata=dict(meta, resourceVersion=str(self._next_rv())))
        if self.before_store is not None:
            self.before_store(served, obj, {})
        return [{"type": "DELETED", "object": gone}, *self._collect_dependents(meta.get("uid"))]

    def _collect_dependents(self, owner_uid: str | None) -> list[Event]:
        # The garbage collector deletes objects whose ownerReferences name a removed owner
        # (background propagation; done at once here). Dependents' finalizers are honoured.
        events: list[Event] = []
        dependents = [
            (key, obj.raw)
            for key, obj in self.objects.items()
            if owner_uid
            and not obj.deleted
            and any(
                ref.get("uid") == owner_uid
                for ref in obj.raw.get("metadata", {}).get("ownerReferences") or ()
            )
        ]
        for (res, namespace, name), _ in dependents:
            served = self.served_of(res)
            if served is not None and (res, namespace, name) in self.objects:
                events += self.delete(served, namespace, name)[1]
        return events

    def _expire_events(self, served: Served, key: Key) -> list[Event]:
        # Events expire on a real cluster (1 h TTL); here the oldest go beyond event_limit.
        self._event_keys.append(key)
        expired: list[Event] = []
        while len(self._event_keys) > self.event_limit:
            old_key = self._event_keys.popleft()
            if old_key in self.objects and not self.objects[old_key].deleted:
                expired += self._remove(served, self.objects[old_key].raw)
        return expired

    def _next_rv(self) -> int:
        self.resource_version += 1
        return self.resource_version

    def _namespace_for(
        self, served: Served, namespace: str | None, body: dict[str, Any]
    ) -> str | None:
        if not served.namespaced:
            return None
        in_body = body.get("metadata", {}).get("namespace")
        if namespace and in_body and in_body != namespace:
            raise KubernetesError(
                status=400,
                reason="BadRequest",
                message="the namespace of the provided "
                "object does not match the namespace sent on the request",
            )
        chosen = namespace or in_body
        if not chosen:
            raise KubernetesError(
                status=400, reason="BadRequest", message="a namespace is required"
            )
        if self._namespace_missing(chosen):
            raise KubernetesError(
                status=404, reason="NotFound", message=f'namespaces "{chosen}" not found'
            )
        return str(chosen)

    def _namespace_missing(self, namespace: str) -> bool:
        return (_NAMESPACES, None, namespace) not in self.objects

    def _name_for(self, served: Served, namespace: str | None, body: dict[str, Any]) -> str:
        meta = body.get("metadata") or {}
        if meta.get("name"):
            return str(meta["name"])
        if meta.get("generateName"):
            for _ in range(16):
                name = f"{meta['generateName']}{secrets.token_hex(3)[:5]}"
                if (served.key, namespace, name) not in self.objects:
                    return name
        raise _invalid(
            served, "", ["metadata.name: Required value: name or generateName is required"]
        )


def _metadata_errors(obj: dict[str, Any]) -> list[str]:
    meta = obj.get("metadata", {})
    errors = []
    name = str(meta.get("name", ""))
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        errors.append(
            f"metadata.name: Invalid value: {json.dumps(name)}: a lowercase RFC 1123 subdomain "
            "must consist of lower case alphanumeric characters, '-' or '.'"
        )
    annotations = meta.get("annotations") or {}
    size = sum(len(k) + len(str(v)) for k, v in annotations.items())
    if size > MAX_ANNOTATION_BYTES:
        errors.append(
            f"metadata.annotations: Too long: must have at most {MAX_ANNOTATION_BYTES} bytes"
        )
    return errors
