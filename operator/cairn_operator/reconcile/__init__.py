"""Pure reconcile logic of the operator: no I/O, no kopf, an injected clock.

Each module turns a Checkpoint's ``spec`` and agent-written ``status`` (plain mappings) into the
operator-owned status it should have, the Events to post, and the objects to create. Handlers
(``cairn_operator.handlers``) apply the results through ``cairn_operator.k8s``.
"""
