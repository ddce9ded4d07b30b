"""The Helm chart: linted and rendered by Helm's own engine (helm-python-sdk), every rendered
manifest validated against Kubernetes' OpenAPI schemas (kubernetes-validate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cairn"
KUBE_VERSION = "1.33.0"
NAMESPACE = "cairn-system"
VARIANT = {
    "singleNamespace": True,
    "operator": {"quiet": True},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "commonLabels": {"team": "ml-infra"},
    "fullnameOverride": "ckpt-op",
    "nodeSelector": {"pool": "system"},
    "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
}


class _StrictLoader(yaml.SafeLoader):
    """Rejects duplicate mapping keys, as the API server's strict field validation does."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {duplicates}", node.start_mark
        )
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="cairn", namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".txt"):
            continue
        docs += [d for d in yaml.load_all(text, Loader=_StrictLoader) if d]
    return docs


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _validate_all(docs: list[dict[str, Any]]) -> list[str]:
    """Validate with the strict schemas; return the kinds that have no built-in schema."""
    unknown = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.append(doc["kind"])
    return unknown


def test_chart_crd_is_byte_identical_to_the_repository_crd() -> None:
    chart_copy = CHART / "crds" / "checkpoints.cairn.dev.yaml"
    assert chart_copy.read_bytes() == (REPO / "crds" / "checkpoints.cairn.dev.yaml").read_bytes()


def test_crd_is_a_valid_customresourcedefinition() -> None:
    with helm.Chart.load(CHART) as chart:
        crds = chart.crds
    assert [c["filename"] for c in crds] == ["cairn/crds/checkpoints.cairn.dev.yaml"]
    crd = yaml.load(crds[0]["data"], Loader=_StrictLoader)
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    assert crd["spec"]["names"]["shortNames"] == ["ckpt"]


@pytest.mark.parametrize("values", [None, VARIANT], ids=["defaults", "variant"])
def test_lint_reports_no_warnings_or_errors(values: dict[str, Any] | None) -> None:
    report = helm.lint(
        CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert (report["errors"], problems) == ([], [])


def test_default_render_is_a_valid_cluster_wide_install() -> None:
    docs = _render()

    assert _validate_all(docs) == []
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    (deployment,) = _by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["cairn"] and "operator" in container["args"]
    assert not any(a.startswith("--namespace") for a in container["args"])
    _assert_wired(docs, deployment, container)
    (agent,) = [d for d in docs if d["metadata"]["name"] == "cairn-checkpoint-agent"]
    assert {"cairn.dev": ["checkpoints/status"]}.items() <= {
        r["apiGroups"][0]: r["resources"] for r in agent["rules"] if "patch" in r["verbs"]
    }.items()


def _assert_wired(
    docs: list[dict[str, Any]], deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    (service,) = _by_kind(docs, "Service")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    port_names = {p["name"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["port"] in port_names
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    (account,) = _by_kind(docs, "ServiceAccount")
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    operator_roles = [
        d
        for d in docs
        if d["kind"].endswith("Role") and d["metadata"]["name"].endswith("-operator")
    ]
    (role,) = operator_roles
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    for need in [
        ("cairn.dev", "checkpoints"),
        ("cairn.dev", "checkpoints/status"),
        ("cairn.dev", "checkpoints/finalizers"),
        ("", "pods"),
        ("", "events"),
        ("batch", "jobs"),
        ("kueue.x-k8s.io", "workloads"),
        ("jobset.x-k8s.io", "jobsets"),
    ]:
        assert need in granted
    # Nodes are cluster-scoped: watched (cordon, NoExecute taint) by cluster-wide installs only.
    assert (("", "nodes") in granted) == (role["kind"] == "ClusterRole")


def test_variant_render_single_namespace_with_service_monitor() -> None:
    docs = _render(VARIANT)

    assert _validate_all(docs) == ["ServiceMonitor"]  # a prometheus-operator CRD, checked below
    assert not _by_kind(docs, "ClusterRoleBinding")
    (role,) = _by_kind(docs, "Role")
    (binding,) = _by_kind(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "ckpt-op-operator",
    }
    (deployment,) = _by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "operator",
        "--metrics-port=8080",
        "--quiet",
        f"--namespace={NAMESPACE}",
    ]
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "system"}
    _assert_wired(docs, deployment, container)
    assert all(d["metadata"]["labels"]["team"] == "ml-infra" for d in docs)
    assert all(d["metadata"]["name"].startswith("ckpt-op") for d in docs)
    (monitor,) = _by_kind(docs, "ServiceMonitor")
    (service,) = _by_kind(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= service["metadata"]["labels"].items() | service["spec"]["selector"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_more_than_one_watched_namespace_fails_with_a_clear_message() -> None:
    with pytest.raises(helm.HelmError, match="at most one namespace"):
        _render({"watchNamespaces": ["a", "b"]})


def test_one_watched_namespace_gets_a_role_there() -> None:
    docs = _render({"watchNamespaces": ["training"]})

    assert _validate_all(docs) == []
    (role,) = _by_kind(docs, "Role")
    (binding,) = _by_kind(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "training"
    assert binding["subjects"][0]["namespace"] == NAMESPACE
