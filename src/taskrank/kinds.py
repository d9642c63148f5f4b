"""The re-ranker kinds (scoring families), in a module that needs neither torch nor numpy.

The command line lists them in its help and the experiment config validates against them
without loading the re-rankers; :mod:`taskrank.rerankers` registers one class per kind (a test
checks that the two agree).
"""

from __future__ import annotations

KINDS: tuple[str, ...] = ("monot5", "cross-encoder", "bi-encoder", "query-likelihood")
