"""BM25 first stage with bm25s: language-aware tokenisation, cached index, TREC-style runs.

Okapi BM25 (Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond",
2009) as implemented by bm25s (Lù, 2024, arXiv 2407.03618), with Snowball stemming
(PyStemmer) and per-language stop words. The default variant is Lucene's, the one
Elasticsearch and Anserini use, so numbers are comparable to the BEIR baselines.

The index of a corpus is built once per (corpus content, parameters) and cached on disk.

BM25 runs on the CPU only. bm25s picks JAX for its top-k when JAX is installed, and importing
it then starts JAX's GPU backend, which by default reserves 75% of the GPU's memory for itself
and leaves the re-ranker too little. taskrank asks bm25s for its numpy top-k and, unless
``XLA_PYTHON_CLIENT_PREALLOCATE`` is already set or JAX already imported, sets it to ``false``
before bm25s is first imported, so that JAX takes only what it uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .atomic import atomic_dir
from .data import (
    Corpus,
    Queries,
    Run,
    doc_text,
    load_beir,
    load_corpus,
    load_queries,
    read_qrels,
    restrict_to_judged,
    top_k,
)
from .errors import ConfigError, DataError
from .paths import cache_root

if TYPE_CHECKING:
    from bm25s import BM25
    from bm25s.tokenization import Tokenized

logger = logging.getLogger(__name__)

# language -> (Snowball stemmer, bm25s stop-word list); aliases map ISO codes to names
LANGUAGES: dict[str, tuple[str, str]] = {
    "english": ("english", "en"),
    "german": ("german", "de"),
    "french": ("french", "fr"),
    "spanish": ("spanish", "es"),
    "italian": ("italian", "it"),
    "portuguese": ("portuguese", "pt"),
    "dutch": ("dutch", "nl"),
    "swedish": ("swedish", "sv"),
    "norwegian": ("norwegian", "no"),
    "danish": ("danish", "da"),
    "russian": ("russian", "ru"),
    "turkish": ("turkish", "tr"),
}
_ALIASES = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian",
            "pt": "portuguese", "nl": "dutch", "sv": "swedish", "no": "norwegian", "da": "danish",
            "ru": "russian", "tr": "turkish"}  # fmt: skip
VARIANTS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
_META = "taskrank-bm25.json"
_INDEX_FORMAT = 1


@dataclass(frozen=True)
class BM25Params:
    """Everything that determines a BM25 ranking; recorded next to every run."""

    language: str = "english"
    k1: float = 1.5
    b: float = 0.75
    variant: str = "lucene"
    delta: float = 0.5
    stemming: bool = True
    stopwords: bool = True

    def __post_init__(self) -> None:
        language = _ALIASES.get(self.language.lower(), self.language.lower())
        if language not in LANGUAGES:
            raise ConfigError(
                f"unsupported BM25 language {self.language!r}; valid: {', '.join(sorted(LANGUAGES))} "
                f"(or the codes {', '.join(sorted(_ALIASES))})"
            )
        object.__setattr__(self, "language", language)
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown BM25 variant {self.variant!r}; valid: {', '.join(VARIANTS)}")
        if not self.k1 >= 0:
            raise ConfigError(f"BM25 k1 must be >= 0, got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ConfigError(f"BM25 b must be in [0, 1], got {self.b}")

    def to_dict(self) -> dict[str, Any]:
        """The parameters plus the implementation, for reports and run metadata."""
        bm25s = _bm25s()
        record = asdict(self)
        record["stemmer"] = f"snowball-{LANGUAGES[self.language][0]}" if self.stemming else None
        record["implementation"] = f"bm25s {bm25s.__version__}"
        record["token_pattern"] = TOKEN_PATTERN
        return record


def _bm25s() -> ModuleType:
    """Import bm25s without letting an installed JAX claim most of the GPU (see the module doc)."""
    if "jax" not in sys.modules:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import bm25s

    return bm25s


def corpus_fingerprint(corpus: Corpus) -> str:
    """sha256 of the corpus content (ids, titles and texts in order): the cache key of its index.

    >>> corpus_fingerprint({"d1": {"title": "", "text": "a"}})[:12]
    '62a7dc8929d7'
    """
    digest = hashlib.sha256()
    for doc_id, doc in corpus.items():
        for part in (doc_id, doc.get("title") or "", doc.get("text") or ""):
            encoded = part.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    return digest.hexdigest()


def default_index_cache() -> Path:
    """``$TASKRANK_CACHE/bm25`` if set, else ``~/.cache/taskrank/bm25``."""
    return cache_root() / "bm25"


class BM25Index:
    """A BM25 index over one corpus with fixed :class:`BM25Params`.

    >>> index = BM25Index.build(corpus, BM25Params(language="french"))  # doctest: +SKIP
    >>> run = index.search(queries, k=100)  # doctest: +SKIP
    """

    def __init__(self, retriever: BM25, doc_ids: list[str], params: BM25Params, fingerprint: str) -> None:
        self.retriever = retriever
        self.doc_ids = doc_ids
        self.params = params
        self.fingerprint = fingerprint
        self.path: Path | None = None
        self.from_cache = False

    def _tokenize(self, texts: list[str], *, progress: bool, return_ids: bool) -> Tokenized | list[list[str]]:
        return _tokenize(texts, self.params, progress=progress, return_ids=return_ids)

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        params: BM25Params | None = None,
        *,
        progress: bool = True,
        source: str | None = None,
    ) -> BM25Index:
        """Tokenise and index ``corpus`` (document text = title + " " + text).

        A corpus without a single term to index (every text empty, or stop words and one-letter
        words only) is a :class:`DataError` naming ``source``, the corpus's file or folder."""
        bm25s = _bm25s()
        params = params or BM25Params()
        if not corpus:
            raise DataError(f"cannot build a BM25 index over an empty corpus{_named(source)}")
        doc_ids = list(corpus)
        texts = [doc_text(corpus[d]) for d in doc_ids]
        tokens = cast("Tokenized", _tokenize(texts, params, progress=progress, return_ids=True))
        if not tokens.vocab:
            raise DataError(
                f"cannot build a BM25 index over the corpus{_named(source)}: none of its {len(doc_ids)} "
                f"documents has a term to index (titles and texts empty, or {params.language} stop "
                "words and one-letter words only)"
            )
        retriever = bm25s.BM25(k1=params.k1, b=params.b, delta=params.delta, method=params.variant)
        retriever.index(tokens, show_progress=progress)
        return cls(retriever, doc_ids, params, corpus_fingerprint(corpus))

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the index (bm25s arrays, doc ids, parameters) atomically to ``path``."""
        with atomic_dir(path, overwrite=overwrite) as tmp:
            self.retriever.save(str(tmp), show_progress=False)
            meta = {
                "format": _INDEX_FORMAT,
                "fingerprint": self.fingerprint,
                "params": self.params.to_dict(),
                "doc_ids": self.doc_ids,
            }
            (tmp / _META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        self.path = Path(path)
        return self.path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BM25Index:
        """Read an index written by :meth:`save`."""
        bm25s = _bm25s()
        folder = Path(path)
        meta_file = folder / _META
        if not meta_file.is_file():
            raise DataError(f"{folder}: not a taskrank BM25 index (no {_META})")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            stored = meta["params"]
            params = BM25Params(**{k: stored[k] for k in ("language", "k1", "b", "variant", "delta",
                                                         "stemming", "stopwords")})  # fmt: skip
            retriever = bm25s.BM25.load(str(folder), show_progress=False)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{folder}: the BM25 index is unreadable ({exc}); delete it to rebuild") from exc
        index = cls(retriever, list(meta["doc_ids"]), params, meta["fingerprint"])
        index.path = folder
        return index

    def search(self, queries: Queries, k: int = 100, *, progress: bool = True) -> Run:
        """Top-``k`` documents per query with their BM25 scores. Documents that share no term
        with the query (score 0) are not returned, so a query may get fewer than ``k`` or none."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        qids = list(queries)
        run: Run = {qid: {} for qid in qids}
        if not qids:
            return run
        tokens = self._tokenize([queries[q] for q in qids], progress=False, return_ids=False)
        vocab = self.retriever.vocab_dict
        # queries whose every term is unknown to the corpus match nothing
        active = [i for i, toks in enumerate(tokens) if any(t in vocab and t for t in toks)]
        if not active:
            return run
        n_docs = len(self.doc_ids)
        ids = np.asarray(self.doc_ids, dtype=object)
        # One more than k: a tie at the cutoff shows as a (k+1)-th score equal to the k-th. bm25s
        # breaks such ties its own way, so those queries are fetched deeper until the tie ends,
        # and the cut is taskrank's one top-k, in trec_eval's order (taskrank.data.top_k).
        pending, depth, first = list(range(len(active))), min(k + 1, n_docs), True
        while pending:
            docs, scores = self.retriever.retrieve(
                [[t for t in tokens[active[r]] if t in vocab and t] for r in pending],
                k=depth,
                show_progress=progress and first,  # one bar: the deeper passes are short
                n_threads=0,
                backend_selection="numpy",  # the same top-k everywhere, and never on the GPU
            )
            tied = []
            for row, r in enumerate(pending):
                row_scores = scores[row]
                if depth < n_docs and len(row_scores) > k and 0 < row_scores[k - 1] == row_scores[-1]:
                    tied.append(r)
                    continue
                keep = row_scores > 0
                found = dict(
                    zip(ids[docs[row][keep]].tolist(), row_scores[keep].astype(float).tolist(), strict=True)
                )
                run[qids[active[r]]] = top_k({"q": found}, k)["q"]
            pending, depth, first = tied, min(2 * depth, n_docs), False
        return run


