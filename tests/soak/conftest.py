"""The ``soak`` marker, the crash suite's fork server, and the soak report at the end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.crash.harness import Zygote

REPORTS: list[dict[str, Any]] = []
"""Filled by soak tests; printed in the terminal summary (pytest -q hides test output)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: long-running randomised kill loop (make soak; deselected by make test)"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for report in REPORTS:
        terminalreporter.write_sep("-", f"soak report: {report['name']}")
        for key, value in report.items():
            if key != "name":
                terminalreporter.write_line(f"{key}: {value}")


@pytest.fixture(scope="package")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    server = Zygote(tmp_path_factory.mktemp("soak-zygote") / "zygote.log")
    try:
        yield server
    finally:
        server.close()
