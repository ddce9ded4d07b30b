"""Save at step 3 on 2 ranks, resume in a fresh process group: training continues bit-identically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from cairn_agent.storage import layout

from tests.api._bodies import resume_and_continue, unpack
from tests.distributed import run_ranks


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_layout_is_megatron_compatible(
    trained: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, _ = trained
    assert (root / layout.TRACKER_FILENAME).read_text() == "3"
    assert (root / layout.LATEST_TRAIN_STATE_FILENAME).is_file()
    iter3 = layout.iteration_dir(root, 3)
    names = {p.name for p in iter3.iterdir()}
    assert {
        "metadata.json",
        "common.pt",
        ".metadata",
        "train_state.pt",
        "run_config.yaml",
        "cairn.manifest.json",
        "__0_0.distcp",
        "__1_0.distcp",
    } <= names
    common = torch.load(iter3 / "common.pt", weights_only=False)
    assert common["checkpoint_version"] == 3.0 and common["iteration"] == 3
    train_state = torch.load(iter3 / "train_state.pt", weights_only=True)
    assert train_state["step"].item() == 3 and train_state["step"].dtype == torch.int64
    assert (
        root / layout.DATALOADER_SUBDIR / "iter_0000003" / "train_dataloader_dprank001.pt"
    ).is_file()


def test_most_recent_k_keeps_tracker_target_and_deletes_only_after_commit(
    trained: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, results = trained
    rank0 = results[0]
    assert rank0["listings"] == [[1], [1, 2], [2, 3]]
    assert rank0["leftover_removed"]  # start-up GC before the first save
    # A save that fails inside the commit deletes nothing and leaves the tracker alone.
    assert [r["failure"] for r in results] == ["CommitError", "CommitError"]
    assert rank0["after_failure"] == [2, 3]
    assert rank0["tracker"] == 3


def test_resume_restores_everything_and_continues_bit_identically(
    trained: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, saved = trained
    resumed = [unpack(r) for r in run_ranks(resume_and_continue, 2, str(root))]
    for rank in range(2):
        before, after = saved[rank]["at_save"], resumed[rank]["resumed"]
        assert (after["iteration"], after["step"], after["flops"]) == (3, 3, 300.0)
        assert after["consumed"] == 3 * 4 * 2
        assert after["data_pos"] == 3
        assert _same(before["params"], after["params"])
        for mine, theirs in zip(before["adam"], after["adam"], strict=True):
            assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))
        assert before["lr"] == after["lr"]
        assert before["draws"] == after["draws"], f"rank {rank}: RNG streams differ after resume"
        assert _same(saved[rank]["final"], resumed[rank]["final"])
        # Weights-only loads (no optimizer): into a model, and returned as a state dict.
        assert resumed[rank]["weights_only_result"] is None
        assert _same(before["params"], resumed[rank]["weights_only"])
        assert _same(before["params"], resumed[rank]["returned"])
