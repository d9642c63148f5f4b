"""Label-free α selection: each strategy on hand-built lists, the guard, the pseudo-queries, and
``select_on: label-free`` in an experiment (results.json, report, plot)."""

from __future__ import annotations

import builtins
import io
import json
import random
from pathlib import Path

import pytest

from _experiment_fixtures import config_dict, config_error
from taskrank.config import parse_config
from taskrank.experiment import plan_experiment, run_experiment
from taskrank.labelfree import (
    STRATEGIES,
    Lists,
    choose,
    label_free_choice,
    make_pseudo_queries,
    strategy,
)
from taskrank.vocabulary import LABEL_FREE_STRATEGIES

PEAKED = {"d1": 9.0, "d2": 1.0, "d3": 0.9, "d4": 1.1, "d5": 1.0, "d6": 0.8, "d7": 1.2}
FLAT = {"d1": 1.05, "d2": 1.0, "d3": 0.95, "d4": 1.0, "d5": 1.02, "d6": 0.98, "d7": 1.0}


def test_the_registry_is_the_vocabulary():
    assert tuple(STRATEGIES) == LABEL_FREE_STRATEGIES
    with pytest.raises(ValueError, match="valid: pseudo-queries, nqc, wig, entropy"):
        strategy("oracle")


@pytest.mark.parametrize("name", ["nqc", "wig", "entropy"])
def test_score_distribution_strategies_prefer_a_peaked_list_to_a_flat_one(name):
    queries = {"q": "wing flutter"}
    peaked = strategy(name).per_query(Lists({"q": PEAKED}, queries))["q"]
    flat = strategy(name).per_query(Lists({"q": FLAT}, queries))["q"]
    assert peaked > flat


def test_nqc_and_wig_values_by_hand():
    scores = {"a": 3.0, "b": 1.0, "c": 2.0}  # mean 2, std of all three sqrt(2/3)
    lists = Lists({"q": scores}, {"q": "one two three four"})
    assert strategy("nqc").per_query(lists)["q"] == pytest.approx((2 / 3) ** 0.5 / 2)
    # top five = all three here: WIG = (mean(top) - mean(all)) / sqrt(4) = 0
    assert strategy("wig").per_query(lists)["q"] == pytest.approx(0.0)


def test_entropy_is_minus_one_for_equal_scores_and_near_zero_for_one_clear_winner():
    lists = Lists({"flat": dict.fromkeys("abcd", 1.0), "sharp": {"a": 50.0, "b": 0.0, "c": 0.0}}, {})
    values = strategy("entropy").per_query(lists)
    assert values["flat"] == pytest.approx(-1.0)
    assert -1e-6 < values["sharp"] <= 0.0


def test_pseudo_queries_reward_the_source_document_ranked_first():
    sources = {"p1": "d1", "p2": "d2"}
    first = Lists({}, {}, {"p1": {"d1": 2.0, "d9": 1.0}, "p2": {"d2": 2.0, "d9": 1.0}}, sources)
    last = Lists({}, {}, {"p1": {"d1": 0.0, "d9": 1.0}, "p2": {"d2": 0.0, "d9": 1.0}}, sources)
    pq = strategy("pseudo-queries")
    assert pq.per_query(first) == {"p1": 1.0, "p2": 1.0}
    assert pq.per_query(last)["p1"] == pytest.approx(1 / 1.5849625007211562)  # rank 2: 1/log2(3)


def test_choose_applies_a_clearly_better_alpha():
    rng = random.Random(0)
    zero = {f"q{i}": rng.random() for i in range(30)}
    better = {q: v + 0.2 + 0.01 * rng.random() for q, v in zero.items()}
    outcome = choose([0.0, 0.5], [zero, better])
    assert outcome.alpha == 0.5 and outcome.p_value < 0.05


