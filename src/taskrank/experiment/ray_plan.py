"""The local command's batch plan, shared out: what lets a Ray run give the local scores bit for bit.

A model's score of a pair depends, in its last bits, on the batch it is computed in: how many rows
the batch has and how wide it is padded (measured on CPU for every family: the matrix and attention
kernels sum in another order). A local re-ranking sorts all its units by token length and cuts them
into batches (:func:`~taskrank.rerankers.plan_batches`). Shards of queries scored apart would batch
the pairs differently, and change the scores' last digits. So both Ray paths (the experiment engine,
:mod:`.distributed`, and ``taskrank rerank --engine ray``, :mod:`.ray_data`) make the local plan
from every unit's token length and have their workers score its batches, each whole.

A unit is a (query, document) pair; for a bi-encoder it is a distinct text, each encoded once over
the whole step (never once per shard), and the driver takes the pairs' dot products as the local
bi-encoder does. The texts travel once, packed in numpy arrays (:class:`Texts`) in Ray's object
store, which the workers of a node share and read without a copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..data import Queries

#: Pairs per chunk when the driver takes a bi-encoder's dot products.
DOT_CHUNK = 65536


class Texts:
    """Strings packed in two numpy arrays, UTF-8 bytes and offsets: one object in Ray's object
    store that the actors of a node share and read without a copy."""

    def __init__(self, texts: Sequence[str]) -> None:
        encoded = [text.encode("utf-8") for text in texts]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.data[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")


@dataclass(frozen=True)
class Work:
    """The units to score, as integers into ``texts``: pair ``i`` is (``texts[left[i]]``,
    ``texts[right[i]]``); a bi-encoder's units (``per_text``) are the texts themselves."""

    texts: Texts
    left: np.ndarray
    right: np.ndarray
    per_text: bool

    @property
    def units(self) -> int:
        return len(self.texts) if self.per_text else len(self.left)

    def pairs(self, units: np.ndarray) -> tuple[list[str], list[str]]:
        return [self.texts[i] for i in self.left[units]], [self.texts[i] for i in self.right[units]]

    def lengths(self, reranker: Any, units: np.ndarray) -> np.ndarray:
        """The token length of each unit, as ``reranker`` tokenizes it for the model."""
        if self.per_text:
            return reranker.tokenize([self.texts[i] for i in units]).lengths
        packed = reranker.encode(*self.pairs(units))
        return (packed[0] if isinstance(packed, tuple) else packed).lengths


def build_work(
    selected: Sequence[tuple[str, str]], documents: Mapping[str, str], queries: Queries, per_text: bool
) -> Work:
    """The selected (query id, document id) pairs as :class:`Work`. The texts are numbered in the
    order in which they first appear in the pairs' queries, then their documents: the order in which
    a local bi-encoder encodes them."""
    index: dict[str, int] = {}
    for qid, _ in selected:
        index.setdefault(queries[qid], len(index))
    for _, did in selected:
        index.setdefault(documents[did], len(index))
    left = np.fromiter((index[queries[q]] for q, _ in selected), dtype=np.int64, count=len(selected))
    right = np.fromiter((index[documents[d]] for _, d in selected), dtype=np.int64, count=len(selected))
    return Work(Texts(list(index)), left, right, per_text)


@dataclass(frozen=True)
class Plan:
    """The local command's batches (:func:`~taskrank.rerankers.plan_batches`), flat: batch ``b`` is
    ``order[bounds[b]:bounds[b + 1]]``, its rows in the order the model sees them."""

    order: np.ndarray
    bounds: np.ndarray

    @classmethod
    def of(cls, lengths: np.ndarray, batch_size: int, max_tokens: int | None) -> Plan:
        from ..rerankers import plan_batches

        batches = plan_batches(lengths, batch_size, max_tokens)
        sizes = np.fromiter((len(b) for b in batches), dtype=np.int64, count=len(batches))
        order = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        return cls(order, np.concatenate([[0], np.cumsum(sizes)]))

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def rows(self, batch: int) -> np.ndarray:
        return self.order[self.bounds[batch] : self.bounds[batch + 1]]


def score_batch(reranker: Any, work: Work, rows: np.ndarray) -> np.ndarray:
    """The scores (a bi-encoder: float32 embeddings) of the units ``rows``, one batch of the plan,
    scored as one forward pass, as the local re-ranking scores it (``reranker``'s settings are
    restored afterwards)."""
    saved = reranker.batch_size, reranker.max_tokens
    reranker.batch_size, reranker.max_tokens = len(rows), None
    try:
        if work.per_text:
            return reranker.encode_texts([work.texts[i] for i in rows]).cpu().numpy()
        queries, documents = work.pairs(rows)
        return reranker.score(list(zip(queries, documents, strict=True)))
    finally:
        reranker.batch_size, reranker.max_tokens = saved


def dot_products(embeddings: np.ndarray, work: Work) -> np.ndarray:
    """A bi-encoder's pair scores from the embeddings of its texts, as the local bi-encoder takes
    them (the same operations, so the same bits: each row's sum does not depend on the chunk)."""
    import torch

    table = torch.from_numpy(embeddings)
    out = np.empty(len(work.left), dtype=np.float64)
    for start in range(0, len(work.left), DOT_CHUNK):
        q = torch.from_numpy(work.left[start : start + DOT_CHUNK])
        d = torch.from_numpy(work.right[start : start + DOT_CHUNK])
        out[start : start + len(q)] = (table[q] * table[d]).sum(dim=-1).numpy()
    return out


__all__ = ["DOT_CHUNK", "Plan", "Texts", "Work", "build_work", "dot_products", "score_batch"]
