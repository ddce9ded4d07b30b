"""Run one check in this process on a one-rank process group; print its verdict as JSON.

Invoked by the driver as ``python -m gpu._rank <check> <scratch dir>``, so each check starts
from a fresh process (a CUDA error or a hang in one cannot take the others down, and the
driver can bound it with a timeout). The last line on stdout is ``RESULT <json>``; logs go
to stderr.

The group is NCCL on a machine with CUDA (what Megatron training uses) and gloo otherwise;
the rendezvous is a ``FileStore`` in the scratch dir, so no port is needed.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from pathlib import Path

RESULT_PREFIX = "RESULT "
CHECKS = {
    "engine": "gpu.check_engine",
    "megatron": "gpu.check_megatron",
    "rng": "gpu.check_rng",
    "local": "gpu.check_local",
    "bench": "gpu.check_bench",
}


def _init_group(scratch: Path) -> str:
    import torch
    import torch.distributed as dist

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    use_cuda = torch.cuda.is_available() and os.environ.get("CAIRN_GPU_MODE") != "cpu"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(0)
    store = f"file://{scratch / 'store'}"
    dist.init_process_group(backend, init_method=store, rank=0, world_size=1)
    return backend


def main(argv: list[str]) -> int:
    name, scratch = argv[0], Path(argv[1])
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"[{name}] %(levelname)s %(name)s: %(message)s",
    )
    from gpu._common import Verdict

    verdict = Verdict()
    try:
        import torch.distributed as dist

        verdict.figures["backend"] = _init_group(scratch)
        module = importlib.import_module(CHECKS[name])
        module.run(verdict, scratch)
        if dist.is_initialized():
            dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - reported as this check's failure
        traceback.print_exc()
        verdict.check(f"ran to the end ({type(exc).__name__}: {exc})"[:300], False)
    verdict.report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
