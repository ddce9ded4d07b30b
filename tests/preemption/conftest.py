"""A sandbox with the Kueue Workload and JobSet CRDs installed, and the operator running on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cairn_agent.resource import contract
from cairn_operator.run import RunningOperator, run_in_thread
from cairn_operator.testing import Sandbox
from cairn_operator.testing.schema import DEFAULT_CRD_PATH

from tests.operator.conftest import FAST

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    crds = (DEFAULT_CRD_PATH, FIXTURES / "kueue-workload-crd.yaml", FIXTURES / "jobset-crd.yaml")
    with Sandbox(crd_paths=crds) as sb:
        yield sb


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox) -> Iterator[RunningOperator]:
    with run_in_thread(sandbox.url, settings=FAST) as op:
        yield op


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}}


def training_pod(
    name: str, checkpoint: str, node_name: str, *, grace: int = 30, finalizer: bool = False
) -> dict[str, Any]:
    """A pod of a training job (what the operator watches), placed on ``node_name``.

    ``finalizer`` keeps it, with a ``deletionTimestamp``, after a DELETE: how a pod that is
    terminating (but not gone yet) looks to watchers."""
    meta: dict[str, Any] = {"name": name, "labels": {contract.LABEL_CHECKPOINT: checkpoint}}
    if finalizer:
        meta["finalizers"] = ["tests.cairn.dev/hold"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeName": node_name,
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "train", "image": "trainer"}],
        },
    }