def _named(source: str | None) -> str:
    return f" {source}" if source else ""


def _tokenize(
    texts: list[str], params: BM25Params, *, progress: bool, return_ids: bool
) -> Tokenized | list[list[str]]:
    import Stemmer

    bm25s = _bm25s()
    stemmer = Stemmer.Stemmer(LANGUAGES[params.language][0]) if params.stemming else None
    stopwords: str | list[str] = LANGUAGES[params.language][1] if params.stopwords else []
    return bm25s.tokenize(
        texts,
        lower=True,
        token_pattern=TOKEN_PATTERN,
        stopwords=stopwords,
        stemmer=stemmer,
        return_ids=return_ids,
        show_progress=progress,
    )


def _cache_key(fingerprint: str, params: BM25Params) -> str:
    bm25s = _bm25s()
    payload = json.dumps({"corpus": fingerprint, "params": asdict(params), "bm25s": bm25s.__version__,
                          "format": _INDEX_FORMAT, "tokens": TOKEN_PATTERN}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


def get_index(
    corpus: Corpus,
    params: BM25Params | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    source: str | None = None,
) -> BM25Index:
    """The BM25 index of ``corpus``: loaded from ``cache_dir`` when one with the same corpus
    content and parameters exists, otherwise built and saved there. ``source`` names the corpus
    (its file or folder) in errors.

    >>> index = get_index(corpus, BM25Params(k1=0.9, b=0.4), cache_dir="cache/bm25")  # doctest: +SKIP
    >>> index.from_cache  # doctest: +SKIP
    True
    """
    params = params or BM25Params()
    if not corpus:
        raise DataError(f"cannot build a BM25 index over an empty corpus{_named(source)}")
    fingerprint = corpus_fingerprint(corpus)
    folder = Path(cache_dir) if cache_dir is not None else default_index_cache()
    path = folder / f"bm25-{_cache_key(fingerprint, params)}"
    if (path / _META).is_file():
        try:
            index = BM25Index.load(path)
        except DataError as exc:
            logger.warning("rebuilding the BM25 index: %s", exc)
        else:
            if index.fingerprint == fingerprint and len(index.doc_ids) == len(corpus):
                index.from_cache = True
                logger.info("BM25 index loaded from %s", path)
                return index
            logger.warning("BM25 index at %s does not match the corpus; rebuilding", path)
    index = BM25Index.build(corpus, params, progress=progress, source=source)
    index.save(path, overwrite=True)
    logger.info("BM25 index saved to %s", path)
    return index


def bm25_search(
    corpus: Corpus,
    queries: Queries,
    k: int = 100,
    language: str = "english",
    k1: float = 1.5,
    b: float = 0.75,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    variant: str = "lucene",
    progress: bool = True,
    source: str | None = None,
) -> Run:
    """BM25 top-``k`` per query over ``corpus``, with the index cached in ``cache_dir``
    (default ``~/.cache/taskrank/bm25``). ``source`` names the corpus in errors.

    >>> run = bm25_search(ds.corpus, ds.queries, k=100, language="english")  # doctest: +SKIP
    """
    params = BM25Params(language=language, k1=k1, b=b, variant=variant)
    index = get_index(corpus, params, cache_dir=cache_dir, progress=progress, source=source)
    return index.search(queries, k=k, progress=progress)


def bm25_params(language: str = "english", k1: float = 1.5, b: float = 0.75, variant: str = "lucene") -> dict:
    """The record of a BM25 configuration (variant, k1, b, stemmer, stop words, implementation).

    >>> bm25_params("de", k1=0.9, b=0.4)["stemmer"]
    'snowball-german'
    """
    return BM25Params(language=language, k1=k1, b=b, variant=variant).to_dict()


@dataclass(frozen=True)
class Retrieval:
    """What :func:`retrieve` found: the run, and what made it (written next to the run)."""

    run: Run
    params: BM25Params
    k: int
    source: dict[str, str | None]
    documents: int
    queries: int
    seconds: float
    index_path: Path | None
    index_from_cache: bool

    def record(self) -> dict[str, Any]:
        """The run's metadata: BM25 parameters, k, the source, counts and the index used."""
        return {
            "bm25": self.params.to_dict(),
            "k": self.k,
            "source": self.source,
            "documents": self.documents,
            "queries": self.queries,
            "queries_without_results": sum(1 for docs in self.run.values() if not docs),
            "index": str(self.index_path) if self.index_path else None,
            "index_from_cache": self.index_from_cache,
        }

    def write(self, out: str | os.PathLike[str], *, tag: str = "bm25") -> None:
        """Write the run to ``out`` (TREC format) and :meth:`record` to ``out`` + ``.json``, atomically."""
        from .atomic import write_json
        from .data import write_run

        path = Path(out)
        write_run(self.run, path, tag=tag)
        write_json(path.with_name(path.name + ".json"), self.record())


def retrieve(
    *,
    dataset: str | os.PathLike[str] | None = None,
    split: str = "test",
    corpus: str | os.PathLike[str] | None = None,
    queries: str | os.PathLike[str] | None = None,
    qrels: str | os.PathLike[str] | None = None,
    k: int = 100,
    params: BM25Params | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    index_cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Retrieval:
    """BM25 top-``k`` for every judged query of a BEIR dataset, or of a corpus and queries files.

    Args:
        dataset: a BEIR folder or name (``scifact``…), downloaded into ``cache_dir`` if needed;
            its ``split`` gives the queries. Give either this or ``corpus`` and ``queries``.
        corpus, queries: a JSONL corpus and a queries file (JSONL, TSV or TREC topics); with
            ``qrels``, only the queries it judges are searched.
        k: documents per query.
        params: the BM25 parameters (default :class:`BM25Params`).
        index_cache: where the index is cached (default :func:`default_index_cache`).

    Returns:
        a :class:`Retrieval`; ``.write(path)`` writes the run and its metadata.

    Example::

        found = retrieve(dataset="scifact", k=100, params=BM25Params(k1=0.9, b=0.4))
        found.write("runs/bm25.trec")
    """
    params = params or BM25Params()
    if dataset is not None:
        if corpus is not None or queries is not None:
            raise ConfigError(
                "give either a dataset (--dataset) or corpus and queries (--corpus/--queries), not both"
            )
        data = load_beir(dataset, split=split, cache_dir=cache_dir, progress=progress)
        docs, topics = data.corpus, data.queries
        source: dict[str, str | None] = {"dataset": str(dataset), "split": split}
        corpus_name = str(data.path or dataset)
    elif corpus is not None and queries is not None:
        docs, topics = load_corpus(corpus), load_queries(queries)
        if qrels is not None:
            topics, _, _ = restrict_to_judged(topics, read_qrels(qrels), docs, source=str(qrels))
        source = {"corpus": str(corpus), "queries": str(queries), "qrels": str(qrels) if qrels else None}
        corpus_name = str(corpus)
    else:
        raise ConfigError("give a dataset (--dataset), or both corpus and queries (--corpus and --queries)")
    start = time.perf_counter()
    index = get_index(docs, params, cache_dir=index_cache, progress=progress, source=corpus_name)
    run = index.search(topics, k=k, progress=progress)
    seconds = time.perf_counter() - start
    return Retrieval(run, params, k, source, len(docs), len(topics), seconds, index.path, index.from_cache)
