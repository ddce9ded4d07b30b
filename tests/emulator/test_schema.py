"""The CRD's schema: what the agent and operator write survives; users get defaults and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cairn_agent.resource import contract
from cairn_agent.resource.policy import ScriptPolicy, resolve
from cairn_agent.resource.status import LocalTier
from cairn_operator.testing import (
    DEFAULT_CRD_PATH,
    prune_checkpoint,
    pruned_checkpoint_fields,
    validate_checkpoint,
)
from cairn_operator.testing.cel import all_rules
from cairn_operator.testing.schema import checkpoint_version
from cairn_operator.testing.structural import normalize

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "checkpoints").glob("*.yaml"))
NOW = "2026-11-29T04:00:00Z"

AGENT_STATUS: dict[str, Any] = {
    contract.SAVED_ITERATIONS: [
        {
            "iteration": 2000,
            "committedAt": NOW,
            "bytes": 123456789,
            "files": 17,
            "manifestDigest": "sha256:ab12",
            "verified": True,
        },
    ],
    contract.LATEST_COMMITTED: 2000,
    contract.LATEST_LOCAL: 2100,
    contract.LAST_SAVE_TIME: NOW,
    contract.SAVE_IN_PROGRESS: {
        "iteration": 3000,
        "phase": "Writing",
        "startedAt": NOW,
        "async": True,
    },
    contract.ASYNC_WORKER: {"state": "Running", "heartbeatTime": NOW, "pid": 4242},
    contract.LAST_RESUME: {"iteration": 1000, "source": "tracker", "time": NOW, "generation": 2},
    contract.CORRUPT_ITERATIONS: [
        {"iteration": 900, "file": "iter_0000900/__0_0.distcp", "check": "crc32", "time": NOW}
    ],
    contract.AGENT_GENERATION: 2,
    contract.SAVE_STATS: {
        "stepTimeSeconds": 4.2,
        "persistent": {"recentStallSeconds": [12.5, 11.0, 13], "recentDurableSeconds": [40.5]},
        "nonPersistent": {"recentStallSeconds": [1.5]},
    },
    # What the agent writes, built by the agent's own code (resource.policy).
    contract.APPLIED_POLICY: {
        "observedGeneration": 3,
        **resolve(
            {"save": {"interval": 500}, "retention": {"keepLast": 3, "pinned": [100]}},
            {},
            3,
            ScriptPolicy(save_interval=1000, async_save=True),
        ).policy.to_status(),
        "problems": [{"field": "spec.save.nonPersistentType", "message": "needs a local dir"}],
        "appliedAt": NOW,
    },
    # Written through the agent's typed entry (resource.status.LocalTier).
    contract.LOCAL_TIER: LocalTier(
        iteration=2100,
        replicas=2,
        replication_factor=2,
        nodes=["node-a", "node-b"],
        node_count=2,
        bytes_per_rank=1 << 20,
        updated_at=NOW,
    ).to_status(),
    contract.LAST_SAVE_REQUEST: {
        "requestId": "manual-20261130T101500-3fa2c1",
        "reason": "before the upgrade",
        "requestedIteration": 4200,
        "iteration": 4200,
        "committedAt": NOW,
        "saveSeconds": 3.5,
        "outcome": "Committed",
    },
}
OPERATOR_STATUS: dict[str, Any] = {
    contract.CONDITIONS: [
        {
            "type": contract.COND_VALID,
            "status": "True",
            "observedGeneration": 1,
            "lastTransitionTime": NOW,
            "reason": "PolicyAccepted",
            "message": "ok",
        }
    ],
    contract.PHASE: "Ready",
    contract.RESUME_FROM: {
        "iteration": 2000,
        "path": "/checkpoints/job/iter_0002000",
        "source": "LatestVerified",
        "reason": "newest verified",
    },
    contract.RETENTION: {
        "retainedCount": 3,
        "retainedBytes": 10,
        "plannedDeletions": [1000],
        "lastRun": NOW,
        "dryRun": False,
    },
    contract.RESTARTS: {"count": 1, "lastRestartTime": NOW, "lastResumedIteration": 1000},
    contract.OBSERVED_GENERATION: 1,
    contract.ADAPTIVE_INTERVAL: {
        "state": "Active",
        "message": "persistent saves every 450 steps (expected loss 2.93%)",
        "computedAt": NOW,
        "persistent": {
            "intervalSteps": 450,
            "optimalSteps": 456.2,
            "intervalSeconds": 1920.0,
            "expectedLossFraction": 0.02933,
            "saveCostSeconds": {"value": 30.0, "source": "measured", "samples": 5},
        },
        "nonPersistent": {
            "intervalSteps": 100,
            "optimalSteps": 83.1,
            "intervalSeconds": 421.5,
            "expectedLossFraction": 0.0112,
            "clampedTo": "minInterval",
            "saveCostSeconds": {"value": 1.5, "source": "measured", "samples": 1},
        },
        "inputs": {
            "stepTimeSeconds": {"value": 4.2, "source": "measured", "samples": 1},
            "recoverySeconds": {"value": 300.0, "source": "measured", "samples": 1},
            "mtbfSeconds": {
                "value": 86400.0,
                "source": "measured+prior",
                "samples": 1,
                "runSeconds": 90000,
                "failures": 1,
            },
        },
        "observation": {
            "since": NOW,
            "failures": 1,
            "downtimeSeconds": 300.0,
            "lastRestartTime": NOW,
            "recentRecoverySeconds": [300.0],
        },
    },
    contract.LAST_PREEMPTION: {
        "reason": "NodeCordoned",
        "message": "node/worker-1 (running pod/train-0) is cordoned",
        "announcedAt": NOW,
        "deadline": NOW,
        "requestId": "preempt-node-worker-1-u1",
        "signals": ["NodeCordoned node/worker-1", "PodEvicted pod/train-0"],
        "iteration": 2100,
        "saveSeconds": 4.5,
        "committedAt": NOW,
        "outcome": "Committed",
        "answeredBy": "preempt-node-worker-1-u1",
    },
}


def _with_status(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": "job"},
        "spec": {
            "storage": {"persistent": {"claimName": "p", "mountPath": "/c", "path": "/c/job"}}
        },
        "status": status,
    }


def test_crd_names_match_the_contract() -> None:
    crd = yaml.safe_load(DEFAULT_CRD_PATH.read_text())
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == contract.CRD_NAME
    assert (crd["spec"]["group"], names["kind"], names["plural"]) == (
        contract.GROUP,
        contract.KIND,
        contract.PLURAL,
    )
    assert names["shortNames"] == [contract.SHORT_NAME] and crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == contract.VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in checkpoint_version().printer_columns}
    assert columns == {
        "Latest": ("integer", ".status.latestCommittedIteration"),
        "Resume-From": ("integer", ".status.resumeFrom.iteration"),
        "Phase": ("string", ".status.phase"),
        "Last-Save": ("date", ".status.lastSaveTime"),
        "Spec-Gen": ("integer", ".metadata.generation"),
        "Applied-Gen": ("integer", ".status.appliedPolicy.observedGeneration"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }


def test_every_contract_status_key_is_declared() -> None:
    declared = set(checkpoint_version().schema["properties"]["status"]["properties"])
    assert contract.AGENT_STATUS_KEYS | contract.OPERATOR_STATUS_KEYS | {"kopf"} == declared
    assert set(AGENT_STATUS) == contract.AGENT_STATUS_KEYS
    assert set(OPERATOR_STATUS) == contract.OPERATOR_STATUS_KEYS


@pytest.mark.parametrize("status", [AGENT_STATUS, OPERATOR_STATUS], ids=["agent", "operator"])
def test_writers_status_is_valid_and_nothing_is_pruned(status: dict[str, Any]) -> None:
    obj = _with_status(status)
    assert validate_checkpoint(obj) == []
    assert pruned_checkpoint_fields(obj) == []
    assert prune_checkpoint(obj) == obj


def test_unknown_fields_are_pruned_but_kopf_progress_is_kept() -> None:
    obj = _with_status({"phase": "Ready", "kopf": {"progress": {"h": {"retries": 1}}}, "typo": 1})
    obj["spec"]["retention"] = {"keepLast": 4, "keepLastt": 9}
    assert pruned_checkpoint_fields(obj) == ["spec.retention.keepLastt", "status.typo"]
    pruned = prune_checkpoint(obj)
    assert pruned["spec"]["retention"] == {"keepLast": 4}
    assert pruned["status"] == {"phase": "Ready", "kopf": {"progress": {"h": {"retries": 1}}}}


def test_save_in_progress_may_be_null() -> None:
    obj = _with_status({contract.SAVE_IN_PROGRESS: None, contract.PHASE: None})
    assert validate_checkpoint(obj) == []
    assert prune_checkpoint(obj)["status"] == {contract.SAVE_IN_PROGRESS: None}


def test_defaults_fill_an_empty_policy() -> None:
    spec = normalize(_with_status({}), checkpoint_version().schema)["spec"]
    assert spec["deletionPolicy"] == "Retain"
    assert spec["retention"] == {"keepLast": 3, "dryRun": False}
    assert spec["resume"] == {"policy": "LatestVerified"}
    assert spec["asyncWorker"]["heartbeatTimeoutSeconds"] == 120
    # Fields that govern the job have no default: unset leaves the training script's value.
    assert "enabled" not in spec["asyncWorker"] and "persistent" not in spec["asyncWorker"]
    assert "deep" not in spec["verification"] and "nonPersistentType" not in spec["save"]


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"spec": {"deletionPolicy": "Purge"}}, "spec.deletionPolicy: Unsupported value"),
        ({"spec": {"retention": {"keepLast": 0}}}, "spec.retention.keepLast"),
        ({"spec": {"save": {"interval": 0}}}, "spec.save.interval"),
        ({"spec": {"resume": {"policy": "Newest"}}}, "spec.resume.policy: Unsupported value"),
        ({"status": {contract.LAST_SAVE_TIME: "yesterday"}}, "status.lastSaveTime"),
        (
            {"status": {contract.SAVE_IN_PROGRESS: {"phase": "Uploading"}}},
            "status.saveInProgress.phase",
        ),
        ({"spec": {"storage": {}}}, "spec.storage.persistent: Required value"),
    ],
)
def test_schema_errors_name_the_field(patch: dict[str, Any], fragment: str) -> None:
    obj = _with_status({})
    for key, value in patch.items():
        obj[key] = {**obj[key], **value} if key == "spec" else value
    errors = validate_checkpoint(obj)
    assert any(fragment in error for error in errors), errors


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid_and_lose_nothing(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    assert validate_checkpoint(obj) == []
    assert pruned_checkpoint_fields(obj) == []


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


def test_crd_manifest_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    crd = yaml.safe_load(DEFAULT_CRD_PATH.read_text())
    kubernetes_validate.validate(crd, "1.30", strict=True)


def test_cel_rules_read_only_bounded_values() -> None:
    # A real API server rejects a CRD whose rules' estimated cost is unbounded: every string and
    # list a rule reads must declare maxLength / maxItems.
    def node(path: str) -> dict[str, Any]:
        schema = checkpoint_version().schema
        for part in path.split("."):
            schema = schema["properties"][part]
        return schema

    for path, _ in all_rules(checkpoint_version().schema):
        schema = node(path)
        if schema["type"] == "string":
            assert "maxLength" in schema, path
        if schema["type"] == "array":
            assert "maxItems" in schema, path
        for sub in (schema.get("properties") or {}).values():
            if sub.get("type") == "string":
                assert "maxLength" in sub or "enum" in sub, path


def test_unchanged_fields_are_not_validated_again_on_update() -> None:
    stored = _with_status({contract.LAST_SAVE_TIME: "yesterday", contract.PHASE: "Ready"})
    update = _with_status({contract.LAST_SAVE_TIME: "yesterday", contract.PHASE: "Degraded"})
    assert validate_checkpoint(update, stored) == []
    assert any("status.lastSaveTime" in error for error in validate_checkpoint(update))
