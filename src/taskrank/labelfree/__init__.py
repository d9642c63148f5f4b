"""Choosing α without relevance labels (``select_on: label-free``, ``taskrank select-alpha``).

A collection with no labels still has its documents and its queries. The strategies here value
each α from those alone: pseudo-queries cut out of the corpus (:mod:`.pseudo`), or the shape of
the re-ranked lists of the real queries (query performance predictors, entropy; see
:mod:`.strategies`). :mod:`.selection` picks α from their signals and keeps α = 0 (the vector
not applied) unless another α is significantly better.

>>> from taskrank.labelfree import select_alpha, read_target  # doctest: +SKIP
"""

from __future__ import annotations

from .api import DEFAULT_ALPHAS, read_target, select_alpha
from .pseudo import PseudoQueries, make_pseudo_queries
from .selection import (
    DEFAULT_GUARD,
    DEFAULT_STRATEGY,
    LabelFreeChoice,
    StrategyOutcome,
    choose,
    label_free_choice,
)
from .strategies import STRATEGIES, Lists, Strategy, strategy

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_GUARD",
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "LabelFreeChoice",
    "Lists",
    "PseudoQueries",
    "Strategy",
    "StrategyOutcome",
    "choose",
    "label_free_choice",
    "make_pseudo_queries",
    "read_target",
    "select_alpha",
    "strategy",
]
