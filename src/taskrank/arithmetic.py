"""Task arithmetic on checkpoints: task vectors, layer-selective merges, in-place α sweeps.

    θ_out = θ_base + Σ αᵢ · (θ_finetunedᵢ − θ_pretrainedᵢ)

The paper's case is one vector with the ranker as base: θ_ranker + α·(θ_domain − θ_pretrained)
(Braga et al., "Investigating Task Arithmetic for Zero-Shot Information Retrieval", SIGIR 2025;
task vectors after Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023).

Everything is lazy: a :class:`TaskVector` is a linear combination of checkpoint pairs, and a
merge streams one tensor at a time from the inputs to the output shards.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from . import __version__
from .atomic import atomic_dir, check_output_dir
from .checkpoints import (
    Checkpoint,
    ShardedSafetensorsWriter,
    TensorSpec,
    as_source,
    copy_non_weight_files,
)
from .errors import MergeError

log = logging.getLogger(__name__)

Mode = Literal["only", "except"]
VocabPolicy = Literal["strict", "common"]
MODES: tuple[str, ...] = ("only", "except")
VOCAB_POLICIES: tuple[str, ...] = ("strict", "common")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

_LAYER_RE = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")


# --------------------------------------------------------------------------- names and layers


def layer_of(name: str) -> int | None:
    """Transformer layer of a tensor name: its first numeric path component.

    Works across architectures without per-model code: ``encoder.block.3.layer.0.…`` (T5) → 3,
    ``bert.encoder.layer.5.…`` → 5, ``model.layers.7.…`` (Llama) → 7, ``transformer.h.2.…`` → 2,
    ``shared.weight`` → None. In encoder-decoders, layer N selects block N of every stack.
    """
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def parse_layers(spec: str | Iterable[int] | None) -> frozenset[int] | None:
    """``"0-3,11"`` → {0, 1, 2, 3, 11}; a list of ints is taken as is; None means all."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        layers = [int(i) for i in spec]
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
                raise MergeError(f"bad layer selection {spec!r}: range {part!r} runs backwards")
            layers.extend(range(lo, hi + 1))
    if any(i < 0 for i in layers):
        raise MergeError(f"layer indices must be non-negative, got {sorted(layers)}")
    if not layers:
        raise MergeError("empty layer selection")
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
            parts.append(f"layers {_ranges(self.layers)} ({self.mode})")
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


def _ranges(values: Iterable[int]) -> str:
    out: list[str] = []
    for v in sorted(values):
        if out and "-" not in out[-1] and int(out[-1]) == v - 1:
            out[-1] = f"{out[-1]}-{v}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == v - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ",".join(out)


# --------------------------------------------------------------------------- key alignment


def _prefix_candidates(keys: Iterable[str]) -> list[str]:
    # One- and two-component prefixes: ``bert.``, ``model.``, ``0.auto_model.`` (sentence-transformers).
    found: set[str] = set()
    for k in keys:
        parts = k.split(".")
        if len(parts) > 1:
            found.add(parts[0] + ".")
        if len(parts) > 2:
            found.add(parts[0] + "." + parts[1] + ".")
    return ["", *sorted(found)]


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix) :] if prefix and key.startswith(prefix) else key


def _best_prefixes(ref_keys: Sequence[str], other_keys: Sequence[str]) -> tuple[str, str]:
    best: tuple[int, int, str, str] = (-1, 0, "", "")
    other_variants = {po: {_strip(k, po) for k in other_keys} for po in _prefix_candidates(other_keys)}
    for pr in _prefix_candidates(ref_keys):
        ref_stripped = {_strip(k, pr) for k in ref_keys}
        for po, other_stripped in other_variants.items():
            candidate = (len(ref_stripped & other_stripped), -(len(pr) + len(po)), pr, po)
            if candidate[:2] > best[:2]:
                best = candidate
    return best[2], best[3]


def align_keys(ref_keys: Sequence[str], other_keys: Sequence[str]) -> dict[str, str]:
    """Map names of ``ref_keys`` to names of ``other_keys`` after removing a base prefix.

    The base prefix of each side (``bert.``, ``roberta.``, ``model.`` …) is found from the
    names themselves: the pair of prefixes that makes the most names agree wins (the
    shortest on a tie). A cross-encoder's ``bert.encoder.layer.0…`` thus meets a plain
    encoder's ``encoder.layer.0…``; heads present on one side only stay unmatched.
    """
    pr, po = _best_prefixes(ref_keys, other_keys)
    lookup = {_strip(k, po): k for k in other_keys}
    mapping = {}
    for k in ref_keys:
        hit = lookup.get(_strip(k, pr))
        if hit is not None:
            mapping[k] = hit
    return mapping


