"""Which device a process group's control tensors (flags, counters) must live on.

megatron-core hard-codes ``torch.cuda.current_device()`` for such tensors, which is why its
save path cannot run on CPU (spec §4). Cairn derives the device from the group's backend
instead: NCCL only accepts accelerator tensors, gloo and MPI only host tensors.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

_HOST_BACKENDS = frozenset({"gloo", "mpi"})


def _backend_name(group: dist.ProcessGroup | None) -> str:
    """The group's backend, e.g. ``gloo``, ``nccl`` or ``cpu:gloo,cuda:nccl``."""
    return str(dist.get_backend(group)).lower()


def _has_host_backend(backend: str) -> bool:
    # A multi-device group ("cpu:gloo,cuda:nccl") accepts host tensors: prefer them, they
    # need no device synchronisation and work whatever device the caller selected.
    if ":" in backend:
        return any(part.split(":", 1)[0] == "cpu" for part in backend.split(","))
    return backend in _HOST_BACKENDS


def _current_accelerator() -> torch.device | None:
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if accelerator is None:
        return None
    return torch.device(accelerator.type, torch.accelerator.current_device_index())


def collective_device(group: dist.ProcessGroup | None = None) -> torch.device:
    """Device for control tensors of collectives on ``group``.

    ``cuda:<current>`` when the group's backend is NCCL, the current accelerator for other
    accelerator backends, and ``cpu`` for gloo/MPI or when no process group is initialised.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return torch.device("cpu")
    backend = _backend_name(group)
    if _has_host_backend(backend):
        return torch.device("cpu")
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return _current_accelerator() or torch.device("cpu")
