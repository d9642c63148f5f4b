"""taskrank.evaluation: hand-computed metrics, agreement with pytrec_eval, fusion, significance."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from taskrank.errors import ConfigError, DataError
from taskrank.evaluation import (
    compare,
    display_metric,
    evaluate,
    fuse,
    min_max,
    paired_test,
    parse_metric,
    rrf,
    tune_fusion,
    weight_grid,
    weighted_sum,
)

ALL = ["ndcg@10", "ndcg@3", "p@10", "recall@100", "map@100", "mrr@10"]

# q1: d3 0.9, d1 0.8, then d9 and d2 tie at 0.7 -> trec_eval puts d9 first (doc id descending), d4 0.1
HAND_RUN = {
    "q1": {"d3": 0.9, "d1": 0.8, "d2": 0.7, "d9": 0.7, "d4": 0.1},
    "q3": {"d1": 1.0},  # no judgments: excluded
}
HAND_QRELS = {"q1": {"d1": 2, "d2": 1, "d5": 1, "d9": 0}, "q2": {"d7": 1}}  # q2 judged, nothing retrieved


def test_metrics_on_a_hand_built_case() -> None:
    ev = evaluate(HAND_RUN, HAND_QRELS, ALL)
    q1 = {m: ev.per_query[m]["q1"] for m in ALL}
    # ranking d3, d1, d9, d2, d4; relevant: d1 (2) at rank 2, d2 (1) at rank 4; d5 (1) never retrieved
    dcg10 = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert q1["ndcg@10"] == pytest.approx(dcg10 / idcg, abs=1e-9)
    assert q1["ndcg@3"] == pytest.approx((2 / math.log2(3)) / idcg, abs=1e-9)
    assert q1["p@10"] == pytest.approx(2 / 10)  # divides by 10 although only 5 were retrieved
    assert q1["recall@100"] == pytest.approx(2 / 3)
    assert q1["map@100"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert q1["mrr@10"] == pytest.approx(1 / 2)
    # q2: judged but nothing retrieved -> 0; q3: no judgments -> excluded
    assert ev.queries == ["q1", "q2"]
    assert all(ev.per_query[m]["q2"] == 0.0 for m in ALL)
    assert ev.excluded == ["q3"] and ev.empty == ["q2"]
    assert ev.mean["ndcg@10"] == pytest.approx(dcg10 / idcg / 2)


def test_ties_follow_trec_eval_doc_id_descending() -> None:
    # if d2 came before d9, d2 would sit at rank 3 and nDCG@3 would be larger
    ev = evaluate({"q1": {"d2": 1.0, "d9": 1.0}}, {"q1": {"d2": 1}}, ["ndcg@3", "mrr@10"])
    assert ev.per_query["mrr@10"]["q1"] == pytest.approx(1 / 2)
    assert ev.per_query["ndcg@3"]["q1"] == pytest.approx(1 / math.log2(3))


def test_negative_labels_count_as_not_relevant() -> None:
    run = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}}
    with_negative = evaluate(run, {"q1": {"a": -1, "c": 1}}, ALL)
    with_zero = evaluate(run, {"q1": {"a": 0, "c": 1}}, ALL)
    assert with_negative.mean == with_zero.mean
    assert with_negative.mean["mrr@10"] == pytest.approx(1 / 3)


def test_mrr_cutoff_and_uncut_precision_recall_by_hand() -> None:
    # ranking a, b, c, d; relevant: c (rank 3) and e (never retrieved)
    run = {"q1": {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}}
    ev = evaluate(run, {"q1": {"c": 1, "e": 2, "a": 0}}, ["mrr@3", "mrr@2", "mrr", "p", "recall", "map"])
    assert ev.mean["mrr@3"] == pytest.approx(1 / 3)  # the first relevant document at rank k counts
    assert ev.mean["mrr@2"] == 0.0  # below the cutoff: 0 (trec_eval has no cut reciprocal rank)
    assert ev.mean["mrr"] == pytest.approx(1 / 3)
    assert ev.mean["p"] == pytest.approx(1 / 4)  # over every retrieved document
    assert ev.mean["recall"] == pytest.approx(1 / 2)
    assert ev.mean["map"] == pytest.approx((1 / 3) / 2)


def _random_case(rng: random.Random, queries: int = 120) -> tuple[dict, dict]:
    run: dict[str, dict[str, float]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for i in range(queries):
        qid = f"q{i}"
        depth = rng.choice([0, 3, 15, 60, 150])
        if depth:  # coarse scores make many ties
            run[qid] = {f"d{j}": float(rng.randint(0, 6)) / 2 for j in rng.sample(range(400), depth)}
        pool = rng.sample(range(400), rng.randint(1, 25))
        qrels[qid] = {f"d{j}": rng.choice([0, 0, 1, 1, 2, 3]) for j in pool}
    run["unjudged"] = {"d1": 1.0}
    return run, qrels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agreement_with_pytrec_eval(seed: int) -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    run, qrels = _random_case(random.Random(seed))
    ours = evaluate(run, qrels, ALL)
    measures = {"ndcg_cut.3,10", "P.10", "recall.100", "map_cut.100", "recip_rank"}
    theirs = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    names = {"ndcg@10": "ndcg_cut_10", "ndcg@3": "ndcg_cut_3", "p@10": "P_10", "recall@100": "recall_100",
             "map@100": "map_cut_100"}  # fmt: skip
    checked = 0
    for qid in qrels:
        reference = theirs.get(qid, {})  # pytrec_eval omits queries without retrieved documents: 0
        for ours_name, their_name in names.items():
            assert ours.per_query[ours_name][qid] == pytest.approx(reference.get(their_name, 0.0), abs=1e-6)
            checked += 1
        rr = reference.get("recip_rank", 0.0)
        assert ours.per_query["mrr@10"][qid] == pytest.approx(rr if rr >= 1 / 10 else 0.0, abs=1e-6)
    assert checked == 5 * len(qrels)
    assert ours.excluded == ["unjudged"]


def test_agreement_with_pytrec_eval_other_cutoffs_and_uncut() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    run, qrels = _random_case(random.Random(7))
    names = {"map": "map", "ndcg": "ndcg", "mrr": "recip_rank", "p@5": "P_5", "recall@10": "recall_10",
             "ndcg@20": "ndcg_cut_20", "map@10": "map_cut_10"}  # fmt: skip
    ours = evaluate(run, qrels, list(names))
    measures = {"map", "ndcg", "recip_rank", "P.5", "recall.10", "ndcg_cut.20", "map_cut.10"}
    theirs = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    for qid in qrels:
        for ours_name, their_name in names.items():
            expected = theirs.get(qid, {}).get(their_name, 0.0)
            assert ours.per_query[ours_name][qid] == pytest.approx(expected, abs=1e-6), (qid, ours_name)


def test_metric_names_and_bad_ones() -> None:
    assert parse_metric("nDCG@10") == ("ndcg", 10)
    assert parse_metric("P@10") == ("p", 10)
    assert parse_metric("R@100") == ("recall", 100)
    assert display_metric("map@100") == "MAP@100"
    with pytest.raises(
        ConfigError, match=r"unknown metric 'bleu@4'; valid: ndcg@k, p@k, recall@k, map@k, mrr@k"
    ):
        evaluate(HAND_RUN, HAND_QRELS, ["bleu@4"])
    with pytest.raises(ConfigError, match=r"cutoff must be >= 1"):
        parse_metric("ndcg@0")
    with pytest.raises(DataError, match=r"qrels hold no judgments"):
        evaluate(HAND_RUN, {}, ["ndcg@10"])
    with pytest.raises(DataError, match=r"query 'q1' document 'd' is not finite"):
        evaluate({"q1": {"d": float("nan")}}, {"q1": {"d": 1}}, ["ndcg@10"])


def test_evaluation_reports_the_counting_rules() -> None:
    ev = evaluate(HAND_RUN, HAND_QRELS, ["ndcg@10"])
    text = ev.to_markdown("bm25")
    assert "Queries without relevance judgments are excluded" in text and "1 run queries without" in text
    assert "A judged query with no retrieved documents counts as 0" in text and "(1 such queries.)" in text
    assert json.loads(json.dumps(ev.to_dict()))["empty_queries"] == ["q2"]


# ---------------------------------------------------------------- fusion


def test_min_max_and_weighted_sum_by_hand() -> None:
    assert min_max({"a": 10.0, "b": 20.0, "c": 30.0}) == {"a": 0.0, "b": 0.5, "c": 1.0}
    assert min_max({"a": 5.0, "b": 5.0}) == {"a": 0.0, "b": 0.0}
    first = {"q": {"a": 10.0, "b": 20.0, "c": 30.0}}
    second = {"q": {"a": 0.9, "b": 0.5, "d": 0.1}}
    fused = fuse(first, second, (0.4, 0.6))["q"]
    # normalised: first a 0, b .5, c 1; second a 1, b .5, d 0; a missing document gets 0
    assert fused == pytest.approx({"a": 0.6, "b": 0.5, "c": 0.4, "d": 0.0})
    assert fuse({"q": {"a": 1.0}, "only_first": {"x": 2.0, "y": 1.0}}, {"q": {"a": 1.0}})["only_first"] == {
        "x": 0.5,
        "y": 0.0,
    }


def test_fuse_agrees_with_ranx_wsum() -> None:
    ranx = pytest.importorskip("ranx")
    rng = random.Random(3)
    first = {f"q{i}": {f"d{j}": rng.random() * 20 for j in rng.sample(range(50), 20)} for i in range(25)}
    second = {q: {d: rng.gauss(0, 3) for d in list(docs)[:15]} | {"extra": 1.0} for q, docs in first.items()}
    ours = fuse(first, second, (0.3, 0.7))
    theirs = ranx.fuse([ranx.Run(first), ranx.Run(second)], norm="min-max", method="wsum",
                       params={"weights": (0.3, 0.7)}).to_dict()  # fmt: skip
    assert set(ours) == set(theirs)
    for qid in ours:
        assert ours[qid] == pytest.approx(dict(theirs[qid]), abs=1e-9)


def test_rrf_by_hand_with_trec_tie_order() -> None:
    first = {"q": {"a": 10.0, "b": 20.0, "c": 30.0}}
    second = {"q": {"a": 0.9, "b": 0.5, "d": 0.1}}
    fused = rrf([first, second], k=60)["q"]
    assert fused == pytest.approx({"a": 1 / 63 + 1 / 61, "b": 2 / 62, "c": 1 / 61, "d": 1 / 63})
    tied = rrf([{"q": {"x": 1.0, "y": 1.0}}], k=0)["q"]
    assert tied == {"y": 1.0, "x": 0.5}  # y ranks first: doc id descending
    with pytest.raises(ConfigError, match=r"rrf k must be >= 0"):
        rrf([first], k=-1)


def test_bad_fusion_weights() -> None:
    run = {"q": {"a": 1.0}}
    with pytest.raises(ConfigError, match=r"expected 2 fusion weights \(one per run\), got 3"):
        fuse(run, run, (0.2, 0.3, 0.5))
    with pytest.raises(ConfigError, match=r"finite and >= 0"):
        fuse(run, run, (-0.5, 1.5))
    with pytest.raises(ConfigError, match=r"must not all be 0"):
        weighted_sum([run, run], (0, 0))


def test_weight_grid() -> None:
    grid = weight_grid(0.1)
    assert len(grid) == 11 and grid[0] == (0.0, 1.0) and grid[-1] == (1.0, 0.0) and (0.7, 0.3) in grid
    assert weight_grid(0.25) == [(0.0, 1.0), (0.25, 0.75), (0.5, 0.5), (0.75, 0.25), (1.0, 0.0)]
    with pytest.raises(ConfigError, match=r"divide 1 evenly"):
        weight_grid(0.3)
    with pytest.raises(ConfigError, match=r"grid step must be in \(0, 1\]"):
        weight_grid(0)


def test_tune_fusion_finds_the_first_winning_weight() -> None:
    # fused: a = w0, z = 1 - w0, m = 0.5 w0 + 0.4 (1 - w0); a ranks first only when w0 > 0.5
    # (at w0 = 0.5 a and z tie and z, the larger doc id, goes first)
    first = {"q": {"a": 1.0, "z": 0.0, "m": 0.5}}
    second = {"q": {"a": 0.0, "z": 1.0, "m": 0.4}}
    weights, value = tune_fusion(first, second, {"q": {"a": 1}}, metric="mrr@10", step=0.1)
    assert weights == (0.6, 0.4)
    assert value == 1.0
    weights, value = tune_fusion(first, second, {"q": {"z": 1}}, metric="mrr@10", step=0.5)
    assert weights == (0.0, 1.0) and value == 1.0


# ---------------------------------------------------------------- significance


def test_fisher_exact_p_values_by_hand() -> None:
    # 4 queries, all 16 sign flips enumerated: only all-plus and all-minus reach |mean| = 1
    assert paired_test([1, 1, 1, 1], [0, 0, 0, 0], "fisher") == pytest.approx(2 / 16)
    # differences 1, -1, 1, -1: every flip is at least as extreme as mean 0
    assert paired_test([1, 0, 1, 0], [0, 1, 0, 1], "fisher") == pytest.approx(1.0)
    # differences 3, 1, 1: |mean| >= 5/3 only with all signs equal -> 2 of 8
    assert paired_test([3, 1, 1], [0, 0, 0], "fisher") == pytest.approx(2 / 8)


def test_student_t_by_hand() -> None:
    from scipy import stats

    diffs = np.array([1.0, 2.0, 3.0, 4.0])
    t = 2.5 / (math.sqrt(5 / 3) / 2)  # mean 2.5, sample sd sqrt(5/3), n = 4
    expected = 2 * stats.t.sf(t, df=3)
    assert paired_test(diffs, np.zeros(4), "student") == pytest.approx(expected)
    assert paired_test([0.5, 0.5], [0.5, 0.5], "student") == 1.0
    assert paired_test([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], "student") == 0.0  # constant non-zero difference


def test_fisher_is_seeded() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(40), rng.random(40)
    first = paired_test(a, b, "fisher", seed=7)
    assert paired_test(a, b, "fisher", seed=7) == first
    assert any(paired_test(a, b, "fisher", seed=s) != first for s in (8, 9, 10))


def _systems(n_queries: int = 30) -> tuple[dict, dict]:
    rng = random.Random(5)
    qrels = {f"q{i}": {"good": 1} for i in range(n_queries)}
    runs = {
        # bm25 puts the relevant document 3rd, strong first, noisy somewhere in between
        "bm25": {q: {"x": 3.0, "y": 2.0, "good": 1.0} for q in qrels},
        "strong": {q: {"good": 3.0, "x": 2.0, "y": 1.0} for q in qrels},
        "noisy": {q: {"good": rng.choice([3.0, 1.0]), "x": 2.0, "y": 0.5} for q in qrels},
    }
    return runs, qrels


def test_compare_marks_significant_wins_with_bonferroni() -> None:
    runs, qrels = _systems()
    table = compare(runs, qrels, ["mrr@10", "p@10"], baselines=["bm25"], test="student", p_value=0.01)
    assert table.num_comparisons == 2  # strong vs bm25, noisy vs bm25
    assert table.beats("strong", "mrr@10") == ["bm25"]
    assert table.beats("bm25", "mrr@10") == []
    assert table.beats("strong", "p@10") == []  # P@10 identical: p = 1
    for t in table.tests:
        assert t.p_corrected == pytest.approx(min(1.0, 2 * t.p_value))
        assert t.significant == (t.p_corrected < 0.01)
    pair = next(t for t in table.tests if t.metric == "p@10" and t.system == "strong")
    assert pair.p_value == 1.0 and pair.winner is None


def test_bonferroni_changes_the_decision() -> None:
    runs, qrels = _systems()
    raw = compare(runs, qrels, ["mrr@10"], baselines=["bm25"], correction="none")
    noisy = next(t for t in raw.tests if t.system == "noisy")
    threshold = noisy.p_value * 1.5  # between p and the corrected 2p
    assert compare(runs, qrels, ["mrr@10"], baselines=["bm25"], correction="none", p_value=threshold).beats(
        "noisy", "mrr@10"
    ) == ["bm25"]
    assert (
        compare(runs, qrels, ["mrr@10"], baselines=["bm25"], p_value=threshold).beats("noisy", "mrr@10") == []
    )


def test_all_pairs_and_fisher() -> None:
    runs, qrels = _systems()
    table = compare(runs, qrels, ["mrr@10"], test="fisher", seed=3)
    assert table.num_comparisons == 3
    assert set(table.beats("strong", "mrr@10")) == {"bm25", "noisy"}
    again = compare(runs, qrels, ["mrr@10"], test="fisher", seed=3)
    assert [t.p_value for t in again.tests] == [t.p_value for t in table.tests]


def test_comparison_renders_markdown_latex_json() -> None:
    runs, qrels = _systems()
    runs["bm25_x"] = runs.pop("noisy")  # an underscore must be escaped in LaTeX
    table = compare(runs, qrels, ["mrr@10", "p@10"], baselines=["bm25"])
    md = table.to_markdown()
    assert "| | system | MRR@10 | P@10 |" in md
    assert "| b | strong | **1.0000**<sup>a</sup> |" in md  # best in bold, beats (a) bm25
    assert "p < 0.01 after Bonferroni correction over 2 comparison(s)" in md
    assert "Queries without relevance judgments are excluded" in md
    assert "counts as 0 for every metric" in md
    tex = table.to_latex()
    assert r"\textbf{1.0000}$^{a}$" in tex and r"bm25\_x" in tex and r"p $<$ 0.01" in tex
    assert tex.count(r"\\") >= 4 and r"\begin{tabular}{llrr}" in tex
    data = json.loads(json.dumps(table.to_dict()))
    assert data["beats"]["strong"]["mrr@10"] == ["bm25"]
    assert data["num_comparisons"] == 2 and data["test"] == "student"
    assert {t["system"] for t in data["tests"]} == {"strong", "bm25_x"}


def test_baselines_are_tested_against_each_other() -> None:
    runs, qrels = _systems()
    table = compare(runs, qrels, ["mrr@10"], baselines=list(runs))
    # each pair of baselines once, the later-listed one as the system: 3 tests, not 0 and not 6
    assert [(t.system, t.baseline) for t in table.tests] == [
        ("strong", "bm25"),
        ("noisy", "bm25"),
        ("noisy", "strong"),
    ]
    assert table.num_comparisons == 3
    assert table.beats("strong", "mrr@10") == ["bm25", "noisy"]
    assert "<sup>ac</sup>" in table.to_markdown()
    single = compare({"bm25": runs["bm25"]}, qrels, ["mrr@10"])
    assert (
        single.tests == []
        and single.num_comparisons == 0
        and single.mean("bm25", "mrr@10") == pytest.approx(1 / 3)
    )
    assert "No significance tests" in single.to_markdown() and "<sup>" not in single.to_markdown()


def test_no_difference_p_is_one_not_nan() -> None:
    from scipy import stats

    same = [0.1, 0.7, 0.3, 0.9]
    assert math.isnan(stats.ttest_rel(same, same).pvalue)  # why paired_test handles it itself
    assert paired_test(same, same, "student") == 1.0 and paired_test(same, same, "fisher") == 1.0
    # a constant difference of one rounding error (2^-50) is no difference, not an infinite t
    x = np.array([0.25, 0.5, 0.75])
    assert paired_test(x, x + 2.0**-50, "student") == 1.0
    with pytest.raises(DataError, match="finite"):
        paired_test([0.1, float("nan")], [0.2, 0.3])


def test_paired_tests_are_symmetric() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(25), rng.random(25)
    for test in ("student", "fisher"):
        assert paired_test(a, b, test, seed=5) == paired_test(b, a, test, seed=5)


def test_compare_bad_input() -> None:
    runs, qrels = _systems()
    with pytest.raises(ConfigError, match=r"unknown significance test 'wilcoxon'; valid: student, fisher"):
        compare(runs, qrels, test="wilcoxon")
    with pytest.raises(ConfigError, match=r"unknown correction 'holm'; valid: bonferroni, none"):
        compare(runs, qrels, correction="holm")
    with pytest.raises(ConfigError, match=r"unknown baseline\(s\) bm2; systems: bm25, strong, noisy"):
        compare(runs, qrels, baselines=["bm2"])
    with pytest.raises(ConfigError, match=r"p_value must be in \(0, 1\)"):
        compare(runs, qrels, p_value=1.5)


def test_the_metric_grammar_and_the_tests_are_the_vocabulary_s():
    """One list each: evaluation re-exports taskrank.vocabulary's, and trec_eval knows every family."""
    from taskrank import evaluation, vocabulary
    from taskrank.evaluation import metrics

    # the public mapping keeps its 0.1 shape: family -> (trec_eval measure, the vocabulary's label)
    assert evaluation.METRIC_FAMILIES is metrics.METRIC_FAMILIES
    assert {f: label for f, (_, label) in metrics.METRIC_FAMILIES.items()} == vocabulary.METRIC_FAMILIES
    assert metrics.METRIC_FAMILIES["ndcg"] == ("ndcg_cut", "nDCG")
    assert evaluation.parse_metric is metrics.parse_metric is vocabulary.parse_metric
    assert evaluation.TESTS is vocabulary.SIGNIFICANCE_TESTS
    assert evaluation.CORRECTIONS is vocabulary.CORRECTIONS
    assert set(metrics._CUT) == set(metrics._UNCUT) == set(vocabulary.METRIC_FAMILIES)
    assert [evaluation.display_metric(f"{family}@10") for family in vocabulary.METRIC_FAMILIES] == [
        "nDCG@10", "P@10", "R@10", "MAP@10", "MRR@10"
    ]  # fmt: skip