def test_the_guard_keeps_alpha_zero_when_the_gain_is_noise():
    rng = random.Random(1)
    zero = {f"q{i}": rng.random() for i in range(30)}
    noisy = {q: v + rng.uniform(-0.3, 0.32) for q, v in zero.items()}
    assert sum(noisy.values()) > sum(zero.values())  # the highest mean, but not significantly
    guarded = choose([0.0, 1.0], [zero, noisy])
    assert guarded.alpha == 0.0 and guarded.p_value >= 0.05
    assert "not applied" in guarded.reason
    assert choose([0.0, 1.0], [zero, noisy], guard=None).alpha == 1.0


def test_ties_go_to_alpha_zero_and_a_sweep_without_zero_takes_the_best():
    same = {"q1": 0.5, "q2": 0.4}
    assert choose([0.5, 0.0, 1.0], [same, same, same]).alpha == 0.0
    assert choose([0.5, 1.0], [same, {"q1": 0.6, "q2": 0.5}]).alpha == 1.0


def test_means_compare_only_the_queries_valued_at_every_alpha():
    # q2 has no value at α = 0.5: counting it would give α = 0 the higher mean (0.45 vs 0.6)
    outcome = choose([0.0, 0.5], [{"q1": 0.5, "q2": 0.4}, {"q1": 0.6}], guard=None)
    assert outcome.signal == [0.5, 0.6] and outcome.alpha == 0.5


def test_a_missing_input_leaves_that_strategy_without_signal_and_cannot_decide():
    lists = [Lists({"q": PEAKED}, {"q": "a"}), Lists({"q": FLAT}, {"q": "a"})]
    choice = label_free_choice([0.0, 0.5], lists, strategy_name="nqc")
    assert choice.outcomes["pseudo-queries"].signal == [None, None]
    assert choice.alpha == 0.0 and "pseudo-queries: no pseudo-queries were scored" in choice.notes
    with pytest.raises(ValueError, match="could not be computed"):
        label_free_choice([0.0, 0.5], lists, strategy_name="pseudo-queries")


CORPUS = {
    "d1": {
        "title": "flutter of thin wings",
        "text": "flutter of thin wings. we measured the flutter at mach two.",
    },
    "d2": {"title": "x", "text": "heat transfer in a boundary layer. the wall was cooled by a jet of air."},
    "d3": {"title": "", "text": "too short."},
}


def test_pseudo_queries_cut_the_title_or_a_sentence_out_of_the_document():
    pseudo = make_pseudo_queries(CORPUS, 10, seed=3)
    assert pseudo.queries["pseudo:d1"] == "flutter of thin wings"
    assert pseudo.documents["d1"] == {"title": "", "text": "we measured the flutter at mach two."}
    cut = pseudo.queries["pseudo:d2"]  # a two-word title is too short: a sentence instead
    assert cut in ("heat transfer in a boundary layer.", "the wall was cooled by a jet of air.")
    assert cut not in pseudo.documents["d2"]["text"]
    assert "pseudo:d3" not in pseudo.queries  # nothing long enough to cut
    assert pseudo.counts == {"title": 1, "sentence": 1}
    assert pseudo.qrels() == {"pseudo:d1": {"d1": 1}, "pseudo:d2": {"d2": 1}}


def test_pseudo_queries_depend_on_the_seed_not_on_the_corpus_order():
    corpus = {
        f"d{i}": {"title": f"title number {i} of many", "text": "some words here and more"} for i in range(50)
    }
    shuffled = dict(reversed(list(corpus.items())))
    assert make_pseudo_queries(corpus, 5, 7).queries == make_pseudo_queries(shuffled, 5, 7).queries
    assert make_pseudo_queries(corpus, 5, 7).queries != make_pseudo_queries(corpus, 5, 8).queries


# -- in an experiment --------------------------------------------------------------------------


