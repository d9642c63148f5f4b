"""Task vectors: τ = θ_finetuned − θ_pretrained, lazy linear combinations of checkpoint pairs."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ..checkpoints.checkpoint import TensorSource, as_source
from ..errors import MergeError
from ..vocabulary import VOCAB_POLICIES, VocabPolicy
from .alignment import resolve_keys

#: What a merge or a task vector reads weights from: a checkpoint folder or hub id, a state
#: dict, or a :class:`~taskrank.checkpoints.TensorSource`.
Weights = str | os.PathLike[str] | TensorSource | Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Term:
    """One scaled pair of a :class:`TaskVector`: ``coef · (θ_finetuned − θ_pretrained)``."""

    coef: float
    finetuned: TensorSource
    pretrained: TensorSource
    mapping: dict[str, str]  # finetuned key -> pretrained key


class Located(NamedTuple):
    """Where one term of a vector reads a tensor: its coefficient, and the names in each input."""

    coef: float
    finetuned: TensorSource
    finetuned_key: str
    pretrained: TensorSource
    pretrained_key: str


def check_coef(value: float) -> float:
    """``value`` as a float, or a :class:`MergeError` when it is not a finite number (α, a scale)."""
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

    def __init__(
        self, finetuned: Weights, pretrained: Weights, *, vocab_policy: VocabPolicy = "strict"
    ) -> None:
        ft, pre = as_source(finetuned), as_source(pretrained)
        if vocab_policy not in VOCAB_POLICIES:
            raise MergeError(f"unknown vocab policy {vocab_policy!r}; valid: {', '.join(VOCAB_POLICIES)}")
        self.vocab_policy = vocab_policy
        self._terms: tuple[Term, ...] = (Term(1.0, ft, pre, resolve_keys(ft, pre)),)
        self._check_shapes()

    @classmethod
    def from_checkpoints(
        cls, finetuned: Weights, pretrained: Weights, *, vocab_policy: VocabPolicy = "strict"
    ) -> TaskVector:
        """The vector from ``pretrained`` to ``finetuned`` (paths, hub ids or state dicts)."""
        return cls(finetuned, pretrained, vocab_policy=vocab_policy)

    @classmethod
    def _from_terms(cls, terms: Sequence[Term], vocab_policy: VocabPolicy) -> TaskVector:
        obj = cls.__new__(cls)
        obj.vocab_policy = vocab_policy
        obj._terms = tuple(terms)
        return obj

    def with_vocab_policy(self, vocab_policy: VocabPolicy) -> TaskVector:
        """The same vector under another vocabulary policy (its shapes checked already)."""
        return TaskVector._from_terms(self._terms, vocab_policy)

    # -- algebra
    @property
    def terms(self) -> tuple[Term, ...]:
        return self._terms

    def _combine(self, other: TaskVector, sign: float) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        terms = list(self._terms)
        for t in other._terms:
            for i, s in enumerate(terms):
                if s.finetuned is t.finetuned and s.pretrained is t.pretrained:
                    terms[i] = Term(s.coef + sign * t.coef, s.finetuned, s.pretrained, s.mapping)
                    break
            else:
                terms.append(Term(sign * t.coef, t.finetuned, t.pretrained, t.mapping))
        policy: VocabPolicy = "common" if "common" in (self.vocab_policy, other.vocab_policy) else "strict"
        return TaskVector._from_terms(terms, policy)

    def __add__(self, other: TaskVector) -> TaskVector:
        return self._combine(other, 1.0)

    def __radd__(self, other: object) -> TaskVector:
        if other == 0:  # sum() starts from 0
            return self
        return NotImplemented

    def __sub__(self, other: TaskVector) -> TaskVector:
        return self._combine(other, -1.0)

    def __neg__(self) -> TaskVector:
        return self * -1.0

    def __mul__(self, scalar: float) -> TaskVector:
        if isinstance(scalar, TaskVector):
            return NotImplemented
        c = check_coef(scalar)
        return TaskVector._from_terms(
            [Term(t.coef * c, t.finetuned, t.pretrained, t.mapping) for t in self._terms], self.vocab_policy
        )

    __rmul__ = __mul__

    def __repr__(self) -> str:
        body = " + ".join(f"{t.coef:g}·({t.finetuned.name} − {t.pretrained.name})" for t in self._terms)
        return f"TaskVector({body})"

    def describe(self, names: Sequence[str] = ()) -> str:
        """``"0.7·(θ_a − θ_b) + …"``, each pair by the checkpoints' names or by ``names``
        (finetuned, pretrained, finetuned, …) where given."""
        parts = []
        for i, t in enumerate(self._terms):
            ft = names[2 * i] if len(names) > 2 * i else t.finetuned.name
            pre = names[2 * i + 1] if len(names) > 2 * i + 1 else t.pretrained.name
            parts.append(f"{t.coef:g}·(θ_{ft} − θ_{pre})")
        return " + ".join(parts)

    # -- tensors
    @property
    def reference(self) -> TensorSource:
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

    def locate(self, key: str) -> list[Located]:
        """The inputs each term reads for ``key`` (in the reference's naming)."""
        out = []
        for i, t in enumerate(self._terms):
            fk = self._term_map(i).get(key)
            if fk is None or fk not in t.mapping:
                raise MergeError(f"tensor {key!r} is missing from {t.finetuned.name} or {t.pretrained.name}")
            out.append(Located(t.coef, t.finetuned, fk, t.pretrained, t.mapping[fk]))
        return out

    def shape(self, key: str) -> tuple[int, ...]:
        shapes = []
        for _, ft, fk, pre, pk in self.locate(key):
            shapes += [ft.shape(fk), pre.shape(pk)]
        if not shapes[0]:
            return ()
        return (min(s[0] for s in shapes), *shapes[0][1:])

    def dtype(self, key: str) -> torch.dtype:
        return torch.float32

    def _check_shapes(self) -> None:
        for t in self._terms:
            for fk, pk in t.mapping.items():
                check_pair(fk, t.finetuned.name, t.finetuned.shape(fk), t.pretrained.name,
                           t.pretrained.shape(pk), self.vocab_policy)  # fmt: skip

    def is_float(self, key: str) -> bool:
        return all(
            ft.dtype(fk).is_floating_point and pre.dtype(pk).is_floating_point
            for _, ft, fk, pre, pk in self.locate(key)
        )

    def get(self, key: str) -> torch.Tensor:
        """Σ cᵢ (θ_ftᵢ[key] − θ_preᵢ[key]) in float32 (rows cropped to the common vocabulary
        under the ``common`` policy)."""
        shape = self.shape(key)
        return self.get_span(key, 0, math.prod(shape)).reshape(shape)

    def get_span(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Elements ``start:stop`` of the flattened :meth:`get` ``(key)``, as a 1-D float32
        tensor, reading only those elements of each input that can read a piece of a tensor.

        Rows are the first dimension and lie first in row-major order, so the common rows of
        differing vocabularies are the same leading elements in every input."""
        total: torch.Tensor | None = None
        for coef, ft, fk, pre, pk in self.locate(key):
            a, b = ft.get_span(fk, start, stop), pre.get_span(pk, start, stop)
            if not (a.dtype.is_floating_point and b.dtype.is_floating_point):
                raise MergeError(f"tensor {key!r} has dtype {a.dtype}/{b.dtype}, which cannot be merged")
            if a.dtype == torch.float32 and ft.fresh_reads:
                delta = a.sub_(b)  # `a` is a fresh buffer read for this call
            else:
                delta = a.float() - b.float()
                ft.give_back(a)
            pre.give_back(b)
            if coef != 1.0:
                delta.mul_(coef)
            if total is None:
                total = delta  # a buffer of this call's own, so the next terms add in place
            else:
                total.add_(delta)
                self.give_back(delta)
        assert total is not None  # a vector always has at least one term
        return total

    def give_back(self, tensor: torch.Tensor) -> None:
        """Return a tensor from :meth:`get` to its checkpoint's read buffers (see
        :class:`~taskrank.checkpoints.safetensors_io.BufferPool`); a no-op outside a merge."""
        for t in self._terms:
            t.finetuned.give_back(tensor)
            t.pretrained.give_back(tensor)

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
        return all(torch.equal(ft.get(fk), pre.get(pk)) for _, ft, fk, pre, pk in self.locate(key))

    def inputs(self) -> list[tuple[float, TensorSource, TensorSource]]:
        """``(coef, finetuned, pretrained)`` of every term."""
        return [(t.coef, t.finetuned, t.pretrained) for t in self._terms]


def check_pair(
    key: str, a_name: str, a_shape: tuple[int, ...], b_name: str, b_shape: tuple[int, ...], policy: str
) -> None:
    """Refuse (:class:`MergeError`) tensor ``key`` of shape ``a_shape`` in ``a_name`` and ``b_shape``
    in ``b_name`` as a pair of one merge, unless the shapes agree, or differ in rows (vocabulary
    size) only under the ``common`` vocabulary policy."""
    if a_shape == b_shape:
        return
    rows_only = len(a_shape) == len(b_shape) and len(a_shape) >= 1 and a_shape[1:] == b_shape[1:]
    if rows_only and policy == "common":
        return
    if rows_only:
        raise MergeError(
            f"tensor {key!r}: {a_name} has {a_shape[0]} rows {list(a_shape)} but {b_name} has "
            f"{b_shape[0]} {list(b_shape)} (different vocabularies?); pass --vocab-policy common "
            "(vocab_policy='common') to merge the common rows only"
        )
    raise MergeError(
        f"tensor {key!r} has shape {list(a_shape)} in {a_name} but {list(b_shape)} in {b_name}: "
        "the checkpoints do not share one architecture (hidden size or layer count differ)"
    )
