"""Cairn agent: the in-pod checkpointing library imported by every training rank."""