def write_titled_beir(root: Path, words: tuple[str, ...], docs: int = 30) -> Path:
    """A tiny BEIR folder whose documents have titles of four words (pseudo-queries can be cut)."""
    rng = random.Random(5)
    (root / "qrels").mkdir(parents=True)
    corpus = {f"d{i}": (rng.sample(words, 4), rng.sample(words, 8)) for i in range(docs)}
    with open(root / "corpus.jsonl", "w") as handle:
        for did, (title, text) in corpus.items():
            record = {"_id": did, "title": " ".join(title), "text": " ".join(title + text)}
            handle.write(json.dumps(record) + "\n")
    with open(root / "queries.jsonl", "w") as handle, open(root / "qrels" / "test.tsv", "w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for n in range(8):
            did = f"d{3 * n}"
            terms = rng.sample(corpus[did][1], 2)
            handle.write(json.dumps({"_id": f"q{n}", "text": " ".join(terms)}) + "\n")
            qrels.write(f"q{n}\t{did}\t1\n")
    return root


@pytest.fixture(scope="module")
def titled(tmp_path_factory, tiny_words) -> Path:
    return write_titled_beir(tmp_path_factory.mktemp("titled") / "data", tiny_words)


def label_free_config(data: Path, trio, out: Path, **sweep):
    base = config_dict(data, trio, out)
    base["dataset"] = {"path": str(data), "split": "test"}
    base["fusion"] = {"method": "fixed"}
    base["systems"] = [
        {"name": "ranker", "type": "ranker"},
        {
            "name": "free",
            "type": "sweep",
            "alphas": [0.0, 0.5, 1.0],
            "select_on": "label-free",
            "label_free": {"pseudo_queries": 12, "seed": 1, **sweep},
        },
    ]
    return parse_config(base)


@pytest.fixture(scope="module")
def label_free_run(tmp_path_factory, titled, t5_trio):
    out = tmp_path_factory.mktemp("lf") / "out"
    return run_experiment(label_free_config(titled, t5_trio, out, guard=None), progress=False)


def test_results_record_every_strategy_per_alpha_and_the_choice(label_free_run):
    results = json.loads((label_free_run.output / "results.json").read_text())
    sweep = results["sweeps"]["free"]
    free = sweep["label_free"]
    assert sweep["select_on"] == "label-free" and free["strategy"] == "pseudo-queries"
    assert set(free["strategies"]) == set(LABEL_FREE_STRATEGIES)
    for outcome in free["strategies"].values():
        assert len(outcome["signal"]) == 3 and all(isinstance(v, float) for v in outcome["signal"])
    signal = free["strategies"]["pseudo-queries"]["signal"]
    best = max(range(3), key=lambda i: (signal[i], [0.0, 0.5, 1.0][i] == 0, -i))
    assert sweep["best_alpha"] == free["alpha"] == [0.0, 0.5, 1.0][best]  # guard off: the argmax
    assert free["pseudo_queries"] == "12 pseudo-queries from the corpus (12 titles; seed 1)"


def test_report_says_the_alpha_was_chosen_without_labels(label_free_run):
    report = (label_free_run.output / "report.md").read_text()
    assert "chosen without relevance labels by pseudo-queries" in report or "Label-free selection" in report
    assert "| pseudo-queries (decides) |" in report and "| nqc |" in report
    assert (label_free_run.output / "plots").is_dir() and list(
        (label_free_run.output / "plots").glob("*.png")
    )


def test_alpha_zero_is_reported_as_the_vector_not_applied(tmp_path, titled, t5_trio):
    # the domain vector of an identical trio is zero: every α ranks alike, and the tie goes to 0
    same = {"ranker": t5_trio["ranker"], "domain": t5_trio["ranker"], "pretrained": t5_trio["ranker"]}
    result = run_experiment(label_free_config(titled, same, tmp_path / "out"), progress=False)
    report = (result.output / "report.md").read_text()
    assert "Label-free selection (pseudo-queries, no relevance label read) chose α = 0." in report
    assert "α = 0 scores highest: the domain vector is not applied" in report


def test_the_dry_run_lists_the_pseudo_query_steps(tmp_path, titled, t5_trio):
    text = plan_experiment(label_free_config(titled, t5_trio, tmp_path / "out"))
    assert "bm25 pseudo" in text and "α=0.5 on pseudo" in text


def test_pseudo_queries_need_bm25_and_the_deciding_strategy_its_inputs(titled, t5_trio, tmp_path):
    base = config_dict(titled, t5_trio, tmp_path / "out")
    base["dataset"] = {"path": str(titled), "split": "test"}
    base["systems"] = [
        {"name": "s", "type": "sweep", "select_on": "label-free", "label_free": {"pseudo_queries": 0}}
    ]
    assert "chooses α by pseudo-queries, but label_free.pseudo_queries is 0" in config_error(base)
    base["first_stage"] = {"kind": "run", "run": "x.trec", "k": 10}
    base["systems"][0]["label_free"] = {"strategy": "nqc"}
    assert "label_free.pseudo_queries needs a BM25 first stage" in config_error(base)


def test_select_alpha_never_opens_a_qrels_file(tmp_path, titled, t5_trio, monkeypatch):
    from taskrank.labelfree import read_target, select_alpha

    data = tmp_path / "data"
    data.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        (data / name).write_bytes((titled / name).read_bytes())
    (data / "qrels" / "test.tsv").mkdir(parents=True)  # unreadable as a file, even for root
    opened: list[str] = []
    real_open, real_io_open = builtins.open, io.open

    def guarded(file, *args, real=real_open, **kwargs):
        opened.append(str(file))
        if "qrels" in str(file):
            raise PermissionError(f"qrels are not to be read: {file}")
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", lambda file, *a, **k: guarded(file, *a, real=real_io_open, **k))
    corpus, queries = read_target(data)
    choice = select_alpha(
        t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], corpus, queries,
        kind="monot5", alphas=[0.0, 1.0], pseudo_queries=10, k=10, top_k=10, device="cpu",
        max_length=64, progress=False,
    )  # fmt: skip
    assert choice.alpha in (0.0, 1.0) and set(choice.outcomes) == set(LABEL_FREE_STRATEGIES)
    assert any(name.endswith("corpus.jsonl") for name in opened)
    assert not [name for name in opened if "qrels" in name]