def base_prefix(keys: Sequence[str], other_keys: Sequence[str]) -> str:
    """The prefix removed from ``keys`` when aligning them with ``other_keys`` (may be '')."""
    return _best_prefixes(keys, other_keys)[0]


def tie_map(config: Mapping[str, Any]) -> dict[str, str]:
    """Tied parameters of a checkpoint's architecture (target → source), from transformers'
    own ``_tied_weights_keys``; empty when the config unties word embeddings."""
    if not config or not config.get("tie_word_embeddings", True):
        return {}
    archs = config.get("architectures") or []
    if not archs:
        return {}
    import transformers

    cls = getattr(transformers, archs[0], None)
    mapping = getattr(cls, "_tied_weights_keys", None)
    if isinstance(mapping, Mapping):
        return {str(k): str(v) for k, v in mapping.items() if re.fullmatch(r"[\w.]+", f"{k}{v}")}
    return {}


def _tie_groups(config: Mapping[str, Any]) -> list[set[str]]:
    groups: dict[str, set[str]] = {}
    for target, source in tie_map(config).items():
        groups.setdefault(source, {source}).add(target)
    return list(groups.values())


def resolve_keys(ref: Any, other: Any) -> dict[str, str]:
    """Align the tensors of ``ref`` with those of ``other``: by name after removing the base
    prefix, then through tied aliases (a weight stored as ``shared.weight`` on one side and
    ``encoder.embed_tokens.weight`` on the other, as T5 checkpoints do)."""
    ref_keys, other_keys = ref.keys(), other.keys()
    pr, po = _best_prefixes(ref_keys, other_keys)
    lookup = {_strip(k, po): k for k in other_keys}
    mapping = {k: lookup[_strip(k, pr)] for k in ref_keys if _strip(k, pr) in lookup}
    missing = [k for k in ref_keys if k not in mapping]
    if not missing:
        return mapping
    groups = [
        {_strip(g, p) for g in group for p in (pr, po)}
        for group in _tie_groups(ref.config) + _tie_groups(other.config)
    ]
    for key in missing:
        canon = _strip(key, pr)
        for group in groups:
            if canon not in group:
                continue
            hit = next((lookup[m] for m in sorted(group) if m in lookup), None)
            if hit is not None:
                mapping[key] = hit
                break
    return mapping


# --------------------------------------------------------------------------- task vectors


@dataclass(frozen=True)
class _Term:
    coef: float
    finetuned: Any
    pretrained: Any
    mapping: dict[str, str]  # finetuned key -> pretrained key


