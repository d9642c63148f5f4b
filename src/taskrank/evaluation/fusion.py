"""Score fusion of a first stage and a re-ranker: min-max + weighted sum, tuned weights, RRF.

The weighted sum of per-query min-max normalised scores (the "wsum" of ranx, the fusion the
paper uses; Fox & Shaw, TREC-2 1994, for CombSUM) and reciprocal rank fusion (Cormack, Clarke
& Büttcher, SIGIR 2009). Written out here rather than delegated to ranx so that score ties
follow trec_eval's order (doc id descending) in RRF ranks and no JIT warm-up is paid; a test
checks the weighted sum against ``ranx.fuse``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from ..data import Run, ranked
from ..errors import ConfigError, DataError
from .metrics import canonical_metric, evaluate

logger = logging.getLogger(__name__)

FUSION_METHODS = ("wsum", "rrf")


def min_max(scores: Mapping[str, float]) -> dict[str, float]:
    """Scale one query's scores to [0, 1]; equal scores all become 0 (as in ranx).

    >>> min_max({"a": 2.0, "b": 4.0, "c": 3.0})
    {'a': 0.0, 'b': 1.0, 'c': 0.5}
    """
    if not scores:
        return {}
    values = np.fromiter(scores.values(), dtype=float, count=len(scores))
    if not np.all(np.isfinite(values)):
        raise DataError("cannot normalise non-finite scores")
    low, high = values.min(), values.max()
    if high == low:
        return dict.fromkeys(scores, 0.0)
    return dict(zip(scores, ((values - low) / (high - low)).tolist(), strict=True))


def _check_weights(weights: Sequence[float], count: int) -> tuple[float, ...]:
    if len(weights) != count:
        raise ConfigError(
            f"expected {count} fusion weights (one per run), got {len(weights)}: {tuple(weights)}"
        )
    out = tuple(float(w) for w in weights)
    if any(not np.isfinite(w) or w < 0 for w in out):
        raise ConfigError(f"fusion weights must be finite and >= 0, got {out}")
    if sum(out) == 0:
        raise ConfigError("fusion weights must not all be 0")
    return out


def fuse(
    first_stage: Mapping[str, Mapping[str, float]],
    reranker: Mapping[str, Mapping[str, float]],
    weights: Sequence[float] = (0.5, 0.5),
) -> Run:
    """Per-query min-max normalisation of both runs, then ``w0 * first + w1 * reranker``.
    A document missing from one run gets 0 from it; a query missing from one run keeps the
    other's normalised scores.

    >>> fuse({"q": {"a": 0.0, "b": 10.0}}, {"q": {"a": 1.0, "b": 0.0}}, (0.4, 0.6))
    {'q': {'a': 0.6, 'b': 0.4}}
    """
    return weighted_sum([first_stage, reranker], weights)


def weighted_sum(runs: Sequence[Mapping[str, Mapping[str, float]]], weights: Sequence[float]) -> Run:
    """The weighted sum of any number of min-max normalised runs (see :func:`fuse`)."""
    w = _check_weights(weights, len(runs))
    fused: Run = {}
    for qid in dict.fromkeys(q for run in runs for q in run):
        total: dict[str, float] = {}
        for weight, run in zip(w, runs, strict=True):
            for doc_id, value in min_max(run.get(qid, {})).items():
                total[doc_id] = total.get(doc_id, 0.0) + weight * value
        fused[qid] = total
    return fused


def rrf(runs: Sequence[Mapping[str, Mapping[str, float]]], k: int = 60) -> Run:
    """Reciprocal rank fusion: ``sum over runs of 1 / (k + rank)``, ranks in trec_eval order
    (ties by doc id descending), rank 1 first.

    >>> rrf([{"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 5.0}}], k=60)["q"]["b"] == 1 / 62 + 1 / 61
    True
    """
    if not runs:
        raise ConfigError("rrf needs at least one run")
    if k < 0:
        raise ConfigError(f"rrf k must be >= 0, got {k}")
    fused: Run = {}
    for qid in dict.fromkeys(q for run in runs for q in run):
        total: dict[str, float] = {}
        for run in runs:
            for rank, (doc_id, _) in enumerate(ranked(run.get(qid, {})), start=1):
                total[doc_id] = total.get(doc_id, 0.0) + 1.0 / (k + rank)
        fused[qid] = total
    return fused


def weight_grid(step: float = 0.1) -> list[tuple[float, float]]:
    """(first-stage, re-ranker) weight pairs summing to 1, from (0, 1) to (1, 0).

    >>> weight_grid(0.5)
    [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    """
    if not 0 < step <= 1:
        raise ConfigError(f"grid step must be in (0, 1], got {step}")
    count = round(1 / step)
    if abs(count * step - 1) > 1e-9:
        raise ConfigError(f"grid step must divide 1 evenly (0.1, 0.05, 0.25, …), got {step}")
    return [(round(i / count, 10), round(1 - i / count, 10)) for i in range(count + 1)]


def tune_fusion(
    first_stage: Mapping[str, Mapping[str, float]],
    reranker: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    metric: str = "ndcg@10",
    step: float = 0.1,
) -> tuple[tuple[float, float], float]:
    """Grid-search the (first-stage, re-ranker) weights on a dev split; return the best weights
    and their metric value. Equal values keep the grid point with the larger re-ranker weight
    (the first one met), so results are deterministic. Runs that share no query with ``qrels``
    are a :class:`DataError`: there would be nothing to tune on.

    >>> weights, value = tune_fusion(bm25_dev, reranked_dev, dev.qrels, "ndcg@10")  # doctest: +SKIP
    """
    key = canonical_metric(metric)
    grid = weight_grid(step)
    judged = [qid for qid, docs in qrels.items() if docs]
    held = {*first_stage, *reranker}
    if not any(qid in held for qid in judged):
        # every grid point would score 0 and the "best" weights would be the first grid point
        raise DataError(
            f"cannot tune fusion weights: the runs ({len(held)} queries) share no query with the "
            f"qrels ({len(judged)} judged queries)"
        )
    scores = [evaluate(fuse(first_stage, reranker, w), qrels, [key]).mean[key] for w in grid]
    best = 0
    for i, value in enumerate(scores):
        logger.debug("fusion weights %s: %s = %.6f", grid[i], key, value)
        if value > scores[best] + 1e-12:
            best = i
    best_weights, best_value = grid[best], scores[best]
    logger.info("tuned fusion weights %s (%s = %.4f)", best_weights, key, best_value)
    return best_weights, best_value
