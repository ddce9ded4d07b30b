"""A megatron-core GPTModel with a torch Adam round-trips through the facade on 2 gloo ranks,
saved from Bridge-style state/config objects (only the import changed), and megatron-core's own
``dist_checkpointing.load`` reads the checkpoint Cairn wrote."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.api._bodies import unpack
from tests.api._gpt import gpt_round_trip
from tests.distributed import run_ranks


def test_gpt_model_round_trip_and_megatron_core_reads_it(tmp_path: Path) -> None:
    results = [unpack(r) for r in run_ranks(gpt_round_trip, 2, str(tmp_path / "gpt"))]
    for out in results:
        assert out["iteration"] == 1
        assert out["run_config"] == "written_by: bridge-like config\n"
        saved, resumed = out["saved"], out["resumed"]
        assert saved["params"].keys() == resumed["params"].keys()
        assert all(torch.equal(saved["params"][k], resumed["params"][k]) for k in saved["params"])
        for mine, theirs in zip(saved["adam"], resumed["adam"], strict=True):
            assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))
        assert all(torch.equal(saved["params"][k], out["oracle"][k]) for k in saved["params"])