def _check_coef(value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise MergeError(f"alpha must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise MergeError(f"alpha must be finite, got {value}")
    return value


class TaskVector:
    """τ = θ_finetuned − θ_pretrained, kept lazy as a linear combination of checkpoint pairs.

    Vectors support ``+``, ``-``, unary ``-``, multiplication by a scalar and ``sum()``;
    nothing is read until :meth:`get` asks for one tensor. Terms over the same pair of
    checkpoints are folded together, so ``(a + b) - b`` is exactly ``a``.

    Example::

        tau = TaskVector.from_checkpoints("razent/SciFive-base-Pubmed_PMC", "google-t5/t5-base")
        delta = (0.7 * tau).get("shared.weight")   # float32
    """

    def __init__(self, finetuned: Any, pretrained: Any, *, vocab_policy: VocabPolicy = "strict") -> None:
        ft, pre = as_source(finetuned), as_source(pretrained)
        if vocab_policy not in VOCAB_POLICIES:
            raise MergeError(f"unknown vocab policy {vocab_policy!r}; valid: {', '.join(VOCAB_POLICIES)}")
        self.vocab_policy = vocab_policy
        self._terms: tuple[_Term, ...] = (_Term(1.0, ft, pre, resolve_keys(ft, pre)),)
        self._check_shapes()

    @classmethod
    def from_checkpoints(
        cls, finetuned: Any, pretrained: Any, *, vocab_policy: VocabPolicy = "strict"
    ) -> TaskVector:
        """The vector from ``pretrained`` to ``finetuned`` (paths, hub ids or state dicts)."""
        return cls(finetuned, pretrained, vocab_policy=vocab_policy)

    @classmethod
    def _from_terms(cls, terms: Sequence[_Term], vocab_policy: VocabPolicy) -> TaskVector:
        obj = cls.__new__(cls)
        obj.vocab_policy = vocab_policy
        obj._terms = tuple(terms)
        return obj

    # -- algebra
    @property
    def terms(self) -> tuple[_Term, ...]:
        return self._terms

    def _combine(self, other: TaskVector, sign: float) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        terms = list(self._terms)
        for t in other._terms:
            for i, s in enumerate(terms):
                if s.finetuned is t.finetuned and s.pretrained is t.pretrained:
                    terms[i] = _Term(s.coef + sign * t.coef, s.finetuned, s.pretrained, s.mapping)
                    break
            else:
                terms.append(_Term(sign * t.coef, t.finetuned, t.pretrained, t.mapping))
        policy: VocabPolicy = "common" if "common" in (self.vocab_policy, other.vocab_policy) else "strict"
        return TaskVector._from_terms(terms, policy)

    def __add__(self, other: TaskVector) -> TaskVector:
        return self._combine(other, 1.0)

    def __radd__(self, other: object) -> TaskVector:
        if other == 0:  # sum() starts from 0
            return self
        return NotImplemented  # type: ignore[return-value]

    def __sub__(self, other: TaskVector) -> TaskVector:
        return self._combine(other, -1.0)

    def __neg__(self) -> TaskVector:
        return self * -1.0

    def __mul__(self, scalar: float) -> TaskVector:
        if isinstance(scalar, TaskVector):
            return NotImplemented
        c = _check_coef(scalar)
        return TaskVector._from_terms(
            [_Term(t.coef * c, t.finetuned, t.pretrained, t.mapping) for t in self._terms], self.vocab_policy
        )

    __rmul__ = __mul__

    def __repr__(self) -> str:
        body = " + ".join(f"{t.coef:g}·({t.finetuned.name} − {t.pretrained.name})" for t in self._terms)
        return f"TaskVector({body})"

    def describe(self, names: Sequence[str] = ()) -> str:
        parts = []
        for i, t in enumerate(self._terms):
            ft = names[2 * i] if len(names) > 2 * i else t.finetuned.name
            pre = names[2 * i + 1] if len(names) > 2 * i + 1 else t.pretrained.name
            parts.append(f"{t.coef:g}·(θ_{ft} − θ_{pre})")
        return " + ".join(parts)

    # -- tensors
    @property
    def reference(self) -> Any:
        """The source whose tensor names this vector uses (the first fine-tuned checkpoint)."""
        return self._terms[0].finetuned

    @property
    def config(self) -> dict[str, Any]:
        return self.reference.config

    def _term_map(self, i: int) -> dict[str, str]:
        """Reference name -> name in term i's fine-tuned checkpoint (cached)."""
        cache = self.__dict__.setdefault("_maps", {})
        if i not in cache:
            t = self._terms[i]
            cache[i] = (
                {k: k for k in t.finetuned.keys()} if i == 0 else resolve_keys(self.reference, t.finetuned)
            )
        return cache[i]

    def keys(self) -> list[str]:
        """Names (in the reference's naming) present in every term."""
        keys = [k for k in self.reference.keys() if k in self._terms[0].mapping]
        for i, t in enumerate(self._terms[1:], start=1):
            to_other = self._term_map(i)
            keys = [k for k in keys if k in to_other and to_other[k] in t.mapping]
        return keys

    def _locate(self, key: str) -> list[tuple[float, Any, str, Any, str]]:
        out = []
        for i, t in enumerate(self._terms):
            fk = self._term_map(i).get(key)
            if fk is None or fk not in t.mapping:
                raise MergeError(f"tensor {key!r} is missing from {t.finetuned.name} or {t.pretrained.name}")
            out.append((t.coef, t.finetuned, fk, t.pretrained, t.mapping[fk]))
        return out

    def shape(self, key: str) -> tuple[int, ...]:
        shapes = []
        for _, ft, fk, pre, pk in self._locate(key):
            shapes += [ft.shape(fk), pre.shape(pk)]
        if not shapes[0]:
            return ()
        return (min(s[0] for s in shapes), *shapes[0][1:])

    def dtype(self, key: str) -> torch.dtype:
        return torch.float32

    def _check_shapes(self) -> None:
        for t in self._terms:
            for fk, pk in t.mapping.items():
                _check_pair(fk, t.finetuned, t.finetuned.shape(fk), t.pretrained, t.pretrained.shape(pk),
                            self.vocab_policy)  # fmt: skip

    def is_float(self, key: str) -> bool:
        return all(
            ft.dtype(fk).is_floating_point and pre.dtype(pk).is_floating_point
            for _, ft, fk, pre, pk in self._locate(key)
        )

    def get(self, key: str) -> torch.Tensor:
        """Σ cᵢ (θ_ftᵢ[key] − θ_preᵢ[key]) in float32 (rows cropped to the common vocabulary
        under the ``common`` policy)."""
        total: torch.Tensor | None = None
        for coef, ft, fk, pre, pk in self._locate(key):
            a, b = ft.get(fk), pre.get(pk)
            if not (a.dtype.is_floating_point and b.dtype.is_floating_point):
                raise MergeError(f"tensor {key!r} has dtype {a.dtype}/{b.dtype}, which cannot be merged")
            if a.shape != b.shape:
                rows = min(a.shape[0], b.shape[0])
                a, b = a[:rows], b[:rows]
            if a.dtype == torch.float32 and getattr(ft, "fresh_reads", False):
                delta = a.sub_(b)  # `a` is a fresh buffer read for this call
            else:
                delta = a.float() - b.float()
            if coef != 1.0:
                delta.mul_(coef)
            if total is None:
                total = delta
            else:
                if total.shape != delta.shape:
                    rows = min(total.shape[0], delta.shape[0])
                    total, delta = total[:rows], delta[:rows]
                total = total + delta
        assert total is not None  # a vector always has at least one term
        return total

    def unpaired(self) -> list[str]:
        """Tensors of a fine-tuned or pretrained checkpoint with no counterpart in the other
        (e.g. an MLM head of the domain model): they are not part of the vector."""
        out: list[str] = []
        for t in self._terms:
            paired_pre = set(t.mapping.values())
            out += [f"{t.finetuned.name}: {k}" for k in t.finetuned.keys() if k not in t.mapping]
            out += [f"{t.pretrained.name}: {k}" for k in t.pretrained.keys() if k not in paired_pre]
        return out

    def raw_equal(self, key: str) -> bool:
        """True when θ_ft and θ_pre agree exactly on ``key`` in every term (a zero delta)."""
        return all(torch.equal(ft.get(fk), pre.get(pk)) for _, ft, fk, pre, pk in self._locate(key))

    def inputs(self) -> list[tuple[float, Any, Any]]:
        return [(t.coef, t.finetuned, t.pretrained) for t in self._terms]


def _check_pair(
    key: str, a_src: Any, a_shape: tuple[int, ...], b_src: Any, b_shape: tuple[int, ...], policy: str
) -> None:
    if a_shape == b_shape:
        return
    rows_only = len(a_shape) == len(b_shape) and len(a_shape) >= 1 and a_shape[1:] == b_shape[1:]
    if rows_only and policy == "common":
        return
    if rows_only:
        raise MergeError(
            f"tensor {key!r}: {a_src.name} has {a_shape[0]} rows {list(a_shape)} but {b_src.name} has "
            f"{b_shape[0]} {list(b_shape)} (different vocabularies?); pass --vocab-policy common "
            "(vocab_policy='common') to merge the common rows only"
        )
    raise MergeError(
        f"tensor {key!r} has shape {list(a_shape)} in {a_src.name} but {list(b_shape)} in {b_src.name}: "
        "the checkpoints do not share one architecture (hidden size or layer count differ)"
    )


# --------------------------------------------------------------------------- planning


@dataclass
class _PlanItem:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    out_dtype: torch.dtype
    vector_key: str | None
    reason: str | None  # why it stays unchanged, when it does


@dataclass
class MergeReport:
    """What a merge did, renderable as a model card."""

    recipe: str
    alpha: list[float]
    selection: dict[str, Any]
    inputs: dict[str, Any]
    dtype: str
    vocab_policy: str
    merged: list[str]
    unchanged: dict[str, str]  # tensor -> reason
    vector_only: list[str]  # task-vector tensors with no counterpart in the base
    unpaired: list[str] = field(default_factory=list)  # fine-tuned/pretrained tensors outside the vector
    taskrank_version: str = __version__
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "alpha": self.alpha,
            "selection": self.selection,
            "inputs": self.inputs,
            "dtype": self.dtype,
            "vocab_policy": self.vocab_policy,
            "merged_tensors": len(self.merged),
            "unchanged_tensors": self.unchanged,
            "vector_tensors_without_counterpart": self.vector_only,
            "unpaired_tensors": self.unpaired,
            "taskrank_version": self.taskrank_version,
        }

    def summary(self) -> str:
        return (
            f"{self.recipe}: {len(self.merged)} tensors merged, {len(self.unchanged)} unchanged, "
            f"{len(self.vector_only)} vector tensors without counterpart; dtype {self.dtype}"
        )

    def to_markdown(self) -> str:
        """A model card (README.md with Hugging Face front matter) recording the recipe."""
        bases = []
        for role in ("ranker", "domain", "pretrained"):
            info = self.inputs.get(role)
            if info and info.get("hub_id"):
                bases.append(info["hub_id"])
        lines = ["---", "library_name: transformers", "tags:", "- taskrank", "- task-arithmetic", "- merge"]
        if bases:
            lines += ["base_model:", *[f"- {b}" for b in bases]]
        lines += ["---", "", "# Task-arithmetic merge made with taskrank", ""]
        lines += [f"    {self.recipe}", ""]
        lines += [
            "Method: Braga et al., *Investigating Task Arithmetic for Zero-Shot Information Retrieval*, "
            "SIGIR 2025 (arXiv 2505.00649).",
            "",
            "| setting | value |",
            "|---|---|",
            f"| α | {', '.join(f'{a:g}' for a in self.alpha)} |",
            f"| selection | {self.selection.get('description', 'all tensors')} |",
            f"| output dtype | {self.dtype} |",
            f"| vocabulary policy | {self.vocab_policy} |",
            f"| tensors merged | {len(self.merged)} |",
            f"| tensors left unchanged | {len(self.unchanged)} |",
            f"| taskrank version | {self.taskrank_version} |",
            "",
            "## Inputs",
            "",
            "| role | checkpoint | identity |",
            "|---|---|---|",
        ]
        for role, info in self.inputs.items():
            ident = (
                f"revision `{info['revision']}`"
                if info.get("revision")
                else (f"sha256 `{info['sha256']}`" if info.get("sha256") else info.get("format", ""))
            )
            lines.append(f"| {role} | `{info.get('hub_id') or info.get('ref')}` | {ident} |")
        lines += ["", "## Tensors left unchanged", ""]
        if self.unchanged:
            lines += ["| tensor | reason |", "|---|---|"]
            lines += [f"| `{k}` | {v} |" for k, v in self.unchanged.items()]
        else:
            lines.append("None: every tensor of the base received the task vector.")
        if self.vector_only:
            lines += ["", "## Task-vector tensors with no counterpart in the base (not applied)", ""]
            lines += [f"- `{k}`" for k in self.vector_only]
        if self.unpaired:
            lines += [
                "",
                "## Tensors outside the task vector (no counterpart between fine-tune and pretrained)",
                "",
            ]
            lines += [f"- `{k}`" for k in self.unpaired]
        return "\n".join(lines) + "\n"


@dataclass
class MergeResult:
    """Outcome of :func:`merge`: the report, and the output path or the merged state dict."""

    report: MergeReport
    path: Path | None = None
    state_dict: dict[str, torch.Tensor] | None = None


def _model_prefix(config: Mapping[str, Any]) -> str:
    """The architecture's base-model prefix (``bert.``, ``roberta.``, ``model.``) from transformers."""
    archs = (config or {}).get("architectures") or []
    prefix = ""
    if archs:
        import transformers

        prefix = getattr(getattr(transformers, archs[0], None), "base_model_prefix", "") or ""
    return prefix + "." if prefix else ""


def _selection_aliases(
    names: Sequence[str], config: Mapping[str, Any], needed: bool
) -> dict[str, tuple[str, ...]]:
    """Names without the base-model prefix, so patterns like ``encoder.*`` work on any head."""
    prefix = _model_prefix(config) if needed else ""
    if not prefix:
        return {n: () for n in names}
    return {n: ((n[len(prefix) :],) if n.startswith(prefix) else ()) for n in names}


def _plan(
    base: Any,
    vector: TaskVector,
    selection: LayerSelection,
    out_dtype: torch.dtype | None,
) -> tuple[list[_PlanItem], list[str]]:
    base_keys = base.keys()
    vec_keys = vector.keys()
    to_vec = resolve_keys(base, vector.reference)
    vec_set = set(vec_keys)
    to_vec = {b: v for b, v in to_vec.items() if v in vec_set}
    aliases = _selection_aliases(base_keys, base.config, bool(selection.include or selection.exclude))

    if selection.layers is not None:
        present = {layer_of(k) for k in to_vec} - {None}
        absent = sorted(selection.layers - present)
        if absent:
            depth = f"layers 0-{max(present)}" if present else "no numbered layers"
            raise MergeError(f"layer(s) {_ranges(absent)} not found in {base.name}, which has {depth}")

    items: list[_PlanItem] = []
    selected = 0
    order = base.storage_order() if hasattr(base, "storage_order") else base_keys
    for name in order:
        dtype = base.dtype(name)
        target = out_dtype if (out_dtype is not None and dtype.is_floating_point) else dtype
        vkey = to_vec.get(name)
        reason = None
        if vkey is None:
            reason = "no counterpart in the task vector"
        elif not selection.selects(name, aliases[name]):
            reason = f"not selected ({selection.describe()})"
        else:
            selected += 1
            b_shape, v_shape = base.shape(name), vector.shape(vkey)
            _check_pair(name, base, b_shape, vector.reference, v_shape, vector.vocab_policy)
        items.append(
            _PlanItem(name, base.shape(name), dtype, target, vkey if reason is None else None, reason)
        )
    if selected == 0:
        raise MergeError(
            f"the selection ({selection.describe()}) matches no tensor shared by the base and the task vector"
        )
    used = {v for b, v in to_vec.items()}
    vector_only = sorted(set(vec_keys) - used)
    return items, vector_only


def _all_finite(t: torch.Tensor) -> bool:
    """True when no element is NaN/Inf. A finite sum proves it (NaN and Inf propagate through a
    sum); only when the sum is not finite is the exact, slower element-wise check needed."""
    if t.numel() == 0:
        return True
    if math.isfinite(t.sum().item()):
        return True
    return bool(torch.isfinite(t).all())


def _merge_tensor(item: _PlanItem, base: Any, vector: TaskVector) -> tuple[torch.Tensor, str | None]:
    """The output tensor of ``item`` and, when it stays unchanged, why."""
    tensor = base.get(item.name)
    if item.vector_key is None:
        return tensor.to(item.out_dtype), item.reason
    if not (tensor.dtype.is_floating_point and vector.is_float(item.vector_key)):
        if vector.raw_equal(item.vector_key):
            return tensor, f"dtype {tensor.dtype} with a zero task vector"
        raise MergeError(
            f"tensor {item.name!r} has dtype {tensor.dtype}, which cannot be merged (its vector is non-zero)"
        )
    delta = vector.get(item.vector_key)
    fresh = getattr(base, "fresh_reads", False) or tensor.dtype != torch.float32
    out = tensor.float() if fresh else tensor.clone()  # never update the caller's tensors
    if delta.shape == out.shape:
        out.add_(delta)
    else:  # vocabulary rows differ and the policy allows the common rows
        rows = min(delta.shape[0], out.shape[0])
        out[:rows].add_(delta[:rows])
    if not _all_finite(out):
        if torch.isnan(delta).any():
            bad = "the domain/pretrained inputs hold NaN"
        elif not torch.isfinite(delta).all():
            bad = "overflow of α·τ, or Inf in the domain/pretrained inputs"
        else:
            bad = "the ranker holds NaN/Inf, or the sum overflows"
        raise MergeError(
            f"merge produced NaN/Inf in tensor {item.name!r} ({bad}); check alpha and the inputs"
        )
    return out.to(item.out_dtype), None


# --------------------------------------------------------------------------- merge


def merge(
    ranker: Any,
    domain: Any = None,
    pretrained: Any = None,
    alpha: float = 1.0,
    *,
    vector: TaskVector | None = None,
    layers: str | Iterable[int] | None = None,
    mode: str = "only",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    vocab_policy: VocabPolicy = "strict",
    dtype: str | torch.dtype | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    max_shard_size: str | int = "2GB",
    progress: bool = False,
) -> MergeResult:
    """θ_out = θ_ranker + α·(θ_domain − θ_pretrained), streamed tensor by tensor.

    Args:
        ranker: the base checkpoint (directory, hub id or state dict).
        domain, pretrained: the pair whose difference is the task vector (or pass ``vector``).
        alpha: scale of the vector; finite, may be negative.
        vector: a ready :class:`TaskVector` (e.g. a sum of several scaled vectors); ``alpha``
            then multiplies it.
        layers, mode, include, exclude: which tensors receive the vector (:class:`LayerSelection`).
        vocab_policy: ``"strict"`` (vocabulary sizes must agree) or ``"common"`` (common rows only).
        dtype: output dtype; default the ranker's dtype, tensor by tensor.
        out: output directory, written atomically; ``None`` returns the weights in memory.
        overwrite: replace an existing ``out``.
        max_shard_size: largest safetensors shard, e.g. ``"2GB"``.
        progress: show a progress bar.

    Returns:
        :class:`MergeResult` with the report, and ``path`` or ``state_dict``.

    Example::

        merge("monot5", "scifive", "t5-base", alpha=0.7, out="monot5-scifive")
    """
    a = _check_coef(alpha)
    out_dtype = _resolve_dtype(dtype)
    if out is not None:
        check_output_dir(out, overwrite)  # refuse early, before any reading
    base = as_source(ranker)
    if vector is None:
        if domain is None or pretrained is None:
            raise MergeError("merge needs domain and pretrained checkpoints, or a task vector")
        vector = TaskVector(domain, pretrained, vocab_policy=vocab_policy)
    elif vocab_policy == "common":
        vector = TaskVector._from_terms(vector.terms, "common")
    scaled = vector * a
    selection = LayerSelection.parse(layers, mode, include, exclude)
    items, vector_only = _plan(base, scaled, selection, out_dtype)

    inputs: dict[str, Any] = {}
    hashing = ThreadPoolExecutor(max_workers=1)
    futures: dict[str, Future[dict[str, Any]]] = {"ranker": hashing.submit(base.provenance)}
    if domain is not None and pretrained is not None and len(vector.terms) == 1:
        futures["domain"] = hashing.submit(vector.terms[0].finetuned.provenance)
        futures["pretrained"] = hashing.submit(vector.terms[0].pretrained.provenance)
    else:
        for i, (_, ft, pre) in enumerate(vector.inputs()):
            futures[f"finetuned[{i}]"] = hashing.submit(ft.provenance)
            futures[f"pretrained[{i}]"] = hashing.submit(pre.provenance)

    roles = ("domain", "pretrained") if "domain" in futures else ()
    recipe = (
        f"θ_ranker + {a:g}·[{vector.describe(roles)}]" if roles else f"θ_ranker + {a:g}·[{vector.describe()}]"
    )
    if roles and len(vector.terms) == 1 and vector.terms[0].coef == 1.0:
        recipe = f"θ_ranker + {a:g}·(θ_domain − θ_pretrained)"
    report = MergeReport(
        recipe=recipe,
        alpha=[a * t.coef for t in vector.terms],
        selection={**selection.to_dict(), "description": selection.describe()},
        inputs=inputs,
        dtype=str(out_dtype or _dominant_dtype(base)).replace("torch.", ""),
        vocab_policy=scaled.vocab_policy,
        merged=[],
        unchanged={},
        vector_only=vector_only,
        unpaired=vector.unpaired(),
    )

    def finish(item: _PlanItem, future: Future[tuple[torch.Tensor, str | None]], consume: Any) -> None:
        tensor, reason = future.result()
        if reason is None:
            report.merged.append(item.name)
        else:
            report.unchanged[item.name] = reason
        consume(item, tensor)

    def run(consume: Any) -> None:
        # Two-stage pipeline: one worker reads and computes tensor i+1 while this thread hands
        # tensor i to the writer (file I/O and torch ops release the GIL). At most two tensors
        # are in flight, so memory stays bounded by the largest tensors, not the model.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskrank-merge") as pool:
            pending: tuple[_PlanItem, Future[tuple[torch.Tensor, str | None]]] | None = None
            for item in _progress(items, progress, "merging"):
                future = pool.submit(_merge_tensor, item, base, scaled)
                if pending is not None:
                    finish(*pending, consume)
                pending = (item, future)
            if pending is not None:
                finish(*pending, consume)

    try:
        if out is None:
            state: dict[str, torch.Tensor] = {}
            run(lambda item, tensor: state.__setitem__(item.name, tensor))
            report.inputs.update({k: f.result() for k, f in futures.items()})
            return MergeResult(report=report, state_dict=state)

        base_dir = getattr(base, "path", None)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            specs = [TensorSpec(i.name, i.shape, i.out_dtype) for i in items]
            writer = ShardedSafetensorsWriter(tmp, specs, max_shard_size)
            try:
                run(lambda item, tensor: writer.write(item.name, tensor))
                writer.close()
            finally:
                writer.abort()
            report.files = sorted(p.name for p in tmp.iterdir())
            if base_dir is not None:
                copy_non_weight_files(Path(base_dir), tmp)
                _set_config_dtype(tmp / "config.json", out_dtype)
            report.inputs.update({k: f.result() for k, f in futures.items()})
            (tmp / "README.md").write_text(report.to_markdown(), encoding="utf-8")
            (tmp / "taskrank_merge.json").write_text(_json(report.to_dict()), encoding="utf-8")
        log.info("%s", report.summary())
        return MergeResult(report=report, path=Path(out))
    finally:
        hashing.shutdown(wait=True)
        for src in {id(s): s for s in (base, *[x for _, f, p in vector.inputs() for x in (f, p)])}.values():
            if isinstance(src, Checkpoint):
                src.close()


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise MergeError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _dominant_dtype(source: Any) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for k in source.keys():
        d = source.dtype(k)
        if d.is_floating_point:
            counts[d] = counts.get(d, 0) + math.prod(source.shape(k))
    return max(counts, key=counts.__getitem__) if counts else torch.float32


def _set_config_dtype(config_path: Path, dtype: torch.dtype | None) -> None:
    if dtype is None or not config_path.exists():
        return
    import json

    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    name = str(dtype).replace("torch.", "")
    cfg["dtype"] = name
    if "torch_dtype" in cfg:
        cfg["torch_dtype"] = name
    config_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def _progress(items: Sequence[Any], enabled: bool, label: str) -> Iterable[Any]:
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=len(items))
        for item in items:
            yield item
            bar.advance(task)


