"""Choose α for a collection with no relevance labels, from Python or ``taskrank select-alpha``.

Reads the corpus and the target queries only, never a qrels file: BM25 retrieves candidates for
the target queries and for pseudo-queries cut out of the corpus; one loaded ranker is moved
between the α values in place (:class:`taskrank.arithmetic.AlphaSweep`) and re-ranks both; every
strategy values every α, and the chosen strategy decides (:mod:`taskrank.labelfree.selection`).
"""

from __future__ import annotations

import logging
import os
from collections import ChainMap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

from ..errors import ConfigError, DataError
from ..vocabulary import ALPHA_RANGE
from .pseudo import NO_PSEUDO_QUERY, PseudoQueries, make_pseudo_queries
from .selection import DEFAULT_GUARD, DEFAULT_STRATEGY, LabelFreeChoice, label_free_choice
from .strategies import STRATEGIES, Lists

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
Corpus = Mapping[str, Mapping[str, str]]
#: The α values tried when none are given: 0 to 1 by 0.25.
DEFAULT_ALPHAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


def _check_alphas(alphas: Sequence[float]) -> list[float]:
    """The α values as floats; none, one that is not finite or one outside :data:`ALPHA_RANGE`
    (the experiment config's bounds) is a :class:`ConfigError` naming it."""
    low, high = ALPHA_RANGE
    values = [float(a) for a in alphas]
    if not values:
        raise ConfigError("no α values to choose from")
    for alpha in values:
        if not low <= alpha <= high:  # NaN fails both comparisons
            raise ConfigError(f"α {alpha} is outside [{low}, {high}]")
    return values


def read_target(data: PathLike, queries: PathLike | None = None) -> tuple[dict, dict[str, str]]:
    """The corpus and the queries of a BEIR folder (``corpus.jsonl``, ``queries.jsonl``), or of
    a corpus file and a queries file; never its qrels."""
    from ..data.formats import load_corpus, load_queries

    root = Path(data)
    corpus_file = root / "corpus.jsonl" if root.is_dir() else root
    if root.is_dir() and not corpus_file.exists():
        corpus_file = root / "corpus.jsonl.gz"
    queries_file = (
        Path(queries) if queries is not None else (root / "queries.jsonl" if root.is_dir() else None)
    )
    if queries_file is None:
        raise DataError(f"{root} is a corpus file: name the target queries too (--queries)")
    return dict(load_corpus(corpus_file)), dict(load_queries(queries_file))


def _pseudo_queries(corpus: Corpus, strategy: str, count: int, seed: int) -> PseudoQueries | None:
    """The pseudo-queries to score, None when none are asked for or the corpus yields none;
    an error, before any work, when the deciding ``strategy`` needs them and has none."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown label-free strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    needed = STRATEGIES[strategy].needs_pseudo
    others = ", ".join(name for name, cls in STRATEGIES.items() if not cls.needs_pseudo)
    if needed and count <= 0:
        raise ConfigError(
            f"the {strategy} strategy needs pseudo-queries (pseudo_queries, --pseudo-queries > 0); "
            f"or choose another strategy ({others})"
        )
    pseudo = make_pseudo_queries(corpus, count, seed) if count else None
    if pseudo is None or pseudo.queries:
        return pseudo
    if needed:
        raise DataError(f"the corpus: {NO_PSEUDO_QUERY}; choose α with another strategy ({others})")
    log.warning("the corpus: %s; only the strategies without them are computed", NO_PSEUDO_QUERY)
    return None


def select_alpha(
    ranker: PathLike,
    domain: PathLike,
    pretrained: PathLike,
    corpus: Corpus,
    queries: Mapping[str, str],
    *,
    kind: str,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    strategy: str = DEFAULT_STRATEGY,
    guard: float | None = DEFAULT_GUARD,
    pseudo_queries: int = 200,
    seed: int = 0,
    k: int = 100,
    top_k: int = 100,
    bm25: Mapping[str, object] | None = None,
    layers: str | Sequence[int] | None = None,
    mode: str = "only",
    device: str = "auto",
    dtype: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool = True,
) -> LabelFreeChoice:
    """The α to use for ``ranker`` + α·(``domain`` − ``pretrained``) on ``corpus`` and
    ``queries``, chosen without relevance labels, with every strategy's signal per α.

    ``bm25`` holds :func:`taskrank.retrieval.bm25_search`'s ``language``, ``k1`` and ``b``.

    Example::

        corpus, queries = read_target("data/my-collection")
        choice = select_alpha("ranker/", "domain/", "base/", corpus, queries, kind="bi-encoder")
        print(choice.alpha, choice.words())
    """
    from ..arithmetic import AlphaSweep, TaskVector
    from ..rerankers import load_reranker
    from ..retrieval import bm25_search

    if not queries:
        raise DataError("no target queries to choose α for")
    alphas = _check_alphas(alphas)
    pseudo = _pseudo_queries(corpus, strategy, pseudo_queries, seed)
    settings = {"language": "english", "k1": 0.9, "b": 0.4, **(bm25 or {})}
    target_candidates = bm25_search(corpus, queries, k=k, progress=progress, **settings)  # type: ignore[arg-type]
    pseudo_candidates = (
        bm25_search(corpus, pseudo.queries, k=k, progress=progress, **settings)  # type: ignore[arg-type]
        if pseudo is not None
        else None
    )
    reranker = load_reranker(
        str(ranker), kind, device=device, dtype=dtype, batch_size=batch_size, max_length=max_length
    )
    sweep = AlphaSweep(reranker.model, TaskVector(domain, pretrained), progress=progress, originals=ranker)
    # views, not copies: the re-ranker only looks documents and queries up
    docs = cast("dict[str, dict[str, str]]", corpus)
    shown = (
        cast("dict[str, dict[str, str]]", ChainMap(pseudo.documents, docs)) if pseudo is not None else docs
    )
    texts = cast("dict[str, str]", queries)
    lists: list[Lists] = []
    for alpha in alphas:
        sweep.set_alpha(alpha, layers=layers, mode=mode)
        label = f"α={alpha:g}"
        target = reranker.rerank(target_candidates, docs, texts, top_k=top_k, progress=progress, label=label)
        pseudo_run = None
        if pseudo is not None and pseudo_candidates is not None:
            pseudo_run = reranker.rerank(
                pseudo_candidates,
                shown,
                pseudo.queries,
                top_k=top_k,
                progress=progress,
                label=f"{label} · pseudo",
            )
        lists.append(Lists(target, queries, pseudo_run, pseudo.sources if pseudo is not None else None))
    sweep.set_alpha(0.0)
    return label_free_choice(
        alphas, lists, strategy_name=strategy, guard=guard, pseudo=pseudo.describe() if pseudo else None
    )


__all__ = ["DEFAULT_ALPHAS", "read_target", "select_alpha"]
