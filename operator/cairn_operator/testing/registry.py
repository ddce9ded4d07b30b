"""The resources the emulator serves: a core set of built-in kinds plus installed CRDs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kmock import ResourceInfo, resource

from cairn_operator.testing.schema import CrdVersion

_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, kw_only=True)
class Served:
    """One served resource and what the emulator must know to serve it like the API server."""

    group: str
    """API group ('' for core)."""
    version: str
    """API version name."""
    plural: str
    """Plural name used in URLs."""
    kind: str
    """Object kind."""
    namespaced: bool
    """Whether objects live in namespaces."""
    short_names: tuple[str, ...] = ()
    """Short names for kubectl."""
    status_subresource: bool = False
    """Whether ``/status`` is a separate subresource (isolation applies)."""
    crd: CrdVersion | None = None
    """The CRD version, for custom resources (schema, CEL, printer columns)."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> resource:
        return resource(self.group, self.version, self.plural)

    @property
    def label(self) -> str:
        """How the server names the resource in messages (``checkpoints.cairn.dev``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def info(self) -> ResourceInfo:
        """Discovery record for KMock's APIResourceList."""
        return ResourceInfo(
            kind=self.kind,
            singular=self.kind.lower(),
            namespaced=self.namespaced,
            verbs=set(_VERBS),
            shortnames=set(self.short_names),
            categories=set(self.crd.categories if self.crd else ()),
            subresources={"status"} if self.status_subresource else set(),
        )


CORE: tuple[Served, ...] = (
    Served(
        group="",
        version="v1",
        plural="namespaces",
        kind="Namespace",
        namespaced=False,
        short_names=("ns",),
        status_subresource=True,
    ),
    Served(
        group="",
        version="v1",
        plural="pods",
        kind="Pod",
        namespaced=True,
        short_names=("po",),
        status_subresource=True,
    ),
    Served(
        group="",
        version="v1",
        plural="nodes",
        kind="Node",
        namespaced=False,
        short_names=("no",),
        status_subresource=True,
    ),
    Served(
        group="", version="v1", plural="events", kind="Event", namespaced=True, short_names=("ev",)
    ),
    Served(
        group="",
        version="v1",
        plural="configmaps",
        kind="ConfigMap",
        namespaced=True,
        short_names=("cm",),
    ),
    Served(group="", version="v1", plural="secrets", kind="Secret", namespaced=True),
    Served(
        group="",
        version="v1",
        plural="persistentvolumeclaims",
        kind="PersistentVolumeClaim",
        namespaced=True,
        short_names=("pvc",),
        status_subresource=True,
    ),
    Served(
        group="",
        version="v1",
        plural="serviceaccounts",
        kind="ServiceAccount",
        namespaced=True,
        short_names=("sa",),
    ),
    Served(
        group="batch",
        version="v1",
        plural="jobs",
        kind="Job",
        namespaced=True,
        status_subresource=True,
    ),
    Served(
        group="coordination.k8s.io", version="v1", plural="leases", kind="Lease", namespaced=True
    ),
    Served(
        group="apiextensions.k8s.io",
        version="v1",
        plural="customresourcedefinitions",
        kind="CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        status_subresource=True,
    ),
)


def from_crd(version: CrdVersion) -> Served:
    """The served resource of one CRD version."""
    return Served(
        group=version.group,
        version=version.version,
        plural=version.plural,
        kind=version.kind,
        namespaced=version.namespaced,
        short_names=version.short_names,
        status_subresource="status" in version.subresources,
        crd=version,
    )


def api_resource_list(group: str, version: str, served: list[Served]) -> dict[str, Any]:
    """``/api/v1`` or ``/apis/<group>/<version>``: the APIResourceList with each resource and its
    status subresource (which, as on the server, has no short names, so kubectl does not warn)."""
    resources: list[dict[str, Any]] = []
    for item in sorted(served, key=lambda s: s.plural):
        resources.append(
            {
                "name": item.plural,
                "singularName": item.kind.lower(),
                "namespaced": item.namespaced,
                "kind": item.kind,
                "verbs": list(_VERBS),
                "shortNames": list(item.short_names),
                "categories": list(item.crd.categories if item.crd else ()),
            }
        )
        if item.status_subresource:
            resources.append(
                {
                    "name": f"{item.plural}/status",
                    "singularName": "",
                    "namespaced": item.namespaced,
                    "kind": item.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def openapi_v3_root(served: list[Served]) -> dict[str, Any]:
    """``/openapi/v3``: one document per group-version (kubectl reads it before ``apply``)."""
    paths = {}
    for item in served:
        gv = f"apis/{item.group}/{item.version}" if item.group else f"api/{item.version}"
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}"}
    return {"paths": paths}


def openapi_v3_group(served: list[Served]) -> dict[str, Any]:
    """An OpenAPI v3 document for one group-version: each kind's schema (custom resources) with
    its ``x-kubernetes-group-version-kind``, and the object paths declaring the
    ``fieldValidation`` query parameter so kubectl leaves field validation to the server."""
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for item in served:
        name = f"{item.group or 'core'}.{item.version}.{item.kind}"
        gvk = [{"group": item.group, "version": item.version, "kind": item.kind}]
        body = (
            dict(item.crd.schema)
            if item.crd
            else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        )
        schemas[name] = {**body, "x-kubernetes-group-version-kind": gvk}
        prefix = f"/apis/{item.group}/{item.version}" if item.group else f"/api/{item.version}"
        ns = "/namespaces/{namespace}" if item.namespaced else ""
        operation = {
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
            ],
            "x-kubernetes-group-version-kind": gvk[0],
            "responses": {"200": {"description": "OK"}},
        }
        paths[f"{prefix}{ns}/{item.plural}/{{name}}"] = {
            verb: {**operation, "x-kubernetes-action": verb}
            for verb in ("get", "put", "patch", "delete")
        }
        paths[f"{prefix}{ns}/{item.plural}"] = {
            "post": {**operation, "x-kubernetes-action": "post"},
            "get": {**operation, "x-kubernetes-action": "list"},
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
