"""Real data: the Cranfield collection (tests/data/cranfield, see its README).

BM25 through taskrank, cut at its top 100 in trec_eval's order, and the metrics computed by
trec_eval's C code must give Pyserini's published figures on this collection, and the same values,
query by query, as ranx (the metric implementation taskrank used before, kept as a reference)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskrank.data import load_beir, top_k
from taskrank.evaluation import evaluate
from taskrank.retrieval import bm25_search

pytestmark = pytest.mark.slow

CRANFIELD = Path(__file__).parent / "data" / "cranfield"
METRICS = ["ndcg@10", "p@10", "map@100", "recall@100", "ndcg@3", "mrr@10"]


@pytest.fixture(scope="module")
def bm25_run(tmp_path_factory):
    ds = load_beir(CRANFIELD, "test", progress=False)
    run = bm25_search(
        ds.corpus, ds.queries, k=100, k1=0.9, b=0.4, cache_dir=tmp_path_factory.mktemp("idx"), progress=False
    )
    return ds, run


def test_bm25_on_cranfield_gives_pyserinis_figures(bm25_run):
    ds, run = bm25_run
    assert len(ds.queries) == 225 and len(ds.corpus) == 1400
    assert all(len(docs) <= 100 for docs in run.values())
    mean = evaluate(run, ds.qrels, METRICS).mean
    # Pyserini 0.21.0 (Lucene), the same parameters (tests/data/cranfield/README.md)
    assert mean["ndcg@10"] == pytest.approx(0.351, abs=0.001)
    assert mean["p@10"] == pytest.approx(0.223, abs=0.001)
    assert mean["map@100"] == pytest.approx(0.281, abs=0.001)
    assert mean["recall@100"] == pytest.approx(0.722, abs=0.005)  # tokenisers differ slightly


def test_metrics_equal_ranx_query_by_query_on_cranfield(bm25_run):
    ranx = pytest.importorskip("ranx")
    ds, run = bm25_run
    ours = evaluate(run, ds.qrels, METRICS)
    names = {m: "precision@" + m[2:] if m.startswith("p@") else m for m in METRICS}  # ranx spelling
    reference = ranx.Run(top_k(run, 100))
    ranx.evaluate(ranx.Qrels(ds.qrels), reference, list(names.values()), save_results_in_run=True)
    for metric, name in names.items():
        theirs = reference.scores[name]
        assert set(theirs) <= set(ours.per_query[metric])
        for qid, value in ours.per_query[metric].items():
            assert value == pytest.approx(theirs.get(qid, 0.0), abs=1e-12), (metric, qid)
