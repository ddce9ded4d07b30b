"""``examples/cluster/`` holds everything a platform team applies for one training job: the
Checkpoint, its PVC, the agent's RBAC, and the workload as a plain indexed Job and as a JobSet.
Core kinds validate against Kubernetes' schemas (kubernetes-validate), the Checkpoint against
the CRD (schema and CEL rules), the JobSet against a hand-written schema of its API; then what
Cairn needs is checked. A manifest broken in one field fails with a message naming that field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.shipping.manifests import load, problems

Doc = dict[str, Any]
WORKLOADS = ["job.yaml", "jobset.yaml"]


def _job(docs: list[Doc], kind: str) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def _pod(docs: list[Doc]) -> Any:
    workload = next(d for d in docs if d["kind"] in ("Job", "JobSet"))
    if workload["kind"] == "Job":
        return workload["spec"]["template"]
    return workload["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]


def _container(docs: list[Doc]) -> Any:
    return _pod(docs)["spec"]["containers"][0]


def _rename_env(old: str, new: str) -> Callable[[list[Doc]], None]:
    def mutate(docs: list[Doc]) -> None:
        for var in _container(docs)["env"]:
            if var["name"] == old:
                var["name"] = new

    mutate.__name__ = f"rename_{old}_to_{new}"
    return mutate


def _drop_label(docs: list[Doc]) -> None:
    del _pod(docs)["metadata"]["labels"]["cairn.dev/checkpoint"]


def _wrong_label(docs: list[Doc]) -> None:
    _pod(docs)["metadata"]["labels"]["cairn.dev/checkpoint"] = "llama-8b"


def _short_grace(docs: list[Doc]) -> None:
    _pod(docs)["spec"]["terminationGracePeriodSeconds"] = 30


def _wrong_role(docs: list[Doc]) -> None:
    _job(docs, "RoleBinding")["roleRef"]["name"] = "edit"


def _typo_field(docs: list[Doc]) -> None:
    _container(docs)["envv"] = []


def _zero_keep_last(docs: list[Doc]) -> None:
    _job(docs, "Checkpoint")["spec"]["retention"]["keepLast"] = 0


def _other_save_root(docs: list[Doc]) -> None:
    container = _container(docs)
    field = "args" if "args" in container else "command"
    container[field] = [w.replace("/checkpoints/cairn-example", "/tmp/x") for w in container[field]]


def _no_generation(docs: list[Doc]) -> None:
    container = _container(docs)
    container["env"] = [e for e in container["env"] if e["name"] != "CAIRN_GENERATION"]
    if "args" in container:
        container["args"] = [
            a.replace("export CAIRN_GENERATION", "export GEN") for a in container["args"]
        ]


def _bad_restart_strategy(docs: list[Doc]) -> None:
    _job(docs, "JobSet")["spec"]["failurePolicy"]["restartStrategy"] = "Sometimes"


def _jobset_unknown_field(docs: list[Doc]) -> None:
    _job(docs, "JobSet")["spec"]["replicatedJobs"][0]["replica"] = 2


@pytest.mark.parametrize("workload", WORKLOADS)
def test_the_example_job_manifests_are_complete_and_valid(workload: str) -> None:
    docs = load("base", workload)
    kinds = sorted(d["kind"] for d in docs)
    assert {"Checkpoint", "PersistentVolumeClaim", "RoleBinding", "ServiceAccount"} <= set(kinds)
    assert problems(docs) == []


BROKEN: list[tuple[str, Callable[[list[Doc]], None], str]] = [
    ("job.yaml", _drop_label, "spec.template.metadata.labels['cairn.dev/checkpoint'] is missing"),
    (
        "jobset.yaml",
        _drop_label,
        "spec.replicatedJobs[0].template.spec.template.metadata.labels['cairn.dev/checkpoint']",
    ),
    ("job.yaml", _wrong_label, "labels['cairn.dev/checkpoint'] is 'llama-8b'"),
    (
        "job.yaml",
        _rename_env("CAIRN_CHECKPOINT", "CAIRN_CHEKPOINT"),
        "env[1].name: 'CAIRN_CHEKPOINT'",
    ),
    ("jobset.yaml", _rename_env("CAIRN_CHECKPOINT", "CAIRN_CKPT"), "CAIRN_CHECKPOINT is missing"),
    ("jobset.yaml", _rename_env("CAIRN_GENERATION", "CAIRN_GEN"), "env[2].name: 'CAIRN_GEN'"),
    ("jobset.yaml", _no_generation, "containers[0].env: CAIRN_GENERATION is missing"),
    ("job.yaml", _no_generation, "containers[0].env: CAIRN_GENERATION is missing"),
    ("job.yaml", _short_grace, "spec.template.spec.terminationGracePeriodSeconds is 30"),
    ("job.yaml", _wrong_role, "RoleBinding/cairn-example-agent: roleRef is"),
    ("job.yaml", _typo_field, "spec.template.spec.containers[0]: Additional properties"),
    (
        "jobset.yaml",
        _typo_field,
        "spec.replicatedJobs[0].template.spec.template.spec.containers[0]",
    ),
    ("jobset.yaml", _bad_restart_strategy, "spec.failurePolicy.restartStrategy: 'Sometimes'"),
    ("jobset.yaml", _jobset_unknown_field, "('replica' was unexpected)"),
    ("job.yaml", _zero_keep_last, "spec.retention.keepLast"),
    ("job.yaml", _other_save_root, "--save is not spec.storage.persistent.path"),
]


@pytest.mark.parametrize(
    ("workload", "mutate", "message"),
    BROKEN,
    ids=[f"{w.split('.')[0]}-{m.__name__.strip('_')}" for w, m, _ in BROKEN],
)
def test_a_manifest_broken_in_one_field_is_caught_naming_the_field(
    workload: str, mutate: Callable[[list[Doc]], None], message: str
) -> None:
    docs = copy.deepcopy(load("base", workload))
    mutate(docs)
    found = problems(docs)
    assert any(message in p for p in found), found
