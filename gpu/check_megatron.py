"""Check 2: megatron-core's own ``dist_checkpointing`` and Cairn's engine read each other.

- megatron-core 0.16.1's ``dist_checkpointing.save`` (``torch_dist``, unpatched) of a small
  ``GPTModel`` on the GPU; Cairn's ``load_checkpoint_dir`` loads it, bit-exact, into a model
  built from another seed.
- Cairn's ``save_sync`` of the same model; megatron-core's ``dist_checkpointing.load`` loads
  it, bit-exact; Cairn loads it too.
- Both directories hold the same DCP keys and the same ``metadata.json``.

megatron-core's save calls ``torch.cuda`` unconditionally, so without CUDA its half is
skipped here (``tests/engine/test_megatron_compat.py`` drives it on CPU, patched).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gpu._common import Verdict, device, on_gpu

ITERATION = 11


def _gpt(seed: int) -> Any:
    """A 2-layer megatron-core GPTModel (local layer spec) on the device, seeded."""
    from megatron.core import tensor_parallel
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_config import TransformerConfig

    torch.manual_seed(seed)
    if on_gpu():  # parameters are initialised on the GPU, through megatron-core's RNG tracker
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
    config = TransformerConfig(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        use_cpu_initialization=not on_gpu(),
        pipeline_dtype=torch.float32,
    )
    model = GPTModel(
        config=config,
        transformer_layer_spec=get_gpt_layer_local_spec(),
        vocab_size=128,
        max_sequence_length=32,
    )
    return model.to(device())


def _state(model: Any, seed: int, iteration: int) -> dict[str, Any]:
    from megatron.core.dist_checkpointing import ShardedObject

    return {
        "model": model.sharded_state_dict(),
        "rng_state": ShardedObject("rng_state", {"seed": seed}, (1,), (0,)),
        "iteration": iteration,
    }


def _params(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v is not None}


def _bit_exact(a: Any, b: Any) -> bool:
    pa, pb = _params(a), _params(b)
    same = pa.keys() == pb.keys() and all(
        isinstance(v, torch.Tensor) and torch.equal(v, pb[k]) for k, v in pa.items()
    )
    return same and all(p.device == device() for p in b.parameters())


def _load_with(reader: str, saved: Any, directory: Path, seed: int, want: dict[str, Any]) -> bool:
    """Load ``directory`` with ``reader`` into a GPTModel from ``seed``; same as ``saved``?"""
    from cairn_agent.engine.load import load_checkpoint_dir
    from megatron.core import dist_checkpointing

    fresh = _gpt(seed)
    if _bit_exact(saved, fresh):
        raise RuntimeError("two seeds gave the same weights; the check would prove nothing")
    template = _state(fresh, 0, -1)
    template["rng_state"].data = None
    if reader == "cairn":
        loaded = load_checkpoint_dir(template, directory)
    else:
        loaded = dist_checkpointing.load(template, str(directory))
    fresh.load_state_dict(loaded["model"])
    got = {"rng_state": loaded["rng_state"], "iteration": loaded["iteration"]}
    return _bit_exact(saved, fresh) and got == want


def _megatron_saves(verdict: Verdict, directory: Path) -> None:
    from megatron.core import dist_checkpointing

    model = _gpt(3)
    directory.mkdir(parents=True)
    dist_checkpointing.save(
        _state(model, 300, 42), str(directory), sharded_strategy=("torch_dist", 1)
    )
    want = {"rng_state": {"seed": 300}, "iteration": 42}
    verdict.check(
        "megatron-core's own save, loaded by Cairn", _load_with("cairn", model, directory, 5, want)
    )


def _cairn_saves(verdict: Verdict, root: Path) -> Path:
    from cairn_agent.engine.save import SaveTarget, save_sync

    model = _gpt(1)
    final = save_sync(_state(model, 100, ITERATION), SaveTarget(root=root, iteration=ITERATION))
    want = {"rng_state": {"seed": 100}, "iteration": ITERATION}
    verdict.check(
        "Cairn's save, loaded by megatron-core", _load_with("megatron", model, final, 4, want)
    )
    verdict.check("Cairn's save, loaded by Cairn", _load_with("cairn", model, final, 2, want))
    return final


def _same_layout(ours: Path, theirs: Path) -> bool:
    from torch.distributed.checkpoint.filesystem import FileSystemReader

    ours_keys = FileSystemReader(str(ours)).read_metadata().state_dict_metadata.keys()
    theirs_keys = FileSystemReader(str(theirs)).read_metadata().state_dict_metadata.keys()
    same_json = json.loads((ours / "metadata.json").read_text()) == json.loads(
        (theirs / "metadata.json").read_text()
    )
    return set(ours_keys) == set(theirs_keys) and same_json


def run(verdict: Verdict, scratch: Path) -> None:
    from megatron.core import parallel_state

    parallel_state.initialize_model_parallel(1, 1)
    verdict.figures["device"] = str(device())
    try:
        ours = _cairn_saves(verdict, scratch / "cairn")
        if not on_gpu():
            verdict.skip(
                "megatron-core's own save (unpatched)",
                "no CUDA: megatron-core 0.16.1's save calls torch.cuda unconditionally",
            )
            return
        theirs = scratch / "megatron" / "iter_0000042"
        _megatron_saves(verdict, theirs)
        verdict.check(
            "same DCP keys and metadata.json as megatron-core", _same_layout(ours, theirs)
        )
    finally:
        parallel_state.destroy_model_parallel()
