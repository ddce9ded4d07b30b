"""Lower layers never import higher ones; torch-free layers never import torch.

Every ``import`` statement of every module is read from source (module level and inside
functions alike), so a lazy import cannot sneak past the rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "agent" / "cairn_agent"
OPERATOR = REPO / "operator" / "cairn_operator"

# Agent layers, lowest first. A module may import its own layer and the ones below.
AGENT_LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"errors", "config", "__init__", "py"}),
    ("storage", {"storage"}),
    ("resource", {"resource"}),
    ("engine", {"engine"}),
    ("async_save", {"async_save"}),
    ("state", {"state"}),
    ("cluster", {"cluster"}),
    ("local", {"local"}),
    ("flows", {"flows"}),
    ("facade", {"saving", "boundary", "preemption", "checkpointing", "manager", "bridge"}),
    ("cli", {"cli"}),
]
TORCH_FREE = {"base", "storage", "resource", "cluster"}
TORCH_MODULES = ("torch", "megatron", "nvidia_resiliency_ext", "numpy")


def _layer_of_agent_module(dotted: str) -> str | None:
    """``cairn_agent.flows.save`` -> ``flows``; None for modules outside the agent."""
    parts = dotted.split(".")
    if parts[0] != "cairn_agent":
        return None
    head = parts[1] if len(parts) > 1 else "__init__"
    for layer, heads in AGENT_LAYERS:
        if head in heads:
            return layer
    raise AssertionError(f"{dotted}: no layer declared for cairn_agent.{head}; add it above")


def _rank(layer: str) -> int:
    return [name for name, _ in AGENT_LAYERS].index(layer)


def _imports(path: Path, package: str) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                yield node.lineno, f"{base}.{node.module}" if node.module else base
            elif node.module:
                yield node.lineno, node.module
                for alias in node.names:  # ``from cairn_agent import flows`` names a subpackage
                    yield node.lineno, f"{node.module}.{alias.name}"


def _modules(root: Path, prefix: str) -> list[tuple[Path, str]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        dotted = ".".join([prefix, *rel.parts])
        found.append((path, dotted))
    return found


def _agent_violations() -> list[str]:
    problems: list[str] = []
    for path, dotted in _modules(AGENT, "cairn_agent"):
        mine = _layer_of_agent_module(dotted)
        assert mine is not None
        package = dotted.rsplit(".", 1)[0]
        for line, target in _imports(path, package):
            where = f"{path.relative_to(REPO)}:{line}"
            if mine in TORCH_FREE and target.split(".")[0] in TORCH_MODULES:
                problems.append(f"{where}: torch-free layer {mine!r} imports {target}")
            if target.startswith("cairn_operator") and mine != "cli":  # the CLI runs both
                problems.append(f"{where}: the agent imports the operator ({target})")
            theirs = _layer_of_agent_module(target) if target.startswith("cairn_agent.") else None
            if theirs is not None and _rank(theirs) > _rank(mine) and mine != "cli":
                problems.append(
                    f"{where}: layer {mine!r} imports higher layer {theirs!r} ({target})"
                )
    return problems


def test_agent_layers_only_import_downwards() -> None:
    assert _agent_violations() == []


def test_engine_imports_no_flow_and_storage_no_resource() -> None:
    for path, dotted in _modules(AGENT / "engine", "cairn_agent.engine"):
        for line, target in _imports(path, dotted.rsplit(".", 1)[0]):
            assert not target.startswith("cairn_agent.flows"), f"{path}:{line} imports {target}"
    for path, dotted in _modules(AGENT / "storage", "cairn_agent.storage"):
        for line, target in _imports(path, dotted.rsplit(".", 1)[0]):
            assert not target.startswith("cairn_agent.resource"), f"{path}:{line} imports {target}"


def test_operator_imports_no_torch_and_only_torch_free_agent_layers() -> None:
    problems = []
    for path, dotted in _modules(OPERATOR, "cairn_operator"):
        for line, target in _imports(path, dotted.rsplit(".", 1)[0]):
            where = f"{path.relative_to(REPO)}:{line}"
            if target.split(".")[0] in TORCH_MODULES:
                problems.append(f"{where}: the operator imports {target}")
            layer = _layer_of_agent_module(target) if target.startswith("cairn_agent.") else None
            if layer is not None and layer not in TORCH_FREE | {"cli"}:
                problems.append(f"{where}: the operator imports agent layer {layer!r} ({target})")
    assert problems == []


@pytest.mark.parametrize("root,prefix", [(AGENT, "cairn_agent"), (OPERATOR, "cairn_operator")])
def test_product_code_never_imports_the_test_kit(root: Path, prefix: str) -> None:
    problems = []
    for path, dotted in _modules(root, prefix):
        if dotted.startswith("cairn_operator.testing"):
            continue
        for line, target in _imports(path, dotted.rsplit(".", 1)[0]):
            product = not dotted.startswith("cairn_agent.cli.")
            if product and target.startswith("cairn_operator.testing"):
                problems.append(f"{path.relative_to(REPO)}:{line}: imports the test kit")
    assert problems == []
