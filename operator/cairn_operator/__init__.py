"""Cairn operator: manages Checkpoint custom resources (kopf)."""
