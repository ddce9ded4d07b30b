"""Every CEL rule of the Checkpoint CRD, on a good and a bad example, offline and over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cairn_operator.testing import Sandbox, SandboxApiError, validate_checkpoint
from cairn_operator.testing.cel import CelRule, all_rules
from cairn_operator.testing.schema import checkpoint_version
from cairn_operator.testing.writes import merge_patch

RULES: dict[str, CelRule] = {}
for _path, _rule in all_rules(checkpoint_version().schema):
    RULES[f"{_path}#{sum(1 for key in RULES if key.startswith(_path + '#'))}"] = _rule

PERSISTENT = {"claimName": "pvc", "mountPath": "/checkpoints", "path": "/checkpoints/job"}

# rule id -> (spec patch that satisfies it, spec patch that violates it, old spec patch or None)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]] = {
    "spec#0": (
        {"asyncWorker": {"enabled": True}, "retention": {"keepLast": 2}},
        {"asyncWorker": {"enabled": True}, "retention": {"keepLast": 1}},
        None,
    ),
    "spec.storage.persistent#0": (
        {"retention": {"keepLast": 7}},
        {"storage": {"persistent": {"path": "/checkpoints/elsewhere"}}},
        {},
    ),
    "spec.storage.persistent#1": (
        {"storage": {"persistent": {"mountPath": "/checkpoints/", "path": "/checkpoints/job"}}},
        {"storage": {"persistent": {"mountPath": "/checkpoints", "path": "/checkpointsX/job"}}},
        None,
    ),
    "spec.storage.persistent.mountPath#0": (
        {"storage": {"persistent": {"mountPath": "/", "path": "/job"}}},
        {"storage": {"persistent": {"mountPath": "checkpoints", "path": "checkpoints/job"}}},
        None,
    ),
    "spec.storage.persistent.path#0": (
        {"storage": {"persistent": {"path": "/checkpoints/job..v2"}}},
        {"storage": {"persistent": {"path": "/checkpoints/../etc"}}},
        None,
    ),
    "spec.storage.local.path#0": (
        {"storage": {"local": {"path": "/local/cairn"}}},
        {"storage": {"local": {"path": "/local/.."}}},
        None,
    ),
    "spec.retention.pinned#0": (
        {"retention": {"pinned": [0, 5000]}},
        {"retention": {"pinned": [5000, -1]}},
        None,
    ),
    "spec.save#0": (
        {"save": {"policy": "Adaptive", "adaptive": {"minInterval": 100, "maxInterval": 5000}}},
        {"save": {"policy": "Adaptive", "interval": 1000}},
        None,
    ),
    "spec.save#1": (
        {
            "save": {
                "policy": "Adaptive",
                "interval": 1000,
                "adaptive": {"minInterval": 100, "maxInterval": 5000},
            }
        },
        {
            "save": {
                "policy": "Adaptive",
                "interval": 50,
                "adaptive": {"minInterval": 100, "maxInterval": 5000},
            }
        },
        None,
    ),
    "spec.save.adaptive#0": (
        {"save": {"adaptive": {"minInterval": 100, "maxInterval": 100}}},
        {"save": {"adaptive": {"minInterval": 500, "maxInterval": 100}}},
        None,
    ),
    "spec.resume#0": (
        {"resume": {"policy": "Pinned", "iteration": 0}},
        {"resume": {"policy": "Pinned"}},
        None,
    ),
}


def _object(spec_patch: dict[str, Any] | None, name: str = "job") -> dict[str, Any]:
    base = {
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "Checkpoint",
        "metadata": {"name": name},
        "spec": {"storage": {"persistent": dict(PERSISTENT)}},
    }
    result: dict[str, Any] = merge_patch(base, {"spec": spec_patch or {}})
    return result


def test_every_rule_of_the_crd_has_a_case() -> None:
    assert set(RULES) == set(CASES)


def test_rule_messages_say_what_to_change() -> None:
    for rule_id, rule in RULES.items():
        assert rule.message.startswith("spec."), rule_id
        assert len(rule.message) > 40, rule_id


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_good_example_passes(rule_id: str) -> None:
    good, _, old = CASES[rule_id]
    previous = _object(old) if old is not None else None
    assert validate_checkpoint(_object(good), previous) == []


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_bad_example_fails_with_the_rule_message(rule_id: str) -> None:
    _, bad, old = CASES[rule_id]
    previous = _object(old) if old is not None else None
    errors = validate_checkpoint(_object(bad), previous)
    assert any(RULES[rule_id].message in error for error in errors), errors


def test_transition_rule_does_not_apply_on_create() -> None:
    _, bad, _ = CASES["spec.storage.persistent#0"]
    assert validate_checkpoint(_object(bad)) == []


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_api_server_rejects_bad_example_with_422(
    rule_id: str, sandbox: Sandbox, checkpoint: Callable[..., dict[str, Any]]
) -> None:
    _, bad, old = CASES[rule_id]
    name = checkpoint()["metadata"]["name"]
    with pytest.raises(SandboxApiError) as caught:
        if old is None:
            sandbox.create(_object(bad, name))
        else:
            sandbox.create(_object(old, name))
            sandbox.patch("ckpt", name, {"spec": bad})
    assert caught.value.status == 422
    assert RULES[rule_id].message in caught.value.message
