"""Fixtures of the operator suite: a sandbox API server and the operator running against it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from cairn_operator.run import RunningOperator, run_in_thread
from cairn_operator.settings import OperatorSettings
from cairn_operator.testing import Sandbox, pruned_checkpoint_fields, validate_checkpoint

T = TypeVar("T")
FAST = OperatorSettings(health_interval_s=0.3, gc_image="cairn:test")


class ShiftedClock:
    """Real UTC time plus an offset the test moves forward (no sleeping for timeouts)."""

    def __init__(self) -> None:
        self._offset = dt.timedelta()
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return dt.datetime.now(dt.UTC) + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += dt.timedelta(seconds=seconds)

    def reset(self) -> None:
        with self._lock:
            self._offset = dt.timedelta()


def wait_for(probe: Callable[[], T | None], *, timeout: float = 15.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception:  # noqa: BLE001 - the object may not exist yet
            last = None
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")


def get_when(
    sandbox: Sandbox,
    name: str,
    predicate: Callable[[dict[str, Any]], Any],
    *,
    timeout: float = 15.0,
    what: str = "condition",
) -> dict[str, Any]:
    """Poll the Checkpoint ``name`` until ``predicate(obj)`` holds; return the object."""

    def probe() -> dict[str, Any] | None:
        obj = sandbox.get("checkpoints", name)
        return obj if predicate(obj) else None

    return wait_for(probe, timeout=timeout, what=what)


def checkpoint(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    """A Checkpoint manifest with a persistent root ``/ckpt/<name>`` on PVC ``ckpt-pvc``."""
    body: dict[str, Any] = {
        "storage": {
            "persistent": {"claimName": "ckpt-pvc", "mountPath": "/ckpt", "path": f"/ckpt/{name}"}
        },
    }
    body.update(spec)
    return {
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "Checkpoint",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def assert_schema_clean(obj: dict[str, Any]) -> None:
    """The object is valid for the CRD and the API server would prune nothing of it."""
    assert validate_checkpoint(obj) == []
    assert pruned_checkpoint_fields(obj) == []


def events_for(sandbox: Sandbox, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in sandbox.list("events")
        if (e.get("involvedObject") or {}).get("name") == name and e.get("reason") == reason
    ]


def wait_events(sandbox: Sandbox, name: str, reason: str, count: int = 1) -> list[dict[str, Any]]:
    """Wait until at least ``count`` Events of ``reason`` exist for ``name``; return them."""

    def probe() -> list[dict[str, Any]] | None:
        found = events_for(sandbox, name, reason)
        return found if len(found) >= count else None

    return wait_for(probe, what=f"{count} {reason} event(s) for {name}")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(emulator_options={"request_log_limit": 4096}) as sb:
        yield sb


@pytest.fixture(scope="module")
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, clock: ShiftedClock) -> Iterator[RunningOperator]:
    with run_in_thread(sandbox.url, settings=FAST, clock=clock) as op:
        yield op
