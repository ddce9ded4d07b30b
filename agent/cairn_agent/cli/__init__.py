"""Command-line tools: the ``cairn`` console script and the ``kubectl cairn`` plugin.

Every module here imports without torch (the operator image has none); only ``cairn demo``
imports torch, lazily, inside the step that needs it.
"""
