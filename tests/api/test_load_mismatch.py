"""A model whose shapes differ from the checkpoint is the caller's bug: load raises, never falls back."""

from __future__ import annotations

from pathlib import Path

from tests.api._mismatch import save_then_load_wider
from tests.distributed import run_ranks


def test_shape_mismatch_raises_naming_the_tensor_and_skips_nothing(tmp_path: Path) -> None:
    outcomes = run_ranks(save_then_load_wider, 2, str(tmp_path))
    for outcome in outcomes:
        assert outcome.startswith("CheckpointMismatchError"), outcome
        assert "0.weight" in outcome and "(16, 4)" in outcome
        assert "iter_0000002" in outcome  # the newest checkpoint, not an older one
        assert outcome.endswith("skipped=[]")  # nothing was reported as corrupt
