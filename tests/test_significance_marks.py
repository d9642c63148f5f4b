"""Significance marks a reviewer can check: the family of tests, identical runs with identical
marks, baselines tested against each other, every p-value stored, and "no difference is
significant" said in words (issue 12, item 3)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from _experiment_fixtures import make_config, write_tiny_beir
from taskrank.evaluation import compare
from taskrank.evaluation.significance import comparison_pairs
from taskrank.experiment import run_experiment
from taskrank.experiment.results import significance_marks
from taskrank.report import render_markdown, results_latex, results_table

QUERIES = ["q0", "q1", "q2", "q3"]
QRELS = {q: {"good": 1} for q in QUERIES}


def ranked(rank_of_good: list[int]) -> dict[str, dict[str, float]]:
    """A run that puts the one relevant document at the given rank of each query (MRR = 1/rank)."""
    run = {}
    for qid, rank in zip(QUERIES, rank_of_good, strict=True):
        others = ["w", "x", "y", "z"]
        order = [*others[: rank - 1], "good", *others[rank - 1 :]]
        run[qid] = {doc: float(10 - i) for i, doc in enumerate(order)}
    return run


# bm25 finds the relevant document 2nd, 2nd, 3rd, 4th: MRR 1/2, 1/2, 1/3, 1/4
# ranker finds it 1st, 1st, 1st, 2nd: MRR 1, 1, 1, 1/2; "copy" is the very same run
# (a sweep that chose α = 0 is the ranker's run)
BM25 = ranked([2, 2, 3, 4])
RANKER = ranked([1, 1, 1, 2])
BM25_MRR = np.array([1 / 2, 1 / 2, 1 / 3, 1 / 4])
RANKER_MRR = np.array([1.0, 1.0, 1.0, 1 / 2])


def hand_built(test: str = "student", p_value: float = 0.05):
    runs = {"bm25": BM25, "ranker": RANKER, "copy": {q: dict(d) for q, d in RANKER.items()}}
    return compare(runs, QRELS, ["mrr@10"], baselines=["bm25", "ranker"], test=test, p_value=p_value)


def find(table, system: str, baseline: str):
    return next(t for t in table.tests if t.system == system and t.baseline == baseline)


def test_family_covers_baselines_once_each() -> None:
    assert comparison_pairs(["bm25", "ranker", "copy"], ["bm25", "ranker"]) == [
        ("ranker", "bm25"),
        ("copy", "bm25"),
        ("copy", "ranker"),
    ]
    # baselines named in another order: the later one is the system of their test
    assert comparison_pairs(["bm25", "ranker", "copy"], ["ranker", "bm25"]) == [
        ("bm25", "ranker"),
        ("copy", "ranker"),
        ("copy", "bm25"),
    ]
    assert comparison_pairs(["a", "b", "c"], []) == [("b", "a"), ("c", "a"), ("c", "b")]


def test_p_values_by_hand_and_bonferroni_over_the_whole_family() -> None:
    table = hand_built()
    assert table.num_comparisons == 3  # ranker–bm25, copy–bm25, copy–ranker
    # the reference: the paired t statistic written out, and scipy's ttest_rel on the same values
    diffs = RANKER_MRR - BM25_MRR  # 1/2, 1/2, 2/3, 1/4
    t = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(4))
    raw = 2 * stats.t.sf(t, df=3)
    assert raw == pytest.approx(stats.ttest_rel(RANKER_MRR, BM25_MRR).pvalue)
    assert raw == pytest.approx(0.011372801283809283)
    for system in ("ranker", "copy"):
        pair = find(table, system, "bm25")
        assert pair.p_value == pytest.approx(raw, rel=1e-12)
        assert pair.p_corrected == pytest.approx(3 * raw, rel=1e-12)  # 0.034 < 0.05
        assert pair.significant and pair.winner == system
        assert pair.difference == pytest.approx(diffs.mean())
    same = find(table, "copy", "ranker")
    assert (same.p_value, same.p_corrected, same.significant, same.winner) == (1.0, 1.0, False, None)


def test_identical_runs_get_identical_p_values_and_marks() -> None:
    table = hand_built()
    assert find(table, "copy", "bm25").p_value == find(table, "ranker", "bm25").p_value
    marks = significance_marks(table, ["bm25", "ranker", "copy"], ["bm25", "ranker"], ["mrr@10"])
    assert marks["ranker"] == marks["copy"] == {"mrr@10": {"better": ["bm25"], "worse": []}}
    # a baseline row carries its result against the other baseline
    assert marks["bm25"] == {"mrr@10": {"better": [], "worse": ["ranker"]}}
    results = {
        "metrics": ["mrr@10"],
        "baselines": ["bm25", "ranker"],
        "systems": [
            {"name": name, "type": "x", "mean": {"mrr@10": table.mean(name, "mrr@10")}}
            for name in ("bm25", "ranker", "copy")
        ],
        "significance": {"test": "student", "p_value": 0.05, "correction": "bonferroni", "marks": marks},
    }
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in results_table(results).splitlines()[2:]
    }
    assert rows["ranker (b)"] == rows["copy"] == "**0.875**ᵃ"
    assert rows["bm25 (a)"] == "0.396₋b"
    tex = results_latex(results)
    assert "ranker (b) & 0.875$^{a}$" in tex and "copy & 0.875$^{a}$" in tex and "0.396$_{-b}$" in tex
    # the comparison's own table (taskrank evaluate) marks both rows alike too
    md = table.to_markdown()
    assert "| b | ranker | **0.8750**<sup>a</sup> |" in md and "| c | copy | **0.8750**<sup>a</sup> |" in md


def test_identical_runs_identical_under_the_seeded_randomisation_test() -> None:
    rng = random.Random(1)
    queries = [f"q{i}" for i in range(20)]  # 2^20 sign flips: resampled, seeded
    qrels = {q: {"good": 1} for q in queries}
    bm25 = {q: {"x": 2.0, "good": 1.0} for q in queries}
    ranker = {q: {"good": rng.choice([3.0, 1.0]), "x": 2.0} for q in queries}
    runs = {"bm25": bm25, "ranker": ranker, "copy": {q: dict(d) for q, d in ranker.items()}}
    table = compare(runs, qrels, ["mrr@10"], baselines=["bm25", "ranker"], test="fisher", seed=11)
    assert find(table, "copy", "bm25").p_value == find(table, "ranker", "bm25").p_value
    assert find(table, "copy", "ranker").p_value == 1.0
    assert table.beats("copy", "mrr@10") == table.beats("ranker", "mrr@10")


def test_json_stores_raw_and_corrected_p_values() -> None:
    data = json.loads(json.dumps(hand_built().to_dict()))
    assert data["num_comparisons"] == 3 and "baselines against each other" in data["family"]
    assert len(data["tests"]) == 3
    for entry in data["tests"]:
        assert set(entry) >= {
            "system",
            "baseline",
            "metric",
            "p_value_raw",
            "p_value_corrected",
            "significant",
        }
        assert entry["p_value_corrected"] == pytest.approx(min(1.0, 3 * entry["p_value_raw"]))


def test_no_significant_difference_is_said_in_words() -> None:
    table = hand_built(p_value=0.01)  # 3 × 0.0114 = 0.034 is not below 0.01
    assert not any(t.significant for t in table.tests)
    md = table.to_markdown()
    assert "No difference is significant: paired Student's t-test" in md and "<sup>" not in md
    results = {
        "metrics": ["mrr@10"],
        "baselines": ["bm25", "ranker"],
        "systems": [{"name": "bm25", "type": "x", "mean": {"mrr@10": 0.4}}],
        "significance": {
            "test": "student",
            "p_value": 0.01,
            "correction": "bonferroni",
            "num_comparisons": 3,
            "family": table.family(),
            "tests": [t.to_dict() for t in table.tests],
            "marks": {},
        },
    }
    text = render_markdown(results)
    assert "No difference is significant (paired Student's t-test, two-sided, p < 0.01, bonferroni " in text
    assert "correction over 3 tests per metric" in text and "Superscripts mark" not in text
    results["significance"]["tests"][0]["significant"] = True
    assert "Superscripts mark a significant improvement" in render_markdown(results)


# --------------------------------------------------------------------------- through an experiment


@pytest.fixture(scope="module")
def identical_pair(tmp_path_factory, tiny_words, t5_trio, one_thread):
    """BM25, the ranker, and a sweep that can only choose α = 0: the ranker's run again."""
    data = write_tiny_beir(tmp_path_factory.mktemp("beir") / "tiny", tiny_words)
    config = make_config(
        data,
        t5_trio,
        tmp_path_factory.mktemp("run") / "out",
        systems=[
            {"name": "BM25", "type": "first-stage"},
            {"name": "ranker", "type": "ranker"},
            {"name": "TA dev-tuned α", "type": "sweep", "alphas": [0.0]},
        ],
        fusion={"method": "fixed"},
        significance={"p_value": 0.9},  # a loose level, so that the tiny run has marks to compare
    )
    return run_experiment(config, progress=False)


