"""What a real API server does and KMock alone does not, over HTTP against the sandbox."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from cairn_operator.testing import Sandbox, SandboxApiError

Factory = Callable[..., dict[str, Any]]


def _status(sandbox: Sandbox, name: str, status: dict[str, Any]) -> dict[str, Any]:
    return sandbox.patch("ckpt", name, {"status": status}, subresource="status")


def test_create_ignores_status_and_sets_server_metadata(
    sandbox: Sandbox, checkpoint: Factory
) -> None:
    obj = checkpoint()
    obj["status"] = {"phase": "Forged"}
    obj["metadata"]["uid"] = "client-chosen"
    created = sandbox.create(obj)
    assert "status" not in created
    meta = created["metadata"]
    assert meta["uid"] != "client-chosen" and meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0 and meta["creationTimestamp"].endswith("Z")


def test_main_resource_writes_ignore_status(sandbox: Sandbox, checkpoint: Factory) -> None:
    name = sandbox.create(checkpoint())["metadata"]["name"]
    _status(sandbox, name, {"phase": "Ready"})
    patched = sandbox.patch(
        "ckpt", name, {"spec": {"retention": {"keepLast": 5}}, "status": {"phase": "Hacked"}}
    )
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"]["retention"]["keepLast"] == 5


def test_status_writes_ignore_everything_else(sandbox: Sandbox, checkpoint: Factory) -> None:
    name = sandbox.create(checkpoint())["metadata"]["name"]
    patched = sandbox.patch(
        "ckpt",
        name,
        {
            "spec": {"retention": {"keepLast": 9}},
            "metadata": {"labels": {"a": "b"}},
            "status": {"latestCommittedIteration": 10},
        },
        subresource="status",
    )
    assert patched["status"] == {"latestCommittedIteration": 10}
    assert patched["spec"]["retention"]["keepLast"] == 3
    assert "labels" not in patched["metadata"]


def test_status_writers_do_not_clobber_each_other(sandbox: Sandbox, checkpoint: Factory) -> None:
    name = sandbox.create(checkpoint())["metadata"]["name"]
    _status(sandbox, name, {"latestCommittedIteration": 100})
    _status(sandbox, name, {"phase": "Ready"})
    assert sandbox.get("ckpt", name)["status"] == {
        "latestCommittedIteration": 100,
        "phase": "Ready",
    }


def test_list_has_kind_api_version_and_resource_version(
    sandbox: Sandbox, checkpoint: Factory
) -> None:
    sandbox.create(checkpoint())
    answer = sandbox.request("GET", sandbox.path("ckpt"))
    assert answer["kind"] == "CheckpointList" and answer["apiVersion"] == "cairn.dev/v1alpha1"
    assert int(answer["metadata"]["resourceVersion"]) > 0
    assert answer["items"] and all(item["kind"] == "Checkpoint" for item in answer["items"])


def test_every_write_gets_a_new_resource_version(sandbox: Sandbox, checkpoint: Factory) -> None:
    created = sandbox.create(checkpoint())
    name, first = created["metadata"]["name"], int(created["metadata"]["resourceVersion"])
    second = int(_status(sandbox, name, {"phase": "A"})["metadata"]["resourceVersion"])
    third = int(_status(sandbox, name, {"phase": "B"})["metadata"]["resourceVersion"])
    assert first < second < third


def test_noop_write_keeps_resource_version(sandbox: Sandbox, checkpoint: Factory) -> None:
    name = sandbox.create(checkpoint())["metadata"]["name"]
    before = _status(sandbox, name, {"phase": "A"})["metadata"]["resourceVersion"]
    assert _status(sandbox, name, {"phase": "A"})["metadata"]["resourceVersion"] == before


def test_generation_counts_spec_changes_only(sandbox: Sandbox, checkpoint: Factory) -> None:
    name = sandbox.create(checkpoint())["metadata"]["name"]
    _status(sandbox, name, {"phase": "Ready"})
    sandbox.patch("ckpt", name, {"metadata": {"labels": {"team": "x"}}})
    assert sandbox.get("ckpt", name)["metadata"]["generation"] == 1
    sandbox.patch("ckpt", name, {"spec": {"retention": {"keepLast": 4}}})
    assert sandbox.get("ckpt", name)["metadata"]["generation"] == 2


def test_stale_resource_version_conflicts(sandbox: Sandbox, checkpoint: Factory) -> None:
    stale = sandbox.create(checkpoint())
    name = stale["metadata"]["name"]
    _status(sandbox, name, {"phase": "Moved"})
    stale["spec"]["retention"] = {"keepLast": 6}
    with pytest.raises(SandboxApiError) as put:
        sandbox.replace(stale)
    with pytest.raises(SandboxApiError) as patch:
        sandbox.patch(
            "ckpt", name, {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]}}
        )
    assert put.value.status == patch.value.status == 409
    fresh = sandbox.get("ckpt", name)
    fresh["spec"]["retention"] = {"keepLast": 6}
    assert sandbox.replace(fresh)["spec"]["retention"]["keepLast"] == 6


def test_put_of_a_custom_resource_needs_a_resource_version(
    sandbox: Sandbox, checkpoint: Factory
) -> None:
    obj = sandbox.create(checkpoint())
    del obj["metadata"]["resourceVersion"]
    with pytest.raises(SandboxApiError) as caught:
        sandbox.replace(obj)
    assert caught.value.status == 422 and "resourceVersion" in caught.value.message


def test_invalid_write_is_rejected_and_not_stored(sandbox: Sandbox, checkpoint: Factory) -> None:
    name = sandbox.create(checkpoint())["metadata"]["name"]
    with pytest.raises(SandboxApiError) as caught:
        _status(sandbox, name, {"lastSaveTime": "not a time"})
    assert caught.value.status == 422 and "status.lastSaveTime" in caught.value.message
    assert "status" not in sandbox.get("ckpt", name)


def test_unknown_fields_are_pruned_or_refused_when_strict(
    sandbox: Sandbox, checkpoint: Factory
) -> None:
    name = sandbox.create(checkpoint())["metadata"]["name"]
    patched = _status(sandbox, name, {"phase": "Ready", "mystery": 1, "kopf": {"progress": {}}})
    assert patched["status"] == {"phase": "Ready", "kopf": {"progress": {}}}
    with pytest.raises(SandboxApiError) as caught:
        sandbox.request(
            "PATCH",
            sandbox.path("ckpt", name),
            {"spec": {"mystery": 1}},
            content_type="application/merge-patch+json",
            params={"fieldValidation": "Strict"},
        )
    assert caught.value.status == 400 and 'unknown field "spec.mystery"' in caught.value.message


def test_json_patch_works_and_strategic_merge_is_refused_for_custom_resources(
    sandbox: Sandbox, checkpoint: Factory
) -> None:
    name = sandbox.create(checkpoint())["metadata"]["name"]
    ops = [{"op": "replace", "path": "/spec/retention/keepLast", "value": 8}]
    assert sandbox.patch("ckpt", name, ops, patch_type="json")["spec"]["retention"]["keepLast"] == 8
    with pytest.raises(SandboxApiError) as caught:
        sandbox.patch("ckpt", name, {"spec": {}}, patch_type="strategic")
    assert caught.value.status == 415


def test_finalizers_hold_deletion_until_removed(sandbox: Sandbox, checkpoint: Factory) -> None:
    obj = checkpoint()
    obj["metadata"]["finalizers"] = ["cairn.dev/cleanup"]
    name = sandbox.create(obj)["metadata"]["name"]
    sandbox.delete("ckpt", name)
    held = sandbox.get("ckpt", name)
    assert held["metadata"]["deletionTimestamp"]
    with pytest.raises(SandboxApiError) as late:
        sandbox.patch(
            "ckpt", name, {"metadata": {"finalizers": ["cairn.dev/cleanup", "other/one"]}}
        )
    assert late.value.status == 422 and "no new finalizers" in late.value.message
    sandbox.patch("ckpt", name, {"metadata": {"finalizers": None}})
    with pytest.raises(SandboxApiError) as caught:
        sandbox.get("ckpt", name)
    assert caught.value.status == 404


def test_missing_namespace_is_not_found(sandbox: Sandbox, checkpoint: Factory) -> None:
    with pytest.raises(SandboxApiError) as caught:
        sandbox.create(checkpoint(), namespace="nowhere")
    assert caught.value.status == 404 and "nowhere" in caught.value.message
    assert sandbox.create(checkpoint(), namespace="training")["metadata"]["namespace"] == "training"


def test_label_selector_filters_lists(sandbox: Sandbox) -> None:
    for name, job in (("pod-a", "llama"), ("pod-b", "gpt")):
        sandbox.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {"cairn.dev/checkpoint": job}},
                "spec": {},
            }
        )
    pods = sandbox.list("pods", "default", label_selector="cairn.dev/checkpoint=llama")
    assert [p["metadata"]["name"] for p in pods] == ["pod-a"]
    assert (
        len(sandbox.list("pods", "default", label_selector="cairn.dev/checkpoint in (llama,gpt)"))
        == 2
    )


def test_core_kinds_are_served(sandbox: Sandbox) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "gc"},
        "spec": {"template": {}},
    }
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "ckpt-"},
        "involvedObject": {"kind": "Checkpoint", "name": "x"},
        "reason": "Saved",
        "message": "m",
    }
    assert sandbox.create(job)["metadata"]["uid"]
    assert sandbox.create(event)["metadata"]["name"].startswith("ckpt-")
    assert sandbox.get("crd", "checkpoints.cairn.dev")["spec"]["group"] == "cairn.dev"


def _watch(sandbox: Sandbox, path: str, resource_version: str) -> list[dict[str, Any]]:
    url = f"{sandbox.url}{path}?watch=true&resourceVersion={resource_version}&timeoutSeconds=1"
    with urllib.request.urlopen(url, timeout=10) as stream:
        return [json.loads(line) for line in stream.read().splitlines() if line.strip()]


def test_watch_resumes_from_a_resource_version(sandbox: Sandbox, checkpoint: Factory) -> None:
    created = sandbox.create(checkpoint())
    name, since = created["metadata"]["name"], created["metadata"]["resourceVersion"]
    _status(sandbox, name, {"phase": "A"})
    _status(sandbox, name, {"phase": "B"})
    events = [
        e
        for e in _watch(sandbox, sandbox.path("ckpt"), since)
        if e["object"]["metadata"]["name"] == name
    ]
    assert [(e["type"], e["object"]["status"]["phase"]) for e in events] == [
        ("MODIFIED", "A"),
        ("MODIFIED", "B"),
    ]


def test_watch_from_a_forgotten_resource_version_is_gone(checkpoint: Factory) -> None:
    with Sandbox(emulator_options={"watch_window": 4}) as small:
        first = small.create(checkpoint())["metadata"]
        for phase in "ABCDEF":
            small.patch("ckpt", first["name"], {"status": {"phase": phase}}, subresource="status")
        (event,) = _watch(small, small.path("ckpt"), first["resourceVersion"])
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


def test_table_rendering_uses_printer_columns(sandbox: Sandbox, checkpoint: Factory) -> None:
    name = sandbox.create(checkpoint())["metadata"]["name"]
    _status(sandbox, name, {"latestCommittedIteration": 300, "phase": "Ready"})
    request = urllib.request.Request(
        f"{sandbox.url}{sandbox.path('ckpt', name)}",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        found = json.loads(answer.read())
    assert found["kind"] == "Table"
    names = [c["name"] for c in found["columnDefinitions"]]
    assert names == [
        "Name", "Latest", "Resume-From", "Phase", "Last-Save", "Spec-Gen", "Applied-Gen", "Age"
    ]  # fmt: skip
    assert found["rows"][0]["cells"][:4] == [name, 300, None, "Ready"]


def test_dependents_are_garbage_collected_with_their_owner(
    sandbox: Sandbox, checkpoint: Factory
) -> None:
    owner = sandbox.create(checkpoint())["metadata"]
    ref = {
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "Checkpoint",
        "name": owner["name"],
        "uid": owner["uid"],
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {},
        "metadata": {"name": f"gc-{owner['name']}", "ownerReferences": [ref]},
    }
    sandbox.create(job)
    sandbox.delete("ckpt", owner["name"])
    with pytest.raises(SandboxApiError) as caught:
        sandbox.get("jobs", job["metadata"]["name"])
    assert caught.value.status == 404


def test_size_limits_of_a_real_cluster_apply(sandbox: Sandbox, checkpoint: Factory) -> None:
    name = sandbox.create(checkpoint())["metadata"]["name"]
    with pytest.raises(SandboxApiError) as annotations:
        sandbox.patch("ckpt", name, {"metadata": {"annotations": {"big": "x" * (256 * 1024)}}})
    assert (
        annotations.value.status == 422
        and "metadata.annotations: Too long" in annotations.value.message
    )
    saved = [{"iteration": i} for i in range(33)]
    with pytest.raises(SandboxApiError) as too_many:
        _status(sandbox, name, {"savedIterations": saved})
    assert too_many.value.status == 422 and "status.savedIterations" in too_many.value.message


def test_objects_beyond_etcd_limit_are_refused(sandbox: Sandbox) -> None:
    big = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "huge"},
        "data": {"x": "y" * (1600 * 1024)},
    }
    with pytest.raises(SandboxApiError) as caught:
        sandbox.create(big)
    assert caught.value.status == 413
