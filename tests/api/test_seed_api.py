"""Every function, class and constant of the seed document exists in ``cairn_agent.checkpointing``
with the documented parameter names (in order) and defaults: a Megatron-Bridge user can switch
the import and keep their call sites."""

from __future__ import annotations

import ast
import inspect
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cairn_agent import checkpointing

_PREFIX = "- bridge.training.checkpointing."
_CLASS_PREFIX = "- class bridge.training.checkpointing."
_PARAM = re.compile(r"^- (\w+): ")
_NO_DEFAULT = object()


@dataclass
class SeedEntry:
    name: str
    kind: str  # "function", "constant" or "class"
    params: list[tuple[str, Any]] = field(default_factory=list)
    value: str | None = None
    members: list[str] = field(default_factory=list)


def _seed_path() -> Path:
    relative = (
        Path(__file__).resolve().parents[3]
        / "shared"
        / "seed"
        / "megatron-bridge-checkpointing-api.txt"
    )
    return (
        relative
        if relative.is_file()
        else Path("/work/shared/seed/megatron-bridge-checkpointing-api.txt")
    )


def _default(text: str) -> Any:
    if " = " not in text:
        return _NO_DEFAULT
    raw = text.rsplit(" = ", 1)[1].rstrip(",").strip().replace("\u2018", "'").replace("\u2019", "'")
    return ast.literal_eval(raw)


def _split_top_level(params: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in params:
        depth += char in "[("
        depth -= char in "])"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in [*parts, current.strip()] if p]


def _one_line_params(line: str) -> list[tuple[str, Any]]:
    """``name(a: int, b: str = 'x') ret #``: one-line signatures have no nested parentheses."""
    inner = line[line.index("(") + 1 : line.index(")")]
    return [(p.split(":")[0].strip(), _default(p)) for p in _split_top_level(inner)]


def _parse_block(lines: list[str], start: int, entry: SeedEntry) -> None:
    """Multi-line signature: ``- name: type = default,`` lines, continuations append defaults."""
    for line in lines[start:]:
        if not line.startswith("- ") or line.startswith(_PREFIX):
            return
        match = _PARAM.match(line)
        if match:
            entry.params.append((match.group(1), _default(line)))
        elif entry.params and " = " in line:
            name, _ = entry.params[-1]
            entry.params[-1] = (name, _default(line))


def parse_seed(text: str) -> list[SeedEntry]:
    lines = text.splitlines()
    entries: list[SeedEntry] = []
    for index, line in enumerate(lines):
        if line.startswith(_CLASS_PREFIX):
            name = line[len(_CLASS_PREFIX) :].split("(")[0]
            entry = SeedEntry(name, "class")
            for member in lines[index + 1 :]:
                if re.fullmatch(r"- [A-Z_]+#", member):
                    entry.members.append(member[2:-1])
                elif member.startswith(_PREFIX):
                    break
            entries.append(entry)
        elif line.startswith(_PREFIX):
            rest = line[len(_PREFIX) :]
            name = re.match(r"\w+", rest).group(0)  # type: ignore[union-attr]
            if rest == f"{name}#":
                entries.append(SeedEntry(name, "constant", value=lines[index + 1].strip()))
            elif rest == f"{name}(":
                entry = SeedEntry(name, "function")
                _parse_block(lines, index + 1, entry)
                entries.append(entry)
            else:
                entries.append(SeedEntry(name, "function", params=_one_line_params(rest)))
    return entries


SEED = parse_seed(_seed_path().read_text(encoding="utf-8"))


def test_seed_document_parses_into_the_expected_entries() -> None:
    names = {e.name for e in SEED}
    assert len([e for e in SEED if e.kind == "function"]) == 29
    assert {
        "TRACKER_PREFIX",
        "_CHECKPOINT_VERSION",
        "logger",
        "_NON_PERSISTENT_CKPT_SUBDIR",
        "CheckpointType",
    } <= names
    save = next(e for e in SEED if e.name == "save_checkpoint")
    assert save.params[-1] == ("preprocess_common_state_dict_fn", None)
    np_iter = next(e for e in SEED if e.name == "_get_non_persistent_iteration")
    assert np_iter.params == [
        ("non_persistent_global_dir", _NO_DEFAULT),
        ("non_persistent_ckpt_type", None),
        ("checkpointing_context", None),
    ]


@pytest.mark.parametrize("entry", [e for e in SEED if e.kind == "function"], ids=lambda e: e.name)
def test_function_signature_matches_seed(entry: SeedEntry) -> None:
    fn = getattr(checkpointing, entry.name, None)
    assert callable(fn), f"cairn_agent.checkpointing.{entry.name} is missing"
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert [p.name for p in positional[: len(entry.params)]] == [n for n, _ in entry.params]
    for param, (_, default) in zip(positional, entry.params, strict=False):
        expected = inspect.Parameter.empty if default is _NO_DEFAULT else default
        assert param.default == expected, f"{entry.name}({param.name}) default"
    # Anything beyond the seed must be optional, so seed call sites keep working.
    for extra in params[len(entry.params) :]:
        assert extra.default is not inspect.Parameter.empty or extra.kind in (
            extra.VAR_POSITIONAL,
            extra.VAR_KEYWORD,
        )


def test_constants_and_classes_match_seed() -> None:
    for entry in SEED:
        assert hasattr(checkpointing, entry.name), entry.name
        value = getattr(checkpointing, entry.name)
        if entry.kind == "class":
            assert [m for m in entry.members if m not in value.__members__] == []
        elif entry.value == "None":
            assert value is None
        elif entry.value and entry.value.startswith("\u2018getLogger"):
            assert isinstance(value, logging.Logger)
        elif entry.value:
            assert value == entry.value.strip("\u2018\u2019")
    assert checkpointing.TRACKER_PREFIX == "latest"
    assert checkpointing._NON_PERSISTENT_CKPT_SUBDIR == "non_persistent"
    assert {m.name for m in checkpointing.CheckpointType} >= {"LOCAL", "GLOBAL", "FSDP_DTENSOR"}
