"""Reading the experiment file: YAML with line numbers, and errors that name the file, the line
and the key path at fault::

    experiment.yaml:14: systems[2].alpah: unknown key (valid keys: alpha, layers, mode, name, type)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .experiment import ExperimentConfig
from .systems import SYSTEM_TYPES, SystemBase

if TYPE_CHECKING:
    import yaml

Loc = Sequence[int | str]


def _loc_text(loc: Loc) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "<top level>"


def _child(node: object, part: int | str) -> object:
    """``node[part]`` of data read from YAML, or None where there is no such child."""
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return None


def _clean_loc(loc: Loc, data: object) -> list[int | str]:
    """Drop pydantic's union-tag segments (``systems.0.merge.alpha`` → ``systems[0].alpha``)."""
    out: list[int | str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and isinstance(part, str) and node.get("type") == part:
            continue
        out.append(part)
        node = _child(node, part)
    return out


def _node_line(root: yaml.Node, loc: Loc) -> int | None:
    """Line (1-based) of the YAML node at ``loc``, or of its deepest existing parent."""
    import yaml

    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    line = key.start_mark.line + 1
                    nxt = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        node = nxt
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _valid_keys(loc: Loc, data: object) -> list[str] | None:
    """Keys allowed at the parent of ``loc`` (for 'unknown key' messages)."""
    annotation: object = ExperimentConfig
    node = data
    for part in loc[:-1]:
        if isinstance(part, int):
            node = _child(node, part)
            continue
        model = _model_of(annotation, node)
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        annotation = field.annotation
        node = _child(node, part)
    model = _model_of(annotation, node)
    return sorted(model.model_fields) if model is not None else None


def _model_of(annotation: object, node: object) -> type[BaseModel] | None:
    """The model an annotation stands for at ``node``; of a union of systems, the one whose
    ``type`` the node has."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            if issubclass(arg, SystemBase) and isinstance(node, dict):
                tag = arg.model_fields["type"].annotation
                if node.get("type") in get_args(tag):
                    return arg
                continue
            return arg
        found = _model_of(arg, node)
        if found is not None:
            return found
    return None


def _format_errors(exc: ValidationError, data: object, source: str, root: yaml.Node | None = None) -> str:
    lines = []
    for err in exc.errors():
        loc = _clean_loc(err["loc"], data)
        where = _loc_text(loc)
        if err["type"] == "extra_forbidden":
            valid = _valid_keys(loc, data)
            msg = "unknown key" + (f" (valid keys: {', '.join(valid)})" if valid else "")
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown system type; valid types: {', '.join(SYSTEM_TYPES)}"
        elif err["type"] == "union_tag_not_found":
            msg = f"a system needs a 'type': one of {', '.join(SYSTEM_TYPES)}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        line = _node_line(root, loc) if root is not None else None
        prefix = f"{source}:{line}" if line else source
        lines.append(f"{prefix}: {where}: {msg}")
    return "invalid experiment config:\n  " + "\n  ".join(lines)


def parse_config(
    data: object, source: str = "<config>", *, _root: yaml.Node | None = None
) -> ExperimentConfig:
    """Validate a config given as a dict (as read from YAML).

    >>> parse_config({"name": "x", "output": "out", "dataset": {"path": "scifact"},
    ...               "systems": [{"name": "BM25", "type": "first-stage"}]}).systems[0].name
    'BM25'
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: an experiment config must be a mapping, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, data, source, _root)) from None


def _yaml_loader() -> type[yaml.SafeLoader]:
    """A safe loader that refuses anchors, aliases and repeated keys, naming their line."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
            # An alias repeats a node without copying text, so a few hundred bytes can expand
            # to gigabytes ("billion laughs"): a config spells every value out instead.
            event = self.peek_event()
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                what = f"alias *{anchor}" if isinstance(event, yaml.AliasEvent) else f"anchor &{anchor}"
                raise ConfigError(
                    f"line {event.start_mark.line + 1}: YAML {what}: anchors and aliases are not "
                    "allowed in an experiment config; write the value out"
                )
            return super().compose_node(parent, index)

    def construct_mapping(
        loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False
    ) -> dict[object, object]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"line {key_node.start_mark.line + 1}: key {key!r} repeats (first on line {seen[key]})"
                )
            seen[key] = key_node.start_mark.line + 1
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


def load_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read and validate an experiment YAML file.

    Errors name the file, line and key path at fault (a :class:`ConfigError`).

    Example::

        config = load_config("configs/demo.yaml")
    """
    import yaml

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"experiment config {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"experiment config {file} cannot be read: {exc}") from exc
    try:
        loader = _yaml_loader()
        data = yaml.load(text, Loader=loader)
        root = yaml.compose(text, Loader=loader)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"experiment config {file} is empty")
    return parse_config(data, str(file), _root=root)


def dump_config(config: ExperimentConfig) -> str:
    """The config as YAML text (every default spelt out), as copied into a results folder."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: object) -> bool:
            return True  # load_config refuses anchors and aliases, so none may be written

    return yaml.dump(config.model_dump(mode="json"), Dumper=Dumper, sort_keys=False, allow_unicode=True)
