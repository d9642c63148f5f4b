"""One top-k cut, in trec_eval's order (issue 12, item 9): a tie that falls at the cutoff lets
the same documents through the re-ranker's candidates, the fused cut, ``taskrank fuse --depth``,
the experiment runner and the written run.

trec_eval orders a query's documents by score descending, then by docno descending
(``comp_sim_docno`` in ``form_res_rels.c``: ``strcmp(docno2, docno1)``), so for the scores below
the hand-derived order is d5 (3.0), then the 2.0 tie as strings descending: d4 > d3 > d20 > d2,
then d1 (1.0).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import taskrank.data
from _cli import run_cli
from _experiment_fixtures import config_dict, write_tiny_beir
from taskrank.config import parse_config
from taskrank.data import ranked, read_qrels, read_run, top_k, write_run
from taskrank.errors import ConfigError
from taskrank.experiment import run_experiment
from taskrank.rerankers.base import select_candidates

SCORES = {"d1": 1.0, "d2": 2.0, "d20": 2.0, "d3": 2.0, "d4": 2.0, "d5": 3.0}
TREC_ORDER = ["d5", "d4", "d3", "d20", "d2", "d1"]


def test_ranked_and_top_k_follow_trec_eval_order() -> None:
    assert [doc for doc, _ in ranked(SCORES)] == TREC_ORDER
    cut = top_k({"q": SCORES, "r": {"d9": 1.0}}, 3)
    assert list(cut["q"]) == TREC_ORDER[:3] and cut["q"]["d3"] == 2.0  # the tie at the cutoff: d4, d3 kept
    assert cut["r"] == {"d9": 1.0}
    assert list(top_k({"q": SCORES}, None)["q"]) == TREC_ORDER  # no cutoff: all, in order
    with pytest.raises(ConfigError, match="top-k cutoff must be an integer >= 1, got 0"):
        top_k({"q": SCORES}, 0)


def test_the_order_is_trec_eval_s() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    # P@1 and the reciprocal rank of each tied document say where trec_eval ranks it
    for position, doc in enumerate(TREC_ORDER, start=1):
        measures = pytrec_eval.RelevanceEvaluator({"q": {doc: 1}}, {"recip_rank"}).evaluate({"q": SCORES})
        assert measures["q"]["recip_rank"] == pytest.approx(1 / position), doc


def test_there_is_one_top_k_function() -> None:
    import taskrank.cli.evaluation as cli_evaluation
    import taskrank.experiment.steps as steps
    from taskrank.data.formats import top_k as the_top_k  # where it lives

    assert taskrank.data.top_k is the_top_k
    assert steps.top_k is the_top_k  # the experiment's steps cut with it (imported, not exported)
    assert "top_k" not in steps.__all__
    assert not hasattr(cli_evaluation, "_cut")


def test_reranked_fused_and_written_sets_agree_at_a_tied_cutoff(tmp_path: Path) -> None:
    from taskrank.evaluation import fuse

    corpus = {doc: {"title": "", "text": f"text of {doc}"} for doc in SCORES}
    pairs, _ = select_candidates({"q": SCORES}, corpus, {"q": "a query"}, top_k=3)
    reranked = {doc for _, doc in pairs}
    assert reranked == set(TREC_ORDER[:3])
    model_run = {"q": {doc: float(i) for i, doc in enumerate(sorted(reranked))}}
    fused = fuse(top_k({"q": SCORES}, 3), model_run, (0.5, 0.5))
    assert set(fused["q"]) == reranked  # no document enters on its first-stage score alone
    write_run({"q": SCORES}, tmp_path / "run.trec")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert [line.split()[2] for line in lines] == TREC_ORDER
    assert [int(line.split()[3]) for line in lines] == list(range(1, 7))


def test_fuse_depth_keeps_the_same_tied_documents(monkeypatch, capsys, tmp_path: Path) -> None:
    first, second, out = tmp_path / "bm25.trec", tmp_path / "model.trec", tmp_path / "fused.trec"
    write_run({"q": SCORES}, first)
    write_run({"q": {doc: 1.0 / (i + 1) for i, doc in enumerate(SCORES)}}, second)
    code, _, _ = run_cli(monkeypatch, capsys, "fuse", first, second, "--out", out, "--depth", "3", "--quiet")
    assert code == 0
    assert set(read_run(out)["q"]) == set(TREC_ORDER[:3]) | set(top_k(read_run(second), 3)["q"])


@pytest.mark.usefixtures("one_thread")
def test_experiment_reranks_and_fuses_the_same_tied_candidates(tmp_path: Path, tiny_words, t5_trio) -> None:
    """A first-stage run file with ties at both cutoffs: first_stage.k = 3 keeps d5, d4, d3 and
    scoring.top_k = 2 keeps d5, d4 (trec_eval's order); the fused run holds exactly those two."""
    data_dir = write_tiny_beir(tmp_path / "tiny", tiny_words)
    test_queries = set(read_qrels(data_dir / "qrels" / "test.tsv"))
    scores = {"d5": 3.0, "d4": 2.0, "d3": 2.0, "d2": 2.0, "d1": 1.0}
    write_run(dict.fromkeys(test_queries, scores), tmp_path / "first.trec")
    data = config_dict(data_dir, t5_trio, tmp_path / "out")
    data["dataset"].pop("dev")
    data["first_stage"] = {"kind": "run", "k": 3, "run": str(tmp_path / "first.trec")}
    data["scoring"]["top_k"] = 2
    data["systems"] = [{"name": "first", "type": "first-stage"}, {"name": "ranker", "type": "ranker"}]
    data["fusion"] = {"method": "fixed", "weights": [0.5, 0.5]}
    data["metrics"] = ["ndcg@2"]
    data["report"] = {"primary_metric": "ndcg@2", "plots": False}
    result = run_experiment(parse_config(data), progress=False)
    first = read_run(result.output / "runs" / "test" / "first.trec")
    fused = read_run(result.output / "runs" / "test" / "ranker.trec")
    assert set(first) == set(fused) == test_queries
    assert all(set(docs) == {"d5", "d4", "d3"} for docs in first.values())
    assert all(set(docs) == {"d5", "d4"} for docs in fused.values())
