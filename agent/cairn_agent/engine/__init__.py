"""The torch engine of the agent: sharded save/load in megatron-core's ``torch_dist`` format.

Layers, lowest first (each module imports only the ones above it in this list):

- ``device``: which device a collective's control tensors live on (gloo → cpu, nccl → cuda).
- ``dist``: collectives that also work without an initialised process group (single process).
- ``sharded_dict``: plain PyTorch / DTensor state dicts → megatron-core sharded state dicts.
- ``dcp_files``: DCP's file writer with each file checksummed (CRC32C) as it is written and its
  writeback started early; shared by the sync engine and the async worker.
- ``sharded``: one rank's part of a DCP write (megatron-core planner + torch FileSystemWriter,
  no CUDA-bound async machinery) and megatron-core's load.
- ``save``: the synchronous commit protocol across ranks (DESIGN.md §3), split into steps
  that the async engine reuses.
- ``load``: verify a committed iteration directory, then load it.

Nothing here initialises CUDA: control tensors follow the process group's backend.
"""

from __future__ import annotations