# --------------------------------------------------------------------------- in-place α sweeps


class AlphaSweep:
    """Set θ = θ_ranker + α·τ on a loaded model in place, for any α, without re-reading checkpoints.

    Keeps a CPU copy of the ranker's original tensors that the vector touches and the vector
    itself (float32, on ``vector_device``, CPU by default while the model may sit on a GPU).
    ``set_alpha(0)`` restores the ranker bit for bit.

    Example::

        sweep = AlphaSweep(model, TaskVector.from_checkpoints(domain_dir, pretrained_dir))
        for a in (0.1, 0.3, 0.5):
            sweep.set_alpha(a)
            ...  # score with `model`
        sweep.set_alpha(0.0)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        vector: TaskVector,
        *,
        vector_device: str | torch.device = "cpu",
        vocab_policy: VocabPolicy | None = None,
        progress: bool = False,
    ) -> None:
        self.model = model
        params = dict(model.named_parameters())  # tied parameters appear once
        source = _ModelSource(params, getattr(model, "config", None))
        if vocab_policy is not None:
            vector = TaskVector._from_terms(vector.terms, vocab_policy)
        self.vector = vector
        to_vec = resolve_keys(source, vector.reference)
        vec_keys = set(vector.keys())
        self._names = [n for n in params if to_vec.get(n) in vec_keys]
        if not self._names:
            raise MergeError("the task vector shares no tensor with the model")
        self._aliases = _selection_aliases(list(params), source.config, True)
        self._params = params
        self._orig: dict[str, torch.Tensor] = {}
        self._tau: dict[str, torch.Tensor] = {}
        for name in _progress(self._names, progress, "loading task vector"):
            p = params[name]
            vkey = to_vec[name]
            _check_pair(
                name, source, tuple(p.shape), vector.reference, vector.shape(vkey), vector.vocab_policy
            )
            if not p.dtype.is_floating_point:
                continue
            self._orig[name] = p.detach().to("cpu", copy=True)
            self._tau[name] = vector.get(vkey).to(vector_device)
        self.alpha = 0.0
        self.selection = LayerSelection()

    @property
    def layers(self) -> list[int]:
        """Layer indices the vector can touch."""
        return sorted({layer_of(n) for n in self._names} - {None})  # type: ignore[type-var]

    @torch.no_grad()
    def set_alpha(
        self,
        alpha: float,
        layers: str | Iterable[int] | None = None,
        mode: str = "only",
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
    ) -> None:
        """Update the model to θ_ranker + α·τ on the selected tensors (the rest: θ_ranker)."""
        a = _check_coef(alpha)
        selection = LayerSelection.parse(layers, mode, include, exclude)
        if selection.layers is not None:
            absent = sorted(selection.layers - set(self.layers))
            if absent:
                raise MergeError(
                    f"layer(s) {_ranges(absent)} not in the model (layers {_ranges(self.layers)})"
                )
        chosen = [n for n in self._orig if selection.selects(n, self._aliases.get(n, ()))]
        if not chosen:
            raise MergeError(f"the selection ({selection.describe()}) matches no tensor of the model")
        chosen_set = set(chosen)
        for name, orig in self._orig.items():
            p = self._params[name]
            if a == 0.0 or name not in chosen_set:
                p.copy_(orig.to(p.device))
                continue
            scaled = self._tau[name].to(p.device, dtype=torch.float32) * a  # as merge(): (α·τ), then add
            new = orig.to(device=p.device, dtype=torch.float32, copy=True)
            if scaled.shape == new.shape:
                new.add_(scaled)
            else:
                rows = min(scaled.shape[0], new.shape[0])
                new[:rows].add_(scaled[:rows])
            if not _all_finite(new):
                self._restore()
                raise MergeError(f"alpha={a:g} makes tensor {name!r} non-finite; the model was restored")
            p.copy_(new.to(p.dtype))
        self.alpha, self.selection = a, selection

    @torch.no_grad()
    def _restore(self) -> None:
        for name, orig in self._orig.items():
            p = self._params[name]
            p.copy_(orig.to(p.device))
        self.alpha, self.selection = 0.0, LayerSelection()

    def restore(self) -> None:
        """Return the model to the ranker's original weights (bit for bit)."""
        self._restore()


class _ModelSource:
    """Names and shapes of a model's parameters, for key alignment."""

    def __init__(self, params: Mapping[str, torch.Tensor], config: Any) -> None:
        self._params = params
        self.name = "model"
        self.config = config.to_dict() if hasattr(config, "to_dict") else {}

    def keys(self) -> list[str]:
        return list(self._params)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._params[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        return self._params[key].dtype
