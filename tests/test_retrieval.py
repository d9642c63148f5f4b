"""taskrank.retrieval: BM25 ranks exact matches first, languages, cached index, bad input."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from taskrank.errors import ConfigError, DataError
from taskrank.retrieval import BM25Index, BM25Params, bm25_search, corpus_fingerprint, get_index

CORPUS = {
    "d1": {"title": "Aspirin", "text": "aspirin reduces fever and headache in adults"},
    "d2": {"title": "Virus", "text": "the influenza virus infects cells of the lung"},
    "d3": {"title": "", "text": "football teams played a match in the city stadium"},
    "d4": {"title": "Vaccines", "text": "vaccines train the immune system against a virus"},
    "d5": {"title": "Rivers", "text": "the river flows from the mountain to the ocean"},
}


def test_exact_match_document_ranks_first(tmp_path: Path) -> None:
    queries = {q: CORPUS[q]["title"] + " " + CORPUS[q]["text"] for q in ("d2", "d3", "d5")}
    run = bm25_search(CORPUS, queries, k=3, cache_dir=tmp_path, progress=False)
    for qid, scores in run.items():
        assert max(scores, key=scores.get) == qid
        assert len(scores) <= 3


def test_stemming_and_stop_words(tmp_path: Path) -> None:
    run = bm25_search(
        CORPUS, {"q": "infecting viruses", "stop": "the of a"}, cache_dir=tmp_path, progress=False
    )
    assert set(run["q"]) == {"d2", "d4"}  # stems infect/virus; d2 matches both terms
    assert max(run["q"], key=run["q"].get) == "d2"
    assert run["stop"] == {}  # only stop words: nothing matches, the query is kept with no documents


def test_unmatched_query_and_k_larger_than_corpus(tmp_path: Path) -> None:
    run = bm25_search(
        CORPUS, {"none": "zebra xylophone", "virus": "virus"}, k=100, cache_dir=tmp_path, progress=False
    )
    assert run["none"] == {}
    assert set(run["virus"]) == {"d2", "d4"}  # zero-score documents are not returned


@pytest.mark.parametrize(
    ("language", "docs", "query", "expected"),
    [
        ("german", {"a": "die Häuser der Stadt sind alt", "b": "der Hund läuft schnell"}, "Haus", "a"),
        ("french", {"a": "les maisons de la ville", "b": "le chien court vite"}, "maison", "a"),
        ("spanish", {"a": "las casas de la ciudad", "b": "el perro corre rápido"}, "casa", "a"),
        ("english", {"a": "the houses of the city", "b": "the dog runs fast"}, "house", "a"),
    ],
)
def test_language_aware_stemming(
    tmp_path: Path, language: str, docs: dict, query: str, expected: str
) -> None:
    corpus = {k: {"title": "", "text": v} for k, v in docs.items()}
    run = bm25_search(corpus, {"q": query}, language=language, cache_dir=tmp_path, progress=False)
    assert list(run["q"]) == [expected]


@pytest.mark.parametrize(
    ("language", "stop_words"),
    [("en", "the and of"), ("de", "und die der"), ("fr", "les et des"), ("es", "los y de las")],
)
def test_stop_words_per_language(tmp_path: Path, language: str, stop_words: str) -> None:
    corpus = {"a": {"title": "", "text": f"{stop_words} zebra"}, "b": {"title": "", "text": "lion"}}
    run = bm25_search(corpus, {"stop": stop_words, "word": "zebra"}, language=language, cache_dir=tmp_path,
                      progress=False)  # fmt: skip
    assert run["stop"] == {}  # only stop words of that language: nothing matches
    assert list(run["word"]) == ["a"]


def test_stop_words_are_language_specific(tmp_path: Path) -> None:
    corpus = {"a": {"title": "", "text": "der die das und"}, "b": {"title": "", "text": "Katze"}}
    english = bm25_search(corpus, {"q": "und die"}, language="en", cache_dir=tmp_path, progress=False)
    assert list(english["q"]) == ["a"]  # German stop words are ordinary words in English
    kept = bm25_search(corpus, {"q": "und die"}, language="de", cache_dir=tmp_path, progress=False)
    assert kept["q"] == {}


def test_index_is_cached_and_reused(tmp_path: Path, caplog, monkeypatch) -> None:
    params = BM25Params(k1=0.9, b=0.4)
    first = get_index(CORPUS, params, cache_dir=tmp_path, progress=False)
    assert not first.from_cache and first.path is not None and first.path.parent == tmp_path

    def refuse(*args, **kwargs):
        raise AssertionError("the index was rebuilt instead of loaded")

    monkeypatch.setattr(BM25Index, "build", refuse)
    with caplog.at_level(logging.INFO, logger="taskrank.retrieval"):
        second = get_index(CORPUS, params, cache_dir=tmp_path, progress=False)
    assert second.from_cache and second.path == first.path
    assert "loaded from" in caplog.text
    queries = {"q": "virus cells"}
    assert second.search(queries, progress=False) == first.search(queries, progress=False)
    assert len(list(tmp_path.iterdir())) == 1


def test_cache_key_depends_on_corpus_and_parameters(tmp_path: Path) -> None:
    base = get_index(CORPUS, BM25Params(), cache_dir=tmp_path, progress=False)
    other_params = get_index(CORPUS, BM25Params(k1=1.2), cache_dir=tmp_path, progress=False)
    changed = dict(CORPUS, d5={"title": "Rivers", "text": "a different text"})
    other_corpus = get_index(changed, BM25Params(), cache_dir=tmp_path, progress=False)
    assert len({base.path, other_params.path, other_corpus.path}) == 3
    assert not other_corpus.from_cache
    assert corpus_fingerprint(CORPUS) != corpus_fingerprint(changed)


def test_corrupt_cached_index_is_rebuilt(tmp_path: Path, caplog) -> None:
    index = get_index(CORPUS, BM25Params(), cache_dir=tmp_path, progress=False)
    (index.path / "taskrank-bm25.json").write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="taskrank.retrieval"):
        again = get_index(CORPUS, BM25Params(), cache_dir=tmp_path, progress=False)
    assert not again.from_cache and "unreadable" in caplog.text
    assert again.search({"q": "virus"}, progress=False)["q"]


def test_parameters_are_recorded(tmp_path: Path) -> None:
    index = get_index(CORPUS, BM25Params(language="fr", k1=1.2, b=0.5), cache_dir=tmp_path, progress=False)
    record = BM25Index.load(index.path).params.to_dict()
    assert record["variant"] == "lucene" and record["k1"] == 1.2 and record["b"] == 0.5
    assert record["language"] == "french" and record["stemmer"] == "snowball-french"
    assert record["implementation"].startswith("bm25s ")


def test_bad_parameters() -> None:
    with pytest.raises(
        ConfigError, match=r"unsupported BM25 language 'klingon'; valid: .*english.*french.*german"
    ):
        BM25Params(language="klingon")
    with pytest.raises(ConfigError, match=r"unknown BM25 variant 'okapi'; valid: lucene, robertson"):
        BM25Params(variant="okapi")
    with pytest.raises(ConfigError, match=r"b must be in \[0, 1\]"):
        BM25Params(b=1.5)
    with pytest.raises(ConfigError, match=r"k1 must be >= 0"):
        BM25Params(k1=-1)


def test_empty_corpus_and_bad_k(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"empty corpus"):
        bm25_search({}, {"q": "x"}, cache_dir=tmp_path, progress=False)
    index = BM25Index.build(CORPUS, progress=False)
    with pytest.raises(ConfigError, match=r"k must be >= 1"):
        index.search({"q": "virus"}, k=0, progress=False)
    with pytest.raises(DataError, match=r"not a taskrank BM25 index"):
        BM25Index.load(tmp_path)


def test_stemming_and_stop_words_can_be_turned_off() -> None:
    plain = BM25Index.build(CORPUS, BM25Params(stemming=False, stopwords=False), progress=False)
    run = plain.search({"inflected": "viruses", "exact": "virus", "stop": "the"}, progress=False)
    assert run["inflected"] == {}  # no stemmer: viruses is not virus
    assert set(run["exact"]) == {"d2", "d4"}
    assert set(run["stop"]) == {"d2", "d4", "d5", "d3"}  # every document with "the"
    assert plain.params.to_dict()["stemmer"] is None


def test_top_k_never_goes_through_jax(monkeypatch) -> None:
    """bm25s would pick JAX whenever it is installed (and put it on the GPU): taskrank asks for numpy."""
    import bm25s.selection

    def refuse(*args, **kwargs):
        raise AssertionError("bm25s used its JAX top-k")

    monkeypatch.setattr(bm25s.selection, "JAX_IS_AVAILABLE", True)
    monkeypatch.setattr(bm25s.selection, "_topk_jax", refuse)
    index = BM25Index.build(CORPUS, progress=False)
    run = index.search({"q": "influenza virus"}, k=2, progress=False)
    assert max(run["q"], key=run["q"].get) == "d2"


def test_jax_is_told_not_to_reserve_the_gpu(monkeypatch) -> None:
    import sys
    import types

    from taskrank.retrieval import _bm25s

    var = "XLA_PYTHON_CLIENT_PREALLOCATE"
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.delenv(var, raising=False)
    _bm25s()
    assert os.environ[var] == "false"
    monkeypatch.setenv(var, "true")  # the user's own choice stands
    _bm25s()
    assert os.environ[var] == "true"
    monkeypatch.delenv(var)
    monkeypatch.setitem(sys.modules, "jax", types.ModuleType("jax"))  # JAX already set up: too late
    _bm25s()
    assert var not in os.environ


def test_a_tie_at_the_cutoff_is_cut_in_trec_eval_order(tmp_path: Path) -> None:
    """Seven documents score the same for the query; BM25 keeps the k with the largest doc ids,
    as trec_eval ranks a tie (score descending, then doc id descending), however bm25s orders
    them internally, and at depths where the tie needs more than k + 1 documents fetched."""
    same = "coral reef bleaching"
    corpus = {f"t{i}": {"title": "", "text": same} for i in (3, 9, 1, 7, 5, 2, 8)}
    corpus |= {"best": {"title": "", "text": "coral reef bleaching coral reef"}, "x": {"text": "river"}}
    run = bm25_search(corpus, {"q": "coral"}, k=3, cache_dir=tmp_path, progress=False)
    assert list(run["q"]) == ["best", "t9", "t8"]
    run = bm25_search(corpus, {"q": "coral"}, k=1, cache_dir=tmp_path, progress=False)
    assert list(run["q"]) == ["best"]
    run = bm25_search(corpus, {"q": "coral"}, k=6, cache_dir=tmp_path, progress=False)
    assert list(run["q"]) == ["best", "t9", "t8", "t7", "t5", "t3"]
