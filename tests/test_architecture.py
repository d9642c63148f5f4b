"""The rules of docs/architecture.md, checked on the source: layers, sizes, private names.

Imports are read with ``ast`` (also those inside functions), so a lazy import cannot hide a
dependency that goes the wrong way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "taskrank"

#: The layers of docs/architecture.md, bottom up: a module may import its own layer and those below.
LAYERS: dict[str, int] = {
    "vocabulary": 0,
    "errors": 0,
    "_lazy": 1,
    "atomic": 1,
    "locking": 1,
    "paths": 1,
    "threads": 1,
    "progress": 1,
    "environment": 1,
    "devices": 1,
    "tokenization": 1,
    "latex": 1,
    "checkpoints": 2,
    "arithmetic": 3,
    "data": 4,
    "retrieval": 4,
    "rerankers": 4,
    "evaluation": 4,
    "adapt": 4,
    "labelfree": 4,
    "tiny": 4,
    "config": 5,
    "experiment": 5,
    "report": 5,
    "demo": 5,
    "cli": 6,
    "__init__": 6,
}
#: checkpoints/ sits below both: the merge reads weights through it, re-rankers resolve references with it
MERGE_ENGINE = {"arithmetic"}
RANKING = {"rerankers", "retrieval", "evaluation"}


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def room(path: Path) -> str:
    """The top-level room of a module: ``arithmetic`` for arithmetic/merging.py, ``atomic`` for atomic.py."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def dotted(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ["taskrank", *parts]


def imports_of(source: str, package: list[str]) -> set[tuple[str, int]]:
    """The taskrank rooms a module of ``package`` (``["taskrank", "arithmetic"]``) imports, with lines."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "taskrank" and len(parts) > 1:
                    found.add((parts[1], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
            else:
                target = (node.module or "").split(".")
            if target[:1] != ["taskrank"]:
                continue
            if len(target) > 1:
                found.add((target[1], node.lineno))
            else:  # from taskrank import x: each name is a room
                found.update((alias.name, node.lineno) for alias in node.names)
    return found


def imported_rooms(path: Path) -> set[tuple[str, int]]:
    return imports_of(path.read_text(encoding="utf-8"), dotted(path)[:-1])


def upward(here: str, found: set[tuple[str, int]]) -> list[str]:
    return [
        f"line {line}: {here} (layer {LAYERS[here]}) imports {other} (layer {LAYERS[other]})"
        for other, line in sorted(found)
        if other in LAYERS and LAYERS[other] > LAYERS[here]
    ]


def test_every_room_has_a_layer():
    rooms = {room(p) for p in modules()}
    assert rooms <= set(LAYERS), sorted(rooms - set(LAYERS))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_the_layers(path):
    problems = upward(room(path), imported_rooms(path))
    assert not problems, problems


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_the_merge_engine_and_the_ranking_pipeline_never_import_each_other(path):
    here = room(path)
    others = {other for other, _ in imported_rooms(path)}
    if here in MERGE_ENGINE:
        assert not others & RANKING
    if here in RANKING:
        assert not others & MERGE_ENGINE


def test_the_report_imports_no_model_code():
    for path in (SRC / "report").rglob("*.py"):
        others = {other for other, _ in imported_rooms(path)}
        assert not others & (MERGE_ENGINE | RANKING | {"adapt", "experiment"}), path


def test_the_rule_checker_sees_upward_imports():
    # the checks above must be able to fail: relative, absolute and in-function imports are seen
    source = (
        "from ..cli import app\nimport taskrank.experiment.runner\n\ndef f():\n    from .vector import T\n"
    )
    found = imports_of(source, ["taskrank", "arithmetic"])
    assert found == {("cli", 1), ("experiment", 2), ("arithmetic", 5)}
    assert [p.split(":")[0] for p in upward("arithmetic", found)] == ["line 1", "line 2"]


def test_no_module_over_500_lines_and_no_function_over_80():
    too_long = []
    for path in modules():
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > 500:
            too_long.append(f"{path.relative_to(SRC)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    too_long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}() {length} lines")
    assert not too_long, too_long


def test_no_module_imports_another_modules_private_names():
    private = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").startswith("taskrank")
            ):
                names = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                private += [f"{path.relative_to(SRC)}:{node.lineno} {name}" for name in names]
    assert not private, private
