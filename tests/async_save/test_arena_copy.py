"""The staging copy: every kind of source lands bit-exact in its slot, dense host tensors by
libc's memmove (the fast path the blocking part of an async save rests on)."""

from __future__ import annotations

import ctypes
import os
from typing import Any

import pytest
import torch
from cairn_agent.async_save import arena
from cairn_agent.async_save.arena import StagingArena, attach, copy_into
from cairn_agent.async_save.slots import TensorSlot


@pytest.fixture
def memmoves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the memmove calls the copy makes (the real memmove still runs)."""
    sizes: list[int] = []
    real = ctypes.memmove

    def counting(dst: int, src: int, size: int) -> Any:
        sizes.append(size)
        return real(dst, src, size)

    monkeypatch.setattr(arena.ctypes, "memmove", counting)
    return sizes


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


@pytest.mark.parametrize(
    "src",
    [
        torch.rand(1000),
        torch.rand(7, 13).to(torch.bfloat16),
        torch.arange(50, dtype=torch.int64).view(5, 10),
        torch.tensor(3.5),
        torch.rand(100)[10:60],  # contiguous slice: its bytes start at an offset
    ],
    ids=["fp32", "bf16", "int64", "0-dim", "offset-slice"],
)
def test_dense_host_tensors_are_memmoved_bit_exact(src: torch.Tensor, memmoves: list[int]) -> None:
    dst = torch.zeros_like(src)
    copy_into(dst, src)
    assert torch.equal(_bits(dst), _bits(src))
    assert memmoves == [src.numel() * src.element_size()]


@pytest.mark.parametrize(
    "src",
    [
        torch.rand(6, 4).t(),  # transposed: not one block
        torch.rand(20)[::2],  # strided
        torch.randn(8, dtype=torch.complex64).conj(),  # conjugate bit, resolved by copy_
        torch.randn(8, dtype=torch.complex64).conj().imag,  # negative bit
    ],
    ids=["transposed", "strided", "conj", "neg"],
)
def test_other_views_go_through_copy_and_land_resolved(
    src: torch.Tensor, memmoves: list[int]
) -> None:
    dst = torch.empty(src.shape, dtype=src.dtype)
    copy_into(dst, src)
    assert torch.equal(dst, src.resolve_conj().resolve_neg())
    assert memmoves == []


class _Wrapped(torch.Tensor):
    """A tensor subclass: its bytes are its own business (FP8 wrappers, DTensor)."""


def test_parameters_are_memmoved_and_tensor_subclasses_go_through_copy(
    memmoves: list[int],
) -> None:
    param = torch.nn.Parameter(torch.rand(16))
    dst = torch.empty(16)
    copy_into(dst, param)
    assert torch.equal(dst, param.detach()) and memmoves == [64]
    wrapped = torch.rand(16).as_subclass(_Wrapped)
    copy_into(dst, wrapped)
    assert torch.equal(dst, wrapped.as_subclass(torch.Tensor)) and memmoves == [64]


def test_a_dtype_mismatch_is_converted_not_reinterpreted(memmoves: list[int]) -> None:
    src = torch.arange(10, dtype=torch.int32)
    dst = torch.empty(10, dtype=torch.float32)
    copy_into(dst, src)
    assert torch.equal(dst, src.float())
    assert memmoves == []


def test_empty_tensors_copy_nothing(memmoves: list[int]) -> None:
    copy_into(torch.empty(0), torch.empty(0))
    assert memmoves == []


def test_the_worker_mapping_sees_every_staged_tensor(memmoves: list[int]) -> None:
    tensors = {("a", (0,)): torch.rand(33), ("b", (0, 0)): torch.rand(4, 5).to(torch.bfloat16)}
    slots = [
        TensorSlot(("a", (0,)), 0, torch.float32, (33,)),
        TensorSlot(("b", (0, 0)), 256, torch.bfloat16, (4, 5)),
    ]
    staged = StagingArena(slots)
    try:
        staged.stage(tensors)
        _buffer, views = attach(os.dup(staged.fd), slots)  # what the worker maps
        for key, tensor in tensors.items():
            assert torch.equal(views[key], tensor)
        assert len(memmoves) == 2
        del views
    finally:
        staged.close()
