"""Which training pods run on which node, and which nodes announce their pods' end.

The pod and node watches fill it; either may be seen first (an operator starting lists both at
once), so a pod placed on a node already cordoned and a node cordoned under a known pod both
find each other. It holds only what the watches delivered, so a restarted operator rebuilds it
from the initial lists. No I/O.
"""

from __future__ import annotations

import dataclasses

from cairn_operator.reconcile.preemption_signals import NodeState


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodRef:
    """A training pod: where it runs and which Checkpoint it belongs to."""

    uid: str
    name: str
    namespace: str
    checkpoint: str
    node: str | None


class NodeIndex:
    """Training pods by node, and the nodes that announce an end."""

    def __init__(self) -> None:
        self._pods: dict[str, PodRef] = {}
        self._nodes: dict[str, NodeState] = {}

    def pod_seen(self, pod: PodRef) -> NodeState | None:
        """Remember ``pod``; the state of its node if that node announces an end."""
        self._pods[pod.uid] = pod
        return None if pod.node is None else self._nodes.get(pod.node)

    def pod_gone(self, uid: str) -> None:
        self._pods.pop(uid, None)

    def node_seen(self, name: str, state: NodeState | None) -> list[PodRef]:
        """Remember the node's state; the training pods on it when it announces an end."""
        if state is None:
            self._nodes.pop(name, None)
            return []
        self._nodes[name] = state
        return [p for p in self._pods.values() if p.node == name]
