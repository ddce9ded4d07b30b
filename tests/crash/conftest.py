"""The crash suite's fork server: one for the package, shared by every kill loop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.crash.harness import Zygote


@pytest.fixture(scope="package")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    server = Zygote(tmp_path_factory.mktemp("crash-zygote") / "zygote.log")
    try:
        yield server
    finally:
        server.close()
