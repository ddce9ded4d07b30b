"""SIGTERM ends in a committed checkpoint of the step reached, on every rank, then exit 143."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from cairn_agent.storage import layout
from cairn_agent.storage.listing import committed_iterations

from tests.api._bodies import unpack
from tests.distributed import run_ranks
from tests.preemption._sigterm_bodies import resume, train_until_sigterm

RNG = random.Random(20261130)


def _run(
    root: Path, signal_at: int, signalled: list[int], env: dict[str, str] | None = None, **ckpt: Any
) -> list[dict[str, Any]]:
    return [
        unpack(r)
        for r in run_ranks(
            train_until_sigterm,
            2,
            str(root),
            {"CAIRN_AGREE_EVERY_STEPS": "1", **(env or {})},
            signal_at,
            signalled,
            ckpt,
        )
    ]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _assert_resumes_bit_exact(root: Path, stopped: list[dict[str, Any]], step: int) -> None:
    resumed = [unpack(r) for r in run_ranks(resume, 2, str(root))]
    for before, after in zip(stopped, resumed, strict=True):
        assert after["iteration"] == step
        assert _same(before["params"], after["params"])
        assert _same(before["adam"], after["adam"])
        assert _same(before["rng"], after["rng"])


@pytest.mark.parametrize("signalled", [[0, 1], [1]], ids=["every-rank", "one-rank"])
def test_sigterm_saves_the_step_reached_and_the_resume_is_bit_exact(
    tmp_path: Path, signalled: list[int]
) -> None:
    signal_at = RNG.randrange(5, 15)
    stopped = _run(tmp_path, signal_at, signalled, save_interval=4, most_recent_k=-1)
    # The signal is offered at the boundary of the step it arrived in and acted on at the next
    # (the agreement's one-step lag): every rank stops at that same step, and saves it.
    reached = signal_at + 1
    assert [s["step"] for s in stopped] == [reached, reached]
    assert [s["code"] for s in stopped] == [143, 143]
    assert all("checkpoint committed" in s["message"] for s in stopped)
    assert layout.tracker_path(tmp_path).read_text().strip() == str(reached)
    assert reached in committed_iterations(tmp_path)
    _assert_resumes_bit_exact(tmp_path, stopped, reached)


def test_sigterm_with_an_async_save_in_flight_finalizes_it_then_saves(tmp_path: Path) -> None:
    stopped = _run(tmp_path, 5, [0, 1], async_save=True, save_interval=4, most_recent_k=-1)
    assert [s["step"] for s in stopped] == [6, 6]
    assert {4, 6} <= set(committed_iterations(tmp_path))  # the in-flight save, then the final
    assert layout.tracker_path(tmp_path).read_text().strip() == "6"
    _assert_resumes_bit_exact(tmp_path, stopped, 6)


def test_a_budget_too_small_exits_cleanly_and_keeps_the_previous_checkpoint(
    tmp_path: Path,
) -> None:
    # A 1 s grace period leaves no budget after the safety margin: the measured save time
    # (from the save at step 4) cannot fit, so the final save is skipped up front.
    env = {"CAIRN_TERMINATION_GRACE_SECONDS": "1"}
    stopped = _run(tmp_path, 6, [0, 1], env, save_interval=4, most_recent_k=-1)
    assert [s["code"] for s in stopped] == [143, 143]
    assert all("not saved" in s["message"] and "grace period" in s["message"] for s in stopped)
    assert committed_iterations(tmp_path) == [4]
    assert layout.tracker_path(tmp_path).read_text().strip() == "4"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cairn-staging")]
