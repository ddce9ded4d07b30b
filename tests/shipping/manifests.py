"""The checks ``test_manifests.py`` runs over ``examples/cluster/``: every object against its
schema, then what Cairn needs from a training workload. Each problem is one line that names
the file's object and the field (``Job/cairn-example: spec.template.metadata.labels[...]``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from cairn_agent.resource.contract import ENV_CHECKPOINT, ENV_GENERATION, LABEL_CHECKPOINT
from cairn_operator.testing.schema import validate_checkpoint

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "examples" / "cluster"
JOBSET_SCHEMA = Path(__file__).parent / "schemas" / "jobset-v1alpha2.schema.yaml"
KUBE_VERSION = "1.33.0"
AGENT_ROLE_REF = {
    "apiGroup": "rbac.authorization.k8s.io",
    "kind": "ClusterRole",
    "name": "cairn-checkpoint-agent",  # the chart's agent ClusterRole, release name `cairn`
}
CAIRN_ENV = (ENV_CHECKPOINT, ENV_GENERATION)
MIN_GRACE_SECONDS = 60  # room for the final save on SIGTERM; Kubernetes' default is 30

Doc = dict[str, Any]


def load(*names: str) -> list[Doc]:
    """The objects of the named files or directories under ``examples/cluster/``."""
    docs: list[Doc] = []
    for name in names:
        path = CLUSTER / name
        for file in sorted(path.glob("*.yaml")) if path.is_dir() else [path]:
            docs += [d for d in yaml.safe_load_all(file.read_text()) if d]
    return docs


def problems(docs: list[Doc]) -> list[str]:
    """Everything wrong with one job's manifests (the base objects plus one workload)."""
    found = [p for doc in docs for p in schema_problems(doc)]
    return found + cairn_problems(docs)


def _where(doc: Doc) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def _json_path(error: jsonschema.ValidationError, prefix: str = "") -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return (prefix + path).lstrip(".") or "(root)"


def schema_problems(doc: Doc) -> list[str]:
    kind = doc.get("kind")
    if kind == "Checkpoint":
        return [f"{_where(doc)}: {e}" for e in validate_checkpoint(doc)]
    if kind == "JobSet":
        return _jobset_problems(doc)
    return _kubernetes_problems(doc, _where(doc))


def _kubernetes_problems(doc: Doc, where: str, prefix: str = "") -> list[str]:
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no Kubernetes {KUBE_VERSION} schema for {doc.get('apiVersion')}"]
    except kubernetes_validate.ValidationError as error:
        return [f"{where}: {_json_path(error, prefix)}: {error.message}"]
    return []


def _jobset_problems(doc: Doc) -> list[str]:
    schema = yaml.safe_load(JOBSET_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    found = [f"{_where(doc)}: {_json_path(e)}: {e.message}" for e in validator.iter_errors(doc)]
    for index, replicated in enumerate((doc.get("spec") or {}).get("replicatedJobs") or []):
        template = replicated.get("template") or {}
        # The template is a batch/v1 JobTemplateSpec: validate it as the Job it becomes.
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"{replicated.get('name')}", **template.get("metadata", {})},
            "spec": template.get("spec"),
        }
        prefix = f"spec.replicatedJobs[{index}].template"
        found += _kubernetes_problems(job, _where(doc), prefix)
    return found


