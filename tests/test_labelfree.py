"""Label-free α selection: each strategy on hand-built lists, the guard, the pseudo-queries, and
``select_on: label-free`` in an experiment (results.json, report, plot)."""

from __future__ import annotations

import builtins
import io
import json
import random
from pathlib import Path

import pytest

from _experiment_fixtures import config_dict, config_error, write_tiny_beir
from taskrank.config import parse_config
from taskrank.errors import ConfigError, DataError
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
    # the top five are all three candidates: WIG would be 0 at every α, so the query has none
    assert strategy("wig").per_query(lists) == {}
    # seven: (mean of the top five − mean of all) / sqrt(2 query words)
    wig = strategy("wig").per_query(Lists({"q": PEAKED}, {"q": "wing flutter"}))["q"]
    assert wig == pytest.approx((13.3 / 5 - 15.0 / 7) / 2**0.5)


@pytest.mark.parametrize("name", ["nqc", "wig", "entropy"])
def test_score_distribution_edge_cases(name):
    lists = Lists(
        {"one": {"a": 2.0}, "empty": {}, "equal": dict.fromkeys("abcdefg", -3.0), "neg": PEAKED},
        {"one": "a b", "empty": "a b", "equal": "a b", "neg": "a b"},
    )
    values = strategy(name).per_query(lists)
    assert "one" not in values and "empty" not in values  # nothing to spread: no signal, no error
    assert values["equal"] == pytest.approx(-1.0 if name == "entropy" else 0.0)  # flat: the least
    negative = {d: v - 20.0 for d, v in PEAKED.items()}  # every score below 0, same spread
    shifted = strategy(name).per_query(Lists({"neg": negative}, {"neg": "a b"}))["neg"]
    if name == "nqc":  # std over |mean|: the same spread over a larger magnitude
        assert 0 < shifted < values["neg"]
    else:  # differences of scores (WIG) and a softmax (entropy) do not move with a shift
        assert shifted == pytest.approx(values["neg"])


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
    with pytest.raises(DataError, match="could not be computed .no pseudo-queries were scored"):
        label_free_choice([0.0, 0.5], lists, strategy_name="pseudo-queries")
    # an empty pseudo-query set (the corpus gave none) is missing too, not a ValueError
    empty = [Lists({"q": PEAKED}, {"q": "a"}, {}, {}), Lists({"q": FLAT}, {"q": "a"}, {}, {})]
    assert label_free_choice([0.0, 0.5], empty, strategy_name="nqc").outcomes["pseudo-queries"].alpha is None
    # no query valued at every α (one candidate each): the deciding strategy says so in one line
    single = [Lists({"q": {"d": 1.0}}, {"q": "a"}), Lists({"q": {"d": 2.0}}, {"q": "a"})]
    with pytest.raises(DataError, match="'entropy' could not be computed .no query was valued"):
        label_free_choice([0.0, 0.5], single, strategy_name="entropy")


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
            "label_free": {"strategy": "pseudo-queries", "pseudo_queries": 12, "seed": 1, **sweep},
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
    best = label_free_run.results["sweeps"]["free"]["best_alpha"]
    if best == 0:
        assert "Label-free selection (pseudo-queries, no relevance label read) chose α = 0. Why:" in report
    else:
        assert f"Best α = {best}, chosen without relevance labels by pseudo-queries: α = {best:g} " in report
        assert "not applied" not in report
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
        {
            "name": "s",
            "type": "sweep",
            "select_on": "label-free",
            "label_free": {"strategy": "pseudo-queries", "pseudo_queries": 0},
        }
    ]
    assert "chooses α by pseudo-queries, but label_free.pseudo_queries is 0" in config_error(base)
    base["first_stage"] = {"kind": "run", "run": "x.trec", "k": 10}
    base["systems"][0]["label_free"] = {"strategy": "nqc"}
    assert "label_free.pseudo_queries needs a BM25 first stage" in config_error(base)
    base["systems"][0]["label_free"] = {"strategy": "pseudo-queries"}  # so both must change
    assert "set label_free.pseudo_queries: 0 and label_free.strategy to nqc, wig or entropy" in (
        config_error(base)
    )
    del base["systems"][0]["label_free"]  # the defaults: wig decides, the pseudo-queries go
    assert config_error(base).endswith("set label_free.pseudo_queries: 0")


