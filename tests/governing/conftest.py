"""Fixtures of the governing suite: one sandbox API server with the operator, for the folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cairn_operator.run import run_in_thread
from cairn_operator.testing import Sandbox

from tests.governing._loop import Plan
from tests.governing.steering import pod_env
from tests.operator.conftest import FAST


@pytest.fixture(scope="package")
def sandbox() -> Iterator[Sandbox]:
    """The API server of every test here but the outage one, the operator reconciling in it."""
    with Sandbox() as sb, run_in_thread(sb.url, settings=FAST):
        yield sb


def plan_for(sandbox: Sandbox, name: str, tmp_path: Path, **options: object) -> Plan:
    """A run of the job that names Checkpoint ``name``, saving under ``tmp_path/ckpt``."""
    return Plan(
        root=str(tmp_path / "ckpt"),
        env=pod_env(sandbox, name),
        gates=str(tmp_path / "gates"),
        **options,  # type: ignore[arg-type]
    )
