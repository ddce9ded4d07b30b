"""The engine demo (``make demo``) runs end to end and reports a verified round trip."""

from __future__ import annotations

from pathlib import Path

from cairn_agent.engine.demo import DEMO_ITERATION, roundtrip_demo
from cairn_agent.storage import layout


def test_roundtrip_demo_saves_verifies_and_reloads_on_two_ranks(tmp_path: Path) -> None:
    summary = roundtrip_demo(tmp_path / "ckpt", world_size=2)
    assert "manifest verified" in summary
    assert "rank 0: " in summary and "rank 1: " in summary
    assert summary.count("restored bit-exact") == 2
    assert (
        layout.iteration_dir(tmp_path / "ckpt", DEMO_ITERATION) / layout.MANIFEST_FILENAME
    ).exists()
