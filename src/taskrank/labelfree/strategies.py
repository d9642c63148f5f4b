"""Label-free signals of how well a model state ranks, one registered class per strategy.

Each strategy turns the re-ranked lists of one α into a value per query, higher meaning "ranks
better"; :mod:`taskrank.labelfree.selection` picks α from them. None reads relevance judgments:

``pseudo-queries``
    nDCG@10 of the source document of each pseudo-query cut out of the corpus
    (:mod:`taskrank.labelfree.pseudo`), among its first-stage candidates.
``nqc``
    Normalized Query Commitment (Shtok, Kurland, Carmel, Raiber and Markovits, "Predicting query
    performance by query-drift estimation", ACM TOIS 2012): the standard deviation of the top
    :data:`NQC_DEPTH` scores over the magnitude of the mean score of the candidates, which stands
    in for the corpus score of the original.
``wig``
    Weighted Information Gain (Zhou and Croft, "Query performance prediction in web search
    environments", SIGIR 2007): the mean of the top :data:`WIG_DEPTH` scores minus the mean score
    of the candidates, over the square root of the query's length in words. A query with no
    more than :data:`WIG_DEPTH` candidates has none below the top and is not valued.
``entropy``
    Minus the entropy of each query's softmax over its candidates' scores, normalised by
    log(n): the objective AdaMerging (Yang et al., ICLR 2024) minimises over a classifier's
    outputs, here over a ranker's candidate distribution.

The score-distribution predictors read the model's raw scores, whose scale may move with α: the
benchmark (``benchmarks/label-free.md``) measures which strategy chooses well.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..vocabulary import LABEL_FREE_STRATEGIES

#: The top scores NQC spreads over (Shtok et al. use 100 for language-model retrieval).
NQC_DEPTH = 100
#: The top scores WIG averages (Zhou and Croft use 5).
WIG_DEPTH = 5
#: The smallest magnitude NQC divides by, so that a mean score of 0 gives a large, finite value.
EPSILON = 1e-9

Run = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class Lists:
    """What one α produced: the model's scores of the target queries' candidates (``target``),
    the target queries' text, and the pseudo-queries' re-ranked candidates with their sources
    (``pseudo``; None when no pseudo-queries were scored)."""

    target: Run
    queries: Mapping[str, str]
    pseudo: Run | None = None
    pseudo_sources: Mapping[str, str] | None = None


class Strategy:
    """One way of valuing an α without labels: :meth:`per_query` values, higher is better."""

    name: ClassVar[str]
    #: One line for the report and ``--help``.
    description: ClassVar[str]
    #: Whether the strategy needs the pseudo-queries' re-ranked lists.
    needs_pseudo: ClassVar[bool] = False

    def per_query(self, lists: Lists) -> dict[str, float]:
        """A value per query (target or pseudo), higher meaning the model ranks better."""
        raise NotImplementedError


def _sorted_scores(scores: Mapping[str, float]) -> np.ndarray:
    return np.sort(np.fromiter(scores.values(), dtype=float, count=len(scores)))[::-1]


class PseudoQueryStrategy(Strategy):
    name = "pseudo-queries"
    description = "nDCG@10 of each pseudo-query's source document (titles or sentences cut from the corpus)"
    needs_pseudo = True

    def per_query(self, lists: Lists) -> dict[str, float]:
        from ..evaluation import evaluate

        if lists.pseudo is None or not lists.pseudo_sources:
            raise ValueError("the pseudo-queries strategy needs the pseudo-queries' re-ranked lists")
        qrels = {qid: {doc: 1} for qid, doc in lists.pseudo_sources.items()}
        return dict(evaluate(lists.pseudo, qrels, ["ndcg@10"]).per_query["ndcg@10"])


class NQC(Strategy):
    name = "nqc"
    description = f"normalized query commitment: std of the top {NQC_DEPTH} scores over |mean score|"

    def per_query(self, lists: Lists) -> dict[str, float]:
        out: dict[str, float] = {}
        for qid, scores in lists.target.items():
            if len(scores) < 2:
                continue
            ranked = _sorted_scores(scores)
            out[qid] = float(np.std(ranked[:NQC_DEPTH]) / max(abs(float(np.mean(ranked))), EPSILON))
        return out


class WIG(Strategy):
    name = "wig"
    description = f"weighted information gain: mean of the top {WIG_DEPTH} scores minus the mean score"

    def per_query(self, lists: Lists) -> dict[str, float]:
        out: dict[str, float] = {}
        for qid, scores in lists.target.items():
            if len(scores) <= WIG_DEPTH:  # the top is every candidate: 0 at every α, no signal
                continue
            ranked = _sorted_scores(scores)
            length = max(len(lists.queries.get(qid, "").split()), 1)
            out[qid] = float((np.mean(ranked[:WIG_DEPTH]) - np.mean(ranked)) / math.sqrt(length))
        return out


class Entropy(Strategy):
    name = "entropy"
    description = "minus the normalised entropy of each query's softmax over its candidates' scores"

    def per_query(self, lists: Lists) -> dict[str, float]:
        out: dict[str, float] = {}
        for qid, scores in lists.target.items():
            if len(scores) < 2:
                continue
            values = np.fromiter(scores.values(), dtype=float, count=len(scores))
            shifted = values - values.max()
            p = np.exp(shifted) / np.exp(shifted).sum()
            entropy = -float(np.sum(p[p > 0] * np.log(p[p > 0])))
            out[qid] = -entropy / math.log(len(values))
        return out


#: The strategies by name, in the vocabulary's order (checked when this module is imported).
STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (PseudoQueryStrategy, NQC, WIG, Entropy)}
if tuple(STRATEGIES) != LABEL_FREE_STRATEGIES:  # pragma: no cover - a developer's mistake
    raise ImportError(
        f"label-free strategies {tuple(STRATEGIES)} differ from the vocabulary's {LABEL_FREE_STRATEGIES}"
    )


def strategy(name: str) -> Strategy:
    """The strategy called ``name`` (a ``ValueError`` naming the valid ones otherwise)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown label-free strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()


__all__ = ["NQC", "STRATEGIES", "WIG", "Entropy", "Lists", "PseudoQueryStrategy", "Strategy", "strategy"]
