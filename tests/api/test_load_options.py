"""Load options and failure modes: ckpt_step, load_optim, finetune, missing and corrupt
checkpoints, and non-persistent (node-local and global) checkpoints newer than the persistent
one, which are resumed from first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.api._bodies import load_options, unpack
from tests.distributed import run_ranks


def test_load_options_and_corruption(
    trained: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, saved = trained
    results = [unpack(r) for r in run_ranks(load_options, 2, str(root), str(tmp_path))]
    for rank, out in enumerate(results):
        at_save = saved[rank]["at_save"]["params"]
        assert out["ckpt_step"] == ((2, 200.0), 2)
        (it, _), n_state, params = out["no_optim"]
        assert it == 3 and n_state == 0
        assert all(torch.equal(params[k], at_save[k]) for k in at_save)
        (it, _), consumed, n_state, params = out["finetune"]
        assert (it, consumed, n_state) == (0, 0, 0)
        assert all(torch.equal(params[k], at_save[k]) for k in at_save)
        (it, _), finetune_flag, params = out["pretrained"]
        assert it == 0 and finetune_flag
        assert all(torch.equal(params[k], at_save[k]) for k in at_save)
        assert out["missing"] == "(0, 0.0)"
        assert out["missing_exit"] == "CheckpointNotFoundError"
        assert out["garbage_load"] == "TrackerCorruptError"
        assert out["garbage_read_metadata"] == "TrackerCorruptError"
        assert out["read_metadata"] == (3, False)
        (it, flops), skipped, messages = out["fallback"]
        assert (it, flops) == (2, 200.0)
        assert [Path(p).name for p, _ in skipped] == ["iter_0000003"]
        assert any("iter_0000003" in m and "NOT LOADABLE" in m for m in messages)
        local = out["local"]
        assert local["resumed"] == (2, 200.0, 2 * 4 * 2)
        assert local["same_params"]
        assert local["adam_steps"] == [2.0, 2.0, 2.0, 2.0]
        global_np = out["global_np"]
        assert global_np["persistent"] == [1]
        assert global_np["non_persistent"] == [3, 4]  # two kept by default
        assert global_np["resumed"] == (4, 400.0)  # the newer non-persistent one wins
        assert global_np["same_params"]
        # A Megatron-LM checkpoint (no manifest, no train_state.pt): progress from common.pt.
        (it, _), consumed, params = out["foreign"]
        assert (it, consumed) == (3, 0)
        assert all(torch.equal(params[k], at_save[k]) for k in at_save)
