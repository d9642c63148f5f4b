"""Evaluation: trec_eval's metrics (via pytrec_eval), score fusion, paired significance tests.

>>> from taskrank.evaluation import evaluate, fuse, compare
"""

from __future__ import annotations

from .fusion import FUSION_METHODS, fuse, min_max, rrf, tune_fusion, weight_grid, weighted_sum
from .metrics import (
    DEFAULT_METRICS,
    METRIC_ALIASES,
    METRIC_FAMILIES,
    RULES,
    Evaluation,
    canonical_metric,
    display_metric,
    evaluate,
    parse_metric,
)
from .significance import CORRECTIONS, TESTS, Comparison, PairTest, compare, paired_test

__all__ = [
    "CORRECTIONS",
    "DEFAULT_METRICS",
    "FUSION_METHODS",
    "METRIC_ALIASES",
    "METRIC_FAMILIES",
    "RULES",
    "TESTS",
    "Comparison",
    "Evaluation",
    "PairTest",
    "canonical_metric",
    "compare",
    "display_metric",
    "evaluate",
    "fuse",
    "min_max",
    "paired_test",
    "parse_metric",
    "rrf",
    "tune_fusion",
    "weight_grid",
    "weighted_sum",
]
