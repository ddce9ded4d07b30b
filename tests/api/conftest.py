"""One training run shared by the seed-API tests: 2 gloo ranks, checkpoints at steps 1-3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api._bodies import save_and_continue, unpack
from tests.distributed import run_ranks


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """(checkpoint root, per-rank results of ``save_and_continue``)."""
    root = tmp_path_factory.mktemp("ckpt") / "run"
    return root, [unpack(r) for r in run_ranks(save_and_continue, 2, str(root))]
