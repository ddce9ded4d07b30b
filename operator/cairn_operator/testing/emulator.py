"""KMock's Kubernetes emulator, extended where a real API server differs and Cairn relies on it.

Shared by the tests and the ``cairn cluster`` sandbox. Additions over ``kmock.KubernetesEmulator``:

- **Bounded request log, direct dispatch.** KMock records every request and, for each new one,
  scans the whole log once per registered reaction, so it slows down as the log grows (34
  status patches/s after 200 requests, 7.6/s after 1000). Here the log keeps the last
  ``request_log_limit`` requests, user reactions (``emulator['get', ...] << 500``) are tried first
  and only they see the log; everything else is routed straight to the API-server logic below.
  A write answered by a user reaction (say, an injected 503) is not stored, as a failed request
  changes nothing on a real server (KMock stores it anyway).
- **Own URL parsing.** KMock cannot parse ``/api/v1/namespaces`` (cluster-scoped namespaces).
- **Write semantics** (``store``/``writes``): status-subresource isolation, server-owned metadata,
  ``resourceVersion`` on every write with optimistic concurrency (409), ``generation`` bumps,
  no-op writes not stored, JSON merge / JSON patch / PUT, 404 for a missing namespace.
- **Admission of custom resources**: pruning of unknown fields (400 with
  ``fieldValidation=Strict``, as kubectl sends), defaults, OpenAPI schema and CEL rules (422).
- **Finalizers and garbage collection**: DELETE sets ``deletionTimestamp`` while finalizers
  remain (none may be added then); removing the last one deletes the object (KMock does this too;
  it is re-implemented here with the other write rules). Dependents named by
  ``ownerReferences`` are deleted with their owner.
- **Limits**: 1.5 MiB per object (etcd), 256 KiB of annotations, 3 MiB request bodies.
- **Lists and watches**: ``kind``/``apiVersion`` in lists, a real list ``resourceVersion``, label
  and field selectors, watches that resume from a ``resourceVersion`` (410 when too old) and
  honour ``timeoutSeconds``.
- **kubectl**: discovery with short names and categories, ``/version`` of a current server,
  ``/openapi/v3`` for ``kubectl apply``, and the server-side Table of ``kubectl get``.
- **Built-in kinds**: namespaces, pods, events (expiring), configmaps, secrets, PVCs,
  service accounts, leases, batch/v1 jobs, and CRDs (installing one serves its resource).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp.web
import attrs
from kmock import KubernetesEmulator, KubernetesError, Request, method, resource

from cairn_operator.testing import _kmock_compat as compat
from cairn_operator.testing import registry, selectors, table
from cairn_operator.testing.registry import Served
from cairn_operator.testing.routes import Route, guess_action, parse_route
from cairn_operator.testing.schema import DEFAULT_CRD_PATH, crd_versions, load_crd
from cairn_operator.testing.store import Event, ObjectStore
from cairn_operator.testing.watch import WatchHub

_MAX_BODY_BYTES = 3 * 1024 * 1024
_SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-cairn-sandbox",
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@attrs.define(kw_only=True)
class CairnEmulator(KubernetesEmulator):
    """A Kubernetes API server emulator good enough for kopf, kubectl and Cairn's agent."""

    request_log_limit: int = 256
    """How many recent requests stay in ``emulator.requests`` (and its reactions' views)."""
    history_limit: int = 4
    """How many past versions each object keeps in ``emulator.objects[...].history``."""
    event_limit: int = 2000
    """How many Events are kept before the oldest expire."""
    watch_window: int = 4096
    """How many recent watch events a watch may resume from by ``resourceVersion``."""

    _served: dict[resource, Served] = attrs.field(factory=dict, init=False)
    _store: ObjectStore = attrs.field(init=False)
    _watches: WatchHub = attrs.field(init=False)
    _request_count: int = attrs.field(default=0, init=False)
    _observers: list[Callable[[Served, list[Event]], None]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._store = ObjectStore(
            self.objects, history_limit=self.history_limit, event_limit=self.event_limit
        )
        self._store.before_store = self._before_store
        self._store.served_of = self._served.get
        self._watches = WatchHub(self._store, compat.buses(self), window=self.watch_window)
        for served in registry.CORE:
            self.serve(served)
        self._store.create(
            self._served_for("", "v1", "namespaces"), None, {"metadata": {"name": "default"}}, {}
        )

    # --- public API ----------------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        """Requests served since start (the log keeps only the latest ``request_log_limit``)."""
        return self._request_count

    @property
    def store(self) -> ObjectStore:
        """The object store (synchronous reads for assertions; write over HTTP instead)."""
        return self._store

    @property
    def recent_requests(self) -> list[Request]:
        """The latest ``request_log_limit`` requests, oldest first (a copy)."""
        return compat.recent_requests(self)

    def observe(self, callback: Callable[[Served, list[Event]], None]) -> None:
        """Call ``callback(resource, events)`` after each stored write, on the emulator's loop:
        the hook of the controllers the sandbox runs (it must not block)."""
        self._observers.append(callback)

    async def patch_status(
        self, kind: tuple[str, str, str], namespace: str | None, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge ``status`` into an object's status, as a controller's status PATCH would;
        ``kind`` is ``(group, version, plural)``. None when the object is gone."""
        served = self._served_for(*kind)
        try:
            obj, events = self._store.patch(
                served,
                namespace,
                name,
                {"status": status},
                "application/merge-patch+json",
                "status" if served.status_subresource else None,
                {},
            )
        except KubernetesError as exc:
            if exc.status == 404:
                return None
            raise
        await self._publish(served, events)
        return obj

    async def _publish(self, served: Served, events: list[Event]) -> None:
        await self._watches.publish(served, events)
        if events:
            for callback in list(self._observers):
                callback(served, events)

    async def close_watches(self) -> None:
        """End all open watch streams; call before stopping the HTTP server, which waits for
        open responses to finish."""
        await self._watches.close_all()

    def serve(self, served: Served) -> None:
        """Serve a resource (discovery and CRUD)."""
        self._served[served.key] = served
        self.resources[served.key] = served.info()

    def install_crd(self, crd: dict[str, Any] | None = None) -> None:
        """Create a CRD object (as ``kubectl apply -f crd.yaml`` would) and serve its resource;
        by default the Checkpoint CRD of this repository."""
        crd = crd if crd is not None else load_crd(DEFAULT_CRD_PATH)
        body = {k: v for k, v in crd.items() if k != "status"}
        self._store.create(
            self._served_for("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
            None,
            body,
            {},
        )

    # --- HTTP entry point ----------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            request = await self._parse(raw_request)
            self._record(request)
            try:
                return await self._handle(request)
            except compat.StreamingError as exc:
                raw_response = exc.args[0]
                raise exc.__cause__ or exc
        except Exception as exc:  # noqa: BLE001 - the HTTP boundary: every failure becomes a response
            if not isinstance(exc, KubernetesError):
                # Unexpected failures are kept (bounded) for `emulator.errors` assertions.
                compat.record_error(self, exc, limit=self.request_log_limit)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(exc)
            await self._stream_error(exc, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _parse(self, raw_request: aiohttp.web.BaseRequest) -> Request:
        # aiohttp caps bodies at 1 MiB; the API server takes up to 3 MiB (etcd's limit then
        # applies to the stored object). aiohttp offers no public setter on a received request.
        raw_request._client_max_size = _MAX_BODY_BYTES
        body = await raw_request.read()
        try:
            data = await raw_request.json() if body else None
        except ValueError:
            data = None
        route = parse_route(raw_request.path)
        res = (
            None
            if route is None
            else resource(group=route.group, version=route.version, plural=route.plural)
        )
        action = guess_action(route, method(raw_request.method), dict(raw_request.query))
        return Request(
            id=self._request_count,
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=body,
            text=body.decode("utf-8", "replace"),
            action=action,
            resource=res,
            namespace=route.namespace if route else None,
            name=route.name if route else None,
            subresource=route.subresource if route else None,
        )

    def _record(self, request: Request) -> None:
        self._request_count += 1
        compat.record_request(self, request, limit=self.request_log_limit)

    async def _handle(self, request: Request) -> aiohttp.web.StreamResponse:
        answer = await compat.try_reactions(self, request, log_limit=self.request_log_limit)
        if answer is not None:
            return answer
        status, payload_value = await self._route(request)
        # Watch streams must say JSON, or kubectl refuses them (KMock streams octet-stream).
        headers = (
            {"Content-Type": "application/json"} if not isinstance(payload_value, dict) else None
        )
        response: aiohttp.web.StreamResponse = await compat.Response(
            status=status, payload=payload_value, headers=headers
        )(request)
        return response

    # --- routing -------------------------------------------------------------------------------

    async def _route(self, request: Request) -> tuple[int, Any]:
        route = parse_route(request.url.path)
        if route is None:
            return 200, await self._serve_static(request)
        if route.version is None:
            return 200, await self._serve_group(request)
        if route.plural is None:
            same = [
                s
                for s in self._served.values()
                if (s.group, s.version) == (route.group, route.version)
            ]
            if not same:
                raise KubernetesError(
                    status=404, reason="NotFound", message=f"{request.url.path} not found"
                )
            return 200, registry.api_resource_list(route.group, route.version, same)
        served = self._served_for(route.group, route.version, route.plural)
        method = request.method.value if request.method else "GET"
        if method == "GET" and request.params.get("watch") in ("true", "1"):
            as_table = table.wants_table(request.headers.get("Accept"))
            return 200, self._watches.stream(
                served, route.namespace, route.name, dict(request.params), as_table=as_table
            )
        if method == "GET":
            return 200, self._read(request, served, route)
        if method == "POST" and route.name is None:
            obj, events = self._store.create(
                served, route.namespace, request.data, dict(request.params)
            )
            await self._publish(served, events)
            return 201, obj
        if route.name is None:
            raise KubernetesError(
                status=405, reason="MethodNotAllowed", message=f"{method} on a collection"
            )
        return 200, await self._write(request, served, route, method)

    async def _write(
        self, request: Request, served: Served, route: Route, method: str
    ) -> dict[str, Any]:
        name, ns, sub = route.name or "", route.namespace, route.subresource
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "")
            obj, events = self._store.patch(
                served, ns, name, request.data, content_type, sub, dict(request.params)
            )
        elif method == "PUT":
            obj, events = self._store.replace(
                served, ns, name, request.data, sub, dict(request.params)
            )
        elif method == "DELETE":
            obj, events = self._store.delete(served, ns, name)
        else:
            raise KubernetesError(
                status=405, reason="MethodNotAllowed", message=f"{method} is not supported"
            )
        await self._publish(served, events)
        return obj

    def _read(self, request: Request, served: Served, route: Route) -> dict[str, Any]:
        accept = request.headers.get("Accept")
        if route.name is not None:
            obj = self._store.get(served, route.namespace, route.name)
            return (
                table.to_table([obj], self._columns(served), {})
                if table.wants_table(accept)
                else obj
            )
        keep = selectors.request_filter(dict(request.params))
        items = self._store.select(served, route.namespace, keep)
        meta = {"resourceVersion": str(self._store.resource_version)}
        if table.wants_table(accept):
            return table.to_table(items, self._columns(served), meta)
        return {
            "apiVersion": served.api_version,
            "kind": f"{served.kind}List",
            "metadata": meta,
            "items": items,
        }

    @staticmethod
    def _columns(served: Served) -> tuple[dict[str, Any], ...]:
        return served.crd.printer_columns if served.crd else ()

    async def _serve_static(self, request: Request) -> Any:
        path = request.url.path.rstrip("/") or "/"
        if path == "/version":
            return dict(_SERVER_VERSION)
        if path == "/openapi/v3":
            return registry.openapi_v3_root(list(self._served.values()))
        if path.startswith("/openapi/v3/"):
            gv = parse_route(path[len("/openapi/v3") :])
            same = [
                s
                for s in self._served.values()
                if gv and (s.group, s.version) == (gv.group, gv.version)
            ]
            if not same:
                raise KubernetesError(status=404, reason="NotFound", message=f"{path} not found")
            return registry.openapi_v3_group(same)
        if path == "/api":
            return await self._serve_api(request)
        if path == "/apis":
            return await self._serve_apis(request)
        if path == "/":
            return await self._serve_root(request)
        raise KubernetesError(
            status=404, reason="NotFound", message=f"the server could not find {path}"
        )

    def _served_for(self, group: str, version: str | None, plural: str) -> Served:
        served = self._served.get(resource(group=group, version=version, plural=plural))
        if served is None:
            raise KubernetesError(
                status=404,
                reason="NotFound",
                message=f"the server could not find the requested resource ({plural})",
            )
        return served

    # --- CRDs ----------------------------------------------------------------------------------

    def _before_store(
        self, served: Served, old: dict[str, Any] | None, new: dict[str, Any]
    ) -> None:
        if served.plural != "customresourcedefinitions":
            return
        if new:
            new["status"] = dict(
                new.get("status") or {},
                conditions=[
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                ],
            )
            for version in crd_versions(new):
                self.serve(registry.from_crd(version))
        elif old:
            for version in crd_versions(old):
                key = resource(group=version.group, version=version.version, plural=version.plural)
                self._served.pop(key, None)
                del self.resources[key]
