"""Torch-free storage layer: on-disk names, durable I/O, tracker, manifest, commit, retention.

The operator, the kubectl plugin and the CLI import these modules; none may import torch.
"""
