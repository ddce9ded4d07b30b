"""The GPU verification kit: ``make gpu-check`` proves Cairn's CUDA paths in one command.

On a machine with CUDA every check runs on the GPU over an NCCL process group; without
CUDA the same checks run what has a CPU meaning on gloo and name what they skipped. See
``gpu/README.md``.
"""
