"""Which node each rank runs on, as the launcher sees it, and each node's local directory.

A rank's node comes from, in order: ``CAIRN_NODE_RANK`` (Cairn's own variable, e.g. set from
the pod's JobSet index), ``GROUP_RANK`` (torchrun's node rank), else the host name. A node's
local directory is ``CAIRN_LOCAL_DIR`` when set (each node its own volume), else
``non_persistent_local_ckpt_dir`` with ``{node}`` replaced by the node's name. So one machine
can run 4 ranks as 2 nodes x 2 ranks, each node with its own directory, and lose a node by
deleting that directory.

Replication cliques are nvidia-resiliency-ext's (``replication_jump`` apart, ``replication_
factor`` ranks each); the jump defaults to the ranks per node, which puts every copy of a part
on a different node when ranks are numbered node by node, as launchers do.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cairn_agent.engine import dist

log = logging.getLogger(__name__)

ENV_NODE_RANK = "CAIRN_NODE_RANK"
"""Cairn's node identity of this rank (any string; usually the node's index)."""
ENV_LOCAL_DIR = "CAIRN_LOCAL_DIR"
"""This node's local checkpoint directory; overrides ``non_persistent_local_ckpt_dir``."""
TORCHRUN_NODE_RANK = "GROUP_RANK"
NODE_PLACEHOLDER = "{node}"


def node_name(environ: Mapping[str, str] | None = None) -> str:
    """This rank's node, from the launcher's environment (see the module docstring)."""
    env = os.environ if environ is None else environ
    for variable in (ENV_NODE_RANK, TORCHRUN_NODE_RANK):
        value = env.get(variable, "").strip()
        if value:
            return f"node-{value}" if value.isdigit() else value
    return socket.gethostname()


def node_dir(configured: str, node: str, environ: Mapping[str, str] | None = None) -> Path:
    """The local directory of ``node``: ``$CAIRN_LOCAL_DIR``, else the templated config."""
    env = os.environ if environ is None else environ
    override = env.get(ENV_LOCAL_DIR, "").strip()
    if override:
        return Path(override)
    return Path(configured.replace(NODE_PLACEHOLDER, node))


@dataclass(frozen=True)
class NodeMap:
    """Every rank's node and local directory, the same on every rank."""

    nodes: tuple[str, ...]
    """Node of each global rank."""
    hosts: tuple[str, ...]
    dirs: tuple[str, ...]
    """Local directory of each rank's node."""

    @property
    def names(self) -> list[str]:
        """Distinct nodes, in the order of their first rank."""
        return list(dict.fromkeys(self.nodes))

    def ranks_per_node(self) -> int | None:
        """The number of ranks on each node, or None when nodes differ."""
        counts = {self.nodes.count(node) for node in self.names}
        return counts.pop() if len(counts) == 1 else None

    def nodes_of(self, ranks: list[int]) -> list[str]:
        return [self.nodes[r] for r in ranks]

    def shared_dirs(self) -> list[str]:
        """Directories that two nodes on one host would share (they could not fail apart)."""
        seen: dict[tuple[str, str], str] = {}
        shared: set[str] = set()
        for node, host, directory in zip(self.nodes, self.hosts, self.dirs, strict=True):
            owner = seen.setdefault((host, directory), node)
            if owner != node:
                shared.add(directory)
        return sorted(shared)


def gather_node_map(configured: str) -> NodeMap:
    """Every rank's node and directory (collective: one object all-gather)."""
    node = node_name()
    mine = (node, socket.gethostname(), str(node_dir(configured, node)))
    gathered = dist.all_gather_object(mine)
    nodes = NodeMap(
        nodes=tuple(g[0] for g in gathered),
        hosts=tuple(g[1] for g in gathered),
        dirs=tuple(g[2] for g in gathered),
    )
    for directory in nodes.shared_dirs():
        log.warning(
            "local checkpoint directory %s is used by several nodes on one host: they cannot "
            "fail independently; put %s in non_persistent_local_ckpt_dir or set %s per node",
            directory,
            NODE_PLACEHOLDER,
            ENV_LOCAL_DIR,
        )
    return nodes


def default_jump(nodes: NodeMap) -> int:
    """``replication_jump`` when unset: the ranks per node (``ValueError`` if nodes differ)."""
    per_node = nodes.ranks_per_node()
    if per_node is None:
        raise ValueError(
            "nodes run different numbers of ranks, so replication_jump cannot default to the "
            "ranks per node; set replication_jump"
        )
    return per_node


def check_clique_spans_nodes(clique: list[int], nodes: NodeMap) -> None:
    """Warn when two copies of a part would live on one node (they would be lost together)."""
    on = nodes.nodes_of(clique)
    if len(set(on)) < len(on):
        log.warning(
            "replication clique %s puts copies on nodes %s: copies on one node are lost "
            "together; set replication_jump to the ranks per node",
            clique,
            on,
        )
