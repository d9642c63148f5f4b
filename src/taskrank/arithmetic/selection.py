"""Which tensors receive a task vector: transformer layers and name patterns."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import MergeError
from ..vocabulary import MODES, Mode

_LAYER_RE = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")


def layer_of(name: str) -> int | None:
    """Transformer layer of a tensor name: its first numeric path component.

    Works across architectures without per-model code: ``encoder.block.3.layer.0.…`` (T5) → 3,
    ``bert.encoder.layer.5.…`` → 5, ``model.layers.7.…`` (Llama) → 7, ``transformer.h.2.…`` → 2,
    ``shared.weight`` → None. In encoder-decoders, layer N selects block N of every stack.
    """
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def parse_layers(spec: str | int | Iterable[int] | None) -> frozenset[int] | None:
    """``"0-3,11"`` → {0, 1, 2, 3, 11}; an index or a list of indices is taken as is; None means all."""
    if spec is None:
        return None
    if isinstance(spec, bool):
        raise MergeError(f"layer selection {spec!r} is not a layer index or a range like '0-3,11'")
    if isinstance(spec, int):
        spec = [spec]
    if not isinstance(spec, str):
        layers = list(spec)
        for item in layers:
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                raise MergeError(f"layer index {item!r} is not a non-negative integer")
    else:
        layers = []
        for part in spec.replace(" ", "").split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m:
                raise MergeError(
                    f"bad layer selection {spec!r}: {part!r} is not an index or a range like 0-3"
                )
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise MergeError(f"layer range {part!r} runs backwards (in layer selection {spec!r})")
            layers.extend(range(lo, hi + 1))
    if not layers:
        raise MergeError("an empty layer selection selects nothing; leave it out to use every layer")
    return frozenset(layers)


@dataclass(frozen=True)
class LayerSelection:
    """Which tensors receive the task vector.

    ``layers`` with ``mode="only"`` applies it to those layers alone (the paper's "add"
    ablation); ``mode="except"`` to everything but them, embeddings and heads included
    (the "remove" ablation). ``include``/``exclude`` are glob patterns on tensor names,
    matched against the full name and the name without the model's base prefix.

    Example::

        LayerSelection.parse("0-3,11", mode="except", exclude=["*layer_norm*"])
    """

    layers: frozenset[int] | None = None
    mode: Mode = "only"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        layers: str | Iterable[int] | None = None,
        mode: str = "only",
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
    ) -> LayerSelection:
        if mode not in MODES:
            raise MergeError(f"unknown layer mode {mode!r}; valid: {', '.join(MODES)}")
        return cls(parse_layers(layers), mode, tuple(include), tuple(exclude))  # type: ignore[arg-type]

    @property
    def is_all(self) -> bool:
        return self.layers is None and not self.include and not self.exclude

    def selects(self, name: str, aliases: Sequence[str] = ()) -> bool:
        names = (name, *aliases)
        if self.layers is not None:
            layer = layer_of(name)
            inside = layer is not None and layer in self.layers
            if inside != (self.mode == "only"):
                return False
        if self.include and not any(fnmatch.fnmatchcase(n, p) for n in names for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(n, p) for n in names for p in self.exclude)

    def describe(self) -> str:
        parts = []
        if self.layers is not None:
            parts.append(f"layers {format_ranges(self.layers)} ({self.mode})")
        if self.include:
            parts.append("include " + ", ".join(self.include))
        if self.exclude:
            parts.append("exclude " + ", ".join(self.exclude))
        return "; ".join(parts) or "all tensors"

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": sorted(self.layers) if self.layers is not None else None,
            "mode": self.mode,
            "include": list(self.include),
            "exclude": list(self.exclude),
        }


def format_ranges(values: Iterable[int]) -> str:
    """``{0, 1, 2, 3, 11}`` → ``"0-3,11"``: layer indices as :func:`parse_layers` reads them."""
    out: list[str] = []
    for v in sorted(values):
        if out and "-" not in out[-1] and int(out[-1]) == v - 1:
            out[-1] = f"{out[-1]}-{v}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == v - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ",".join(out)


def _model_prefix(config: Mapping[str, Any]) -> str:
    """The architecture's base-model prefix (``bert.``, ``roberta.``, ``model.``) from transformers."""
    archs = (config or {}).get("architectures") or []
    prefix = ""
    if archs:
        import transformers

        prefix = getattr(getattr(transformers, archs[0], None), "base_model_prefix", "") or ""
    return prefix + "." if prefix else ""


def selection_aliases(
    names: Sequence[str], config: Mapping[str, Any], needed: bool
) -> dict[str, tuple[str, ...]]:
    """Names without the base-model prefix, so patterns like ``encoder.*`` work on any head."""
    prefix = _model_prefix(config) if needed else ""
    if not prefix:
        return {n: () for n in names}
    return {n: ((n[len(prefix) :],) if n.startswith(prefix) else ()) for n in names}
