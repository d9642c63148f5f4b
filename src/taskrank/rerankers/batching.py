"""Token sequences packed flat and padded per batch, the machinery that keeps scoring fast.

Sequences are stored in flat arrays (:class:`Packed`) and padded per batch with vectorised
numpy, so the hot loop does no per-pair Python work; batches are formed over the length-sorted
sequences (:func:`plan_batches`), so that each batch is padded only to its own longest member.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


class Packed:
    """Token sequences of different lengths, stored flat (one int64 array per feature).

    ``features`` maps a feature name (``input_ids``, ``token_type_ids``…) to one list of
    token ids per sequence; all features of a sequence have the same length.
    """

    def __init__(self, features: Mapping[str, Sequence[Sequence[int]]]) -> None:
        if "input_ids" not in features:
            raise ValueError("Packed needs an 'input_ids' feature")
        ids = features["input_ids"]
        self.lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if len(ids) and self.lengths.min() == 0:
            raise ValueError("Packed cannot hold an empty token sequence")
        self.starts = np.zeros(len(ids), dtype=np.int64)
        if len(ids) > 1:
            np.cumsum(self.lengths[:-1], out=self.starts[1:])
        total = int(self.lengths.sum())
        self.flat = {
            name: np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=total)
            for name, seqs in features.items()
        }

    def __len__(self) -> int:
        return len(self.lengths)

    def pad(
        self, rows: np.ndarray, pad_values: Mapping[str, int], *, left: bool = False, multiple: int = 1
    ) -> dict[str, torch.Tensor]:
        """Pad ``rows`` to their longest member, rounded up to a ``multiple``; returns the
        features plus ``attention_mask``.

        With ``left=True`` sequences are right-aligned (padding on the left), as causal LMs
        need when only the last positions are read.
        """
        import torch

        lengths = self.lengths[rows]
        width = -(-int(lengths.max()) // multiple) * multiple
        cols = np.arange(width, dtype=np.int64)[None, :]
        pos = cols - (width - lengths)[:, None] if left else np.broadcast_to(cols, (len(rows), width))
        valid = (pos >= 0) & (pos < lengths[:, None])
        gather = np.where(valid, self.starts[rows][:, None] + pos, 0)
        out = {
            name: torch.from_numpy(np.where(valid, flat[gather], pad_values.get(name, 0)))
            for name, flat in self.flat.items()
        }
        out["attention_mask"] = torch.from_numpy(valid.astype(np.int64))
        return out


def plan_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Split sequence indices into batches of similar length, longest first.

    Sequences are sorted by length (stable, so ties keep input order); each batch holds
    ``batch_size`` of them, or, with a token budget, as many as fit ``max_tokens`` once padded
    to the batch's longest member (at least one).

    Example::

        plan_batches(np.array([5, 50, 7]), batch_size=2)  # [array([1, 2]), array([0])]
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        size = batch_size if max_tokens is None else max(1, max_tokens // int(lengths[order[start]]))
        batches.append(order[start : start + size])
        start += size
    return batches


__all__ = ["Packed", "plan_batches"]
