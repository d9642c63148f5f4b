"""Pseudo-queries cut out of the target corpus: a labelled task made from the documents alone.

Each sampled document gives one query and is its only relevant document:

* its **title**, when it has one of at least :data:`MIN_WORDS` words; the title is removed from
  the document (and a copy of it that opens the text, as in Cranfield), so the query is not
  found verbatim;
* otherwise **a sentence cut out of its text** (the inverse cloze task of Lee et al., ACL 2019):
  one sentence of at least :data:`MIN_WORDS` words, removed from the document.

The document is shown to the re-ranker without the cut text (:attr:`PseudoQueries.documents`),
so the task asks whether the model matches a query to the rest of its document, as a real query
to a relevant document, rather than finding the same words twice. Nothing here reads relevance
judgments: the one "judgment" per query is where the query was cut from.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: The fewest words a title or sentence needs to make a query, and the fewest the document
#: must keep once it is cut out.
MIN_WORDS = 4
#: A pseudo-query's id: the prefix, then the source document's id.
ID_PREFIX = "pseudo:"

#: Why a corpus gives no pseudo-query at all, for the error that says so.
NO_PSEUDO_QUERY = (
    f"no document yields a pseudo-query (one needs a title, or one of several sentences, of at "
    f"least {MIN_WORDS} words, and {MIN_WORDS} words of the document left once it is cut)"
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class PseudoQueries:
    """Pseudo-queries, the document each was cut from, and those documents without the cut text."""

    queries: dict[str, str]
    sources: dict[str, str]  # query id -> the id of the document it was cut from
    documents: dict[str, dict[str, str]]  # document id -> the document without the query's text
    seed: int
    counts: dict[str, int] = field(default_factory=dict)  # "title" / "sentence" -> queries made so

    def qrels(self) -> dict[str, dict[str, int]]:
        """The pseudo-judgments: each query's source document is relevant (grade 1)."""
        return {qid: {doc: 1} for qid, doc in self.sources.items()}

    def describe(self) -> str:
        """``200 pseudo-queries from the corpus (150 titles, 50 sentences; seed 0)``."""
        parts = ", ".join(f"{n} {kind}s" for kind, n in sorted(self.counts.items()) if n)
        return f"{len(self.queries)} pseudo-queries from the corpus ({parts}; seed {self.seed})"


def _words(text: str) -> int:
    return len(text.split())


def _strip_title(title: str, text: str) -> str:
    """``text`` without a leading copy of ``title`` (compared without case and outer spaces)."""
    stripped = text.lstrip()
    if title and stripped.lower().startswith(title.lower()):
        return stripped[len(title) :].lstrip(" .:-\n\t")
    return text


def cut_title(doc: Mapping[str, str]) -> tuple[str, dict[str, str]] | None:
    """The title as a query and the document without it, or None when it has no usable title."""
    title = (doc.get("title") or "").strip()
    if _words(title) < MIN_WORDS:
        return None
    rest = _strip_title(title, doc.get("text") or "")
    if _words(rest) < MIN_WORDS:
        return None
    return title, {"title": "", "text": rest}


def cut_sentence(doc: Mapping[str, str], rng: random.Random) -> tuple[str, dict[str, str]] | None:
    """A random sentence of the text as a query and the document without it (the inverse cloze
    task), or None when the text has no sentence long enough with enough left around it."""
    title = (doc.get("title") or "").strip()
    sentences = [s for s in _SENTENCE_END.split(_strip_title(title, doc.get("text") or "")) if s.strip()]
    usable = [i for i, s in enumerate(sentences) if _words(s) >= MIN_WORDS]
    rng.shuffle(usable)
    for i in usable:
        rest = " ".join(s for j, s in enumerate(sentences) if j != i)
        if _words(rest) >= MIN_WORDS:
            return sentences[i].strip(), {"title": "", "text": rest}
    return None


def make_pseudo_queries(corpus: Mapping[str, Mapping[str, str]], count: int, seed: int = 0) -> PseudoQueries:
    """Up to ``count`` pseudo-queries from documents drawn from ``corpus`` with ``seed``.

    Documents are drawn in a seeded order of their sorted ids, so the same corpus and seed give
    the same queries whatever order the corpus was read in. Documents that yield no query (too
    short, no sentence of :data:`MIN_WORDS` words) are passed over.

    >>> corpus = {"d1": {"title": "wing flutter at high speed", "text": "we measured the flutter of a wing"}}
    >>> make_pseudo_queries(corpus, 5).queries
    {'pseudo:d1': 'wing flutter at high speed'}
    """
    if count < 0:
        raise ValueError(f"pseudo-query count must be ≥ 0, got {count}")
    rng = random.Random(seed)
    order = sorted(corpus)
    rng.shuffle(order)
    out = PseudoQueries({}, {}, {}, seed, {"title": 0, "sentence": 0})
    for doc_id in order:
        if len(out.queries) >= count:
            break
        doc = corpus[doc_id]
        cut = cut_title(doc)
        kind = "title"
        if cut is None:
            cut, kind = cut_sentence(doc, rng), "sentence"
        if cut is None:
            continue
        query, rest = cut
        qid = f"{ID_PREFIX}{doc_id}"
        out.queries[qid] = query
        out.sources[qid] = doc_id
        out.documents[doc_id] = rest
        out.counts[kind] += 1
    return out


__all__ = [
    "ID_PREFIX",
    "MIN_WORDS",
    "NO_PSEUDO_QUERY",
    "PseudoQueries",
    "cut_sentence",
    "cut_title",
    "make_pseudo_queries",
]