def test_a_corpus_without_pseudo_queries_is_one_error_naming_the_dataset(tmp_path, tiny_words, t5_trio):
    plain = write_tiny_beir(tmp_path / "plain", tiny_words)  # no titles, one sentence per document
    config = label_free_config(plain, t5_trio, tmp_path / "out")
    for attempt in (plan_experiment, lambda c: run_experiment(c, progress=False)):
        with pytest.raises(DataError) as info:
            attempt(config)
        message = str(info.value)
        assert f"dataset {str(plain)!r}: no document yields a pseudo-query" in message
        assert "sweep 'free' cannot choose α by pseudo-queries" in message
    # another strategy decides: the pseudo-queries are recorded as not computed, the run goes on
    nqc = label_free_config(plain, t5_trio, tmp_path / "nqc", strategy="nqc")
    assert " pseudo" not in plan_experiment(nqc).split("steps:")[1]
    free = run_experiment(nqc, progress=False).results["sweeps"]["free"]["label_free"]
    assert (
        free["strategies"]["pseudo-queries"]["alpha"] is None
        and free["strategies"]["nqc"]["alpha"] is not None
    )
    assert free["pseudo_queries"] is None


def test_the_pseudo_split_alone_keys_its_documents(tmp_path, titled, t5_trio):
    from taskrank.experiment.models import ModelState
    from taskrank.experiment.runner import Experiment

    experiment = Experiment(label_free_config(titled, t5_trio, tmp_path / "out"), progress=False)
    experiment.prepare()
    steps, state = experiment.steps, ModelState("ranker")
    pseudo = steps.pseudo_split(12, 1)
    assert steps.rerank_inputs(state, pseudo)["documents"]  # the cut documents are part of its key
    assert "documents" not in steps.rerank_inputs(state, steps.data.test)  # older keys unchanged
    other = steps.pseudo_split(12, 2)  # other documents cut: another key
    assert steps.rerank_key(state, other) != steps.rerank_key(state, pseudo)


def test_select_alpha_refuses_what_cannot_decide_before_loading_anything(
    tmp_path, tiny_words, monkeypatch, capsys
):
    from _cli import run_cli
    from taskrank.labelfree import read_target, select_alpha

    plain = write_tiny_beir(tmp_path / "plain", tiny_words)
    corpus, queries = read_target(plain)
    nowhere = [str(tmp_path / "no-such-model")] * 3  # never loaded: the errors come first
    with pytest.raises(ConfigError, match="pseudo-queries strategy needs pseudo-queries"):
        select_alpha(*nowhere, corpus, queries, kind="monot5", strategy="pseudo-queries", pseudo_queries=0)
    with pytest.raises(ConfigError, match="unknown label-free strategy 'oracle'"):
        select_alpha(*nowhere, corpus, queries, kind="monot5", strategy="oracle")
    with pytest.raises(DataError, match="the corpus: no document yields a pseudo-query"):
        select_alpha(*nowhere, corpus, queries, kind="monot5", strategy="pseudo-queries")
    with pytest.raises(ConfigError, match=r"α 5.0 is outside \[-3.0, 3.0\]"):
        select_alpha(*nowhere, corpus, queries, kind="monot5", alphas=[0.0, 5.0])
    with pytest.raises(ConfigError, match="α nan is outside"):
        select_alpha(*nowhere, corpus, queries, kind="monot5", alphas=[0.0, float("nan")])
    with pytest.raises(ConfigError, match="no α values"):
        select_alpha(*nowhere, corpus, queries, kind="monot5", alphas=[])
    trio = [
        f"--{role}={path}" for role, path in zip(("ranker", "domain", "pretrained"), nowhere, strict=True)
    ]
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "select-alpha",
        *trio,
        "--kind",
        "monot5",
        "--data",
        plain,
        "--strategy",
        "pseudo-queries",
    )
    assert code == 2 and f"--data {plain}: the corpus: no document yields a pseudo-query" in err
    assert "Traceback" not in err


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
    code, out, err = run_cli(monkeypatch, capsys, "select-alpha", *common, "--strategy", "entropy")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[3:5] == ["α=0", "α=1"]  # each signal's column names its α
    assert "→ α =" in out and "(decides)" in lines[4]  # entropy is the fourth strategy, under the head
    assert record["strategy"] == "wig"  # the default: the lowest regret in benchmarks/label-free.md
    code, out, err = run_cli(monkeypatch, capsys, "select-alpha", *common[:-2], "--alphas", "0,x")
    assert code == 2 and "--alphas: 'x' is not a number" in err
    code, out, err = run_cli(monkeypatch, capsys, "select-alpha", *common, "--out", tmp_path / "c.json")
    assert code == 2 and "c.json" in err  # an existing output is not replaced without --overwrite


def test_select_alpha_command_refuses_a_guard_of_zero(titled, monkeypatch, capsys):
    from _cli import run_cli

    code, _, err = run_cli(monkeypatch, capsys, "select-alpha", "--ranker=r", "--domain=d", "--pretrained=p",
                           "--kind", "monot5", "--data", titled, "--guard", "0")  # fmt: skip
    assert code == 2 and "--guard" in err
