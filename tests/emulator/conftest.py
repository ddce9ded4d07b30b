"""Fixtures of the emulator suite: one sandbox API server per module, unique object names."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cairn_operator.testing import Sandbox

_NAMES = itertools.count()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(namespaces=("default", "training")) as running:
        yield running


@pytest.fixture
def checkpoint() -> Callable[..., dict[str, Any]]:
    """Factory of a minimal valid Checkpoint manifest with a fresh name."""

    def make(name: str | None = None, **spec: Any) -> dict[str, Any]:
        name = name or f"ckpt-{next(_NAMES)}"
        body: dict[str, Any] = {
            "storage": {
                "persistent": {
                    "claimName": "pvc",
                    "mountPath": "/checkpoints",
                    "path": f"/checkpoints/{name}",
                }
            }
        }
        body.update(spec)
        return {
            "apiVersion": "cairn.dev/v1alpha1",
            "kind": "Checkpoint",
            "metadata": {"name": name},
            "spec": body,
        }

    return make