def test_experiment_stores_every_p_value_and_marks_identical_runs_alike(identical_pair) -> None:
    out: Path = identical_pair.output
    sig = json.loads((out / "results.json").read_text())["significance"]
    assert sig["baselines"] == ["BM25", "ranker"] and sig["num_comparisons"] == 3
    pairs = {(t["system"], t["baseline"], t["metric"]): t for t in sig["tests"]}
    expected = {("ranker", "BM25"), ("TA dev-tuned α", "BM25"), ("TA dev-tuned α", "ranker")}
    assert set(pairs) == {(s, b, m) for s, b in expected for m in ("ndcg@10", "p@10")}
    per_query = json.loads((out / "metrics" / "test.json").read_text())
    for (system, baseline, metric), entry in pairs.items():
        assert entry["p_value_corrected"] == pytest.approx(min(1.0, 3 * entry["p_value_raw"]))
        assert entry["significant"] == (entry["p_value_corrected"] < 0.9)
        a = per_query[system]["per_query"][metric]
        b = per_query[baseline]["per_query"][metric]
        if a == b:
            assert entry["p_value_raw"] == 1.0
        else:  # the reference: scipy on the stored per-query values
            reference = stats.ttest_rel([a[q] for q in sorted(a)], [b[q] for q in sorted(a)]).pvalue
            assert entry["p_value_raw"] == pytest.approx(reference)
    for metric in ("ndcg@10", "p@10"):
        same = pairs[("TA dev-tuned α", "ranker", metric)]
        assert same["p_value_raw"] == 1.0 and not same["significant"]
        assert (
            pairs[("TA dev-tuned α", "BM25", metric)]["p_value_raw"]
            == pairs[("ranker", "BM25", metric)]["p_value_raw"]
        )
    assert sig["marks"]["TA dev-tuned α"] == sig["marks"]["ranker"]
    report = (out / "report.md").read_text()
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("ranker (b)", "TA dev-tuned α"):
            rows[cells[0]] = cells[1:-1]  # the metric cells, marks included; not name and details
    assert len(rows) == 2 and rows["ranker (b)"] == rows["TA dev-tuned α"]
    if any(t["significant"] for t in sig["tests"]):
        assert "Superscripts mark a significant improvement" in report
    else:
        assert "No difference is significant" in report
    assert "Every p-value, raw and corrected, is in results.json" in report
