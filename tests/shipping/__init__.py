"""Shipping parts: the cairn CLI, the kubectl plugin, the Helm chart, the Dockerfile, examples."""