def pod_templates(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """``(path, pod template)`` of a Job or JobSet."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Job":
        yield "spec.template", spec.get("template") or {}
    elif doc.get("kind") == "JobSet":
        for index, replicated in enumerate(spec.get("replicatedJobs") or []):
            job_spec = (replicated.get("template") or {}).get("spec") or {}
            yield (
                f"spec.replicatedJobs[{index}].template.spec.template",
                job_spec.get("template") or {},
            )


def cairn_problems(docs: list[Doc]) -> list[str]:
    """What a Cairn training job needs beyond valid objects."""
    checkpoints = [d for d in docs if d.get("kind") == "Checkpoint"]
    if len(checkpoints) != 1:
        return [f"expected one Checkpoint among the manifests, found {len(checkpoints)}"]
    (checkpoint,) = checkpoints
    found = _rbac_problems(docs) + _pvc_problems(docs, checkpoint)
    workloads = [d for d in docs if d.get("kind") in ("Job", "JobSet")]
    if not workloads:
        found.append("no Job or JobSet among the manifests")
    accounts = _bound_accounts(docs)
    for workload in workloads:
        for path, template in pod_templates(workload):
            found += [
                f"{_where(workload)}: {p}"
                for p in _pod_problems(path, template, checkpoint, accounts)
            ]
    return found


def _storage(checkpoint: Doc) -> Doc:
    return dict(checkpoint["spec"]["storage"]["persistent"])


def _bound_accounts(docs: list[Doc]) -> set[str]:
    return {
        s.get("name")
        for d in docs
        if d.get("kind") == "RoleBinding" and d.get("roleRef") == AGENT_ROLE_REF
        for s in d.get("subjects") or []
        if s.get("kind") == "ServiceAccount"
    }


def _rbac_problems(docs: list[Doc]) -> list[str]:
    bindings = [d for d in docs if d.get("kind") == "RoleBinding"]
    if not bindings:
        return ["no RoleBinding grants the pods the agent's ClusterRole"]
    return [
        f"{_where(d)}: roleRef is {d.get('roleRef')}, expected {AGENT_ROLE_REF} (the chart's "
        "agent ClusterRole: get the Checkpoint, patch its status)"
        for d in bindings
        if d.get("roleRef") != AGENT_ROLE_REF
    ]


def _pvc_problems(docs: list[Doc], checkpoint: Doc) -> list[str]:
    claim = _storage(checkpoint)["claimName"]
    names = {d["metadata"]["name"] for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    if claim in names:
        return []
    return [f"{_where(checkpoint)}: spec.storage.persistent.claimName {claim!r} is not a PVC here"]


def _pod_problems(path: str, pod: Doc, checkpoint: Doc, accounts: set[str]) -> list[str]:
    name = checkpoint["metadata"]["name"]
    labels = (pod.get("metadata") or {}).get("labels") or {}
    label = f"{path}.metadata.labels['{LABEL_CHECKPOINT}']"
    found = []
    if LABEL_CHECKPOINT not in labels:
        found.append(f"{label} is missing; set it to the Checkpoint's name {name!r}")
    elif labels[LABEL_CHECKPOINT] != name:
        found.append(f"{label} is {labels[LABEL_CHECKPOINT]!r}, not the Checkpoint {name!r}")
    spec = pod.get("spec") or {}
    found += _pod_spec_problems(f"{path}.spec", spec, checkpoint, accounts)
    for index, container in enumerate(spec.get("containers") or []):
        where = f"{path}.spec.containers[{index}]"
        found += _env_problems(where, container, name)
        found += _command_problems(where, container, checkpoint)
    return found


def _pod_spec_problems(path: str, spec: Doc, checkpoint: Doc, accounts: set[str]) -> list[str]:
    found = []
    account = spec.get("serviceAccountName", "default")
    if account not in accounts:
        found.append(
            f"{path}.serviceAccountName {account!r} is not bound to the agent's ClusterRole"
        )
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < MIN_GRACE_SECONDS:
        found.append(
            f"{path}.terminationGracePeriodSeconds is {grace}: leave the final save on SIGTERM "
            f"at least {MIN_GRACE_SECONDS}s"
        )
    if spec.get("restartPolicy") != "Never":
        found.append(f"{path}.restartPolicy must be Never (the controller restarts the group)")
    claim = _storage(checkpoint)["claimName"]
    volumes = [
        v["name"]
        for v in spec.get("volumes") or []
        if (v.get("persistentVolumeClaim") or {}).get("claimName") == claim
    ]
    if not volumes:
        found.append(f"{path}.volumes has no persistentVolumeClaim {claim!r}")
    mount = _storage(checkpoint)["mountPath"]
    for index, container in enumerate(spec.get("containers") or []):
        mounts = {(m["name"], m["mountPath"]) for m in container.get("volumeMounts") or []}
        if not any((v, mount) in mounts for v in volumes):
            found.append(f"{path}.containers[{index}].volumeMounts: {claim!r} not at {mount}")
    return found


def _env_problems(where: str, container: Doc, name: str) -> list[str]:
    env = container.get("env") or []
    known = ", ".join(CAIRN_ENV)
    found = [
        f"{where}.env[{i}].name: {e['name']!r} is not a variable Cairn reads ({known})"
        for i, e in enumerate(env)
        if e["name"].startswith("CAIRN_") and e["name"] not in CAIRN_ENV
    ]
    values = {e["name"]: e for e in env}
    checkpoint_env = values.get(ENV_CHECKPOINT)
    if checkpoint_env is None:
        found.append(f"{where}.env: {ENV_CHECKPOINT} is missing ('<namespace>/{name}')")
    elif not str(checkpoint_env.get("value", "")).endswith(f"/{name}"):
        found.append(
            f"{where}.env[{ENV_CHECKPOINT}] is {checkpoint_env.get('value')!r}, not "
            f"'<namespace>/{name}'"
        )
    script = " ".join(container.get("command") or []) + " " + " ".join(container.get("args") or [])
    if ENV_GENERATION not in values and f"export {ENV_GENERATION}=" not in script:
        found.append(
            f"{where}.env: {ENV_GENERATION} is missing (the restart generation; JobSet: the "
            "restart-attempt annotation)"
        )
    return found


def _command_problems(where: str, container: Doc, checkpoint: Doc) -> list[str]:
    words = " ".join(container.get("command") or []) + " " + " ".join(container.get("args") or [])
    found = []
    if "torchrun" not in words:
        found.append(f"{where}.command: the training is not launched by torchrun")
    root = _storage(checkpoint)["path"]
    if not re.search(rf"--save[ =]{re.escape(root)}(\s|$)", words):
        found.append(f"{where}.command: --save is not spec.storage.persistent.path {root}")
    return found