def test_select_alpha_command_prints_every_signal_and_writes_the_choice(
    tmp_path, titled, t5_trio, monkeypatch, capsys
):
    from _cli import run_cli

    trio = [f"--{role}={t5_trio[role]}" for role in ("ranker", "domain", "pretrained")]
    common = [*trio, "--kind", "monot5", "--data", titled, "--alphas", "0,1", "--pseudo-queries", 8]
    common += ["--k", 10, "--top-k", 10, "--max-length", 64, "--device", "cpu"]
    code, out, err = run_cli(monkeypatch, capsys, "select-alpha", *common, "--out", tmp_path / "c.json", "-q")
    assert code == 0, err
    record = json.loads((tmp_path / "c.json").read_text())
    assert out.strip() == f"{record['alpha']:g}" and record["alphas"] == [0.0, 1.0]
    assert set(record["strategies"]) == set(LABEL_FREE_STRATEGIES)
    code, out, err = run_cli(monkeypatch, capsys, "select-alpha", *common, "--strategy", "wig")
    assert code == 0, err
    assert "→ α =" in out and "(decides)" in out.splitlines()[2]  # wig is the third strategy
    code, out, err = run_cli(monkeypatch, capsys, "select-alpha", *common[:-2], "--alphas", "0,x")
    assert code == 2 and "--alphas: 'x' is not a number" in err
    code, out, err = run_cli(monkeypatch, capsys, "select-alpha", *common, "--out", tmp_path / "c.json")
    assert code == 2 and "c.json" in err  # an existing output is not replaced without --overwrite
