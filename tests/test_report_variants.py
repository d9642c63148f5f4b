"""Both variants of every re-ranking system, the model alone and fused with the first stage, from
a hand-built experiment whose scores are known; weights that name their sides; dev runs of every
system scored on dev; and plots a reader can trust (reference lines, separate layer points, an
honest y-axis, a legend that hides nothing).

The experiment's first stage and re-ranker scores are set by hand (``Steps.first_stage`` and
``Steps.rerank`` are replaced), so every expected number below is worked out by hand from
the runs and qrels at the top of the file: reciprocal rank of the one relevant document, and
whether it is first (P@1). Fusion is per-query min-max, then ``w_first · first + w_model · model``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from _data_fixtures import make_beir
from taskrank.config import parse_config
from taskrank.experiment import run_experiment, runner
from taskrank.experiment.steps import Steps
from taskrank.report import plots as report_module
from taskrank.report import render_markdown, results_latex, results_table

# --------------------------------------------------------------------------- the hand-built data

# test: q1 → d1 relevant, q2 → d3 relevant; dev: q3 → d2, q4 → d4
QRELS = {"test": {"q1": {"d1": 1}, "q2": {"d3": 1}}, "dev": {"q3": {"d2": 1}, "q4": {"d4": 1}}}
FIRST = {
    # BM25 test: d1 2nd in q1, d3 2nd in q2 → MRR 0.5, P@1 0
    "test": {"q1": {"d2": 3.0, "d1": 2.0, "d3": 1.0}, "q2": {"d4": 3.0, "d3": 2.5, "d1": 1.0}},
    # BM25 dev: d2 2nd in q3, d4 2nd in q4 → MRR 0.5
    "dev": {"q3": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q4": {"d3": 3.0, "d4": 2.0, "d1": 1.0}},
}
MODEL = {
    "ranker": {
        # alone: q1 d1 1st (RR 1), q2 d3 2nd (RR 0.5) → MRR 0.75, P@1 0.5
        # fused 0.5/0.5: q1 d1 .5·.5+.5·1 = .75 > d2 .5 > d3 .25 → RR 1;
        #                q2 d3 .5·.75+.5·(0.2/0.6) = .5417 > d4 .5, d1 .5 → RR 1   → MRR 1, P@1 1
        "test": {"q1": {"d1": 0.9, "d3": 0.5, "d2": 0.1}, "q2": {"d1": 1.0, "d3": 0.6, "d4": 0.4}},
        # alone: d2 3rd, d4 3rd → MRR 1/3; fused: q3 d1 1, d2 .25, d3 .125; q4 d3 1, d4 .25 → MRR 0.5
        "dev": {"q3": {"d1": 0.9, "d3": 0.3, "d2": 0.1}, "q4": {"d3": 0.9, "d1": 0.3, "d4": 0.1}},
    },
    "merge": {  # any α > 0
        # alone: d1 1st, d3 1st → MRR 1, P@1 1; fused: q1 as the ranker's; q2 d3 .875 > d4 .5 → MRR 1
        "test": {"q1": {"d1": 0.9, "d3": 0.5, "d2": 0.1}, "q2": {"d3": 0.9, "d1": 0.5, "d4": 0.1}},
        # alone: d2 1st, d4 1st → MRR 1; fused: q3 d1 .5+.5·.625 = .8125 > d2 .75; q4 d3 .8125 > d4
        # .75 → MRR 0.5, a tie with the ranker's 0.5 (the first α, 0, wins ties)
        "dev": {"q3": {"d2": 0.9, "d1": 0.6, "d3": 0.1}, "q4": {"d4": 0.9, "d3": 0.6, "d1": 0.1}},
    },
    "domain": {
        # alone: q1 d2, d3, d1 → RR 1/3; q2 d4, d1, d3 → RR 1/3 → MRR 1/3, P@1 0
        # fused: q1 d2 1, d3 .5·.625 = .3125, d1 .25 → RR 1/3; q2 d4 1, d3 .375, d1 .25 → RR 1/2
        #        → MRR 5/12, P@1 0
        "test": {"q1": {"d2": 0.9, "d3": 0.6, "d1": 0.1}, "q2": {"d4": 0.9, "d1": 0.5, "d3": 0.1}},
        "dev": {"q3": {"d1": 0.9, "d3": 0.3, "d2": 0.1}, "q4": {"d3": 0.9, "d1": 0.3, "d4": 0.1}},
    },
}
SYSTEMS = [
    {"name": "BM25", "type": "first-stage"},
    {"name": "ranker", "type": "ranker"},
    {"name": "domain", "type": "domain"},
    {"name": "TA", "type": "merge", "alpha": 0.5},
    {"name": "sweep", "type": "sweep", "alphas": [0.0, 0.5]},
]


def write_beir(root: Path) -> Path:
    return make_beir(
        root,
        docs={did: ("", f"document {did}") for did in ("d1", "d2", "d3", "d4")},
        queries={qid: f"query {qid}" for qid in ("q1", "q2", "q3", "q4")},
        qrels={
            split: [(qid, did, grade) for qid, judged in rows.items() for did, grade in judged.items()]
            for split, rows in QRELS.items()
        },
    )


@pytest.fixture
def known_scores(monkeypatch):
    """The first stage and every model score the runs above; records the runs the significance
    tests are given."""
    seen: dict[str, Any] = {}

    def first_stage(self, split):
        return {q: dict(docs) for q, docs in FIRST[split.role].items()}

    def rerank(self, state, split):
        return {q: dict(docs) for q, docs in MODEL[state.role][split.role].items()}

    original = runner.significance

    def significance(steps, runs):
        seen["runs"] = runs
        return original(steps, runs)

    monkeypatch.setattr(Steps, "first_stage", first_stage)
    monkeypatch.setattr(Steps, "rerank", rerank)
    monkeypatch.setattr(runner, "significance", significance)
    return seen


def run_known(tmp_path: Path, t5_trio, fusion: dict[str, Any], *, plots: bool = False):
    data = {
        "name": "known scores",
        "output": str(tmp_path / "out"),
        "dataset": {"path": str(write_beir(tmp_path / "beir")), "split": "test", "dev": {"split": "dev"}},
        "first_stage": {"kind": "bm25", "k": 10},
        "models": {
            "ranker": str(t5_trio["ranker"]),
            "domain": str(t5_trio["domain"]),
            "pretrained": str(t5_trio["pretrained"]),
            "kind": "monot5",
        },
        "scoring": {"device": "cpu", "max_length": 32, "top_k": 10},
        "systems": SYSTEMS,
        "fusion": fusion,
        "metrics": ["mrr@10", "p@1"],
        "significance": {"baselines": []},
        "report": {"primary_metric": "mrr@10", "plots": plots},
    }
    return run_experiment(parse_config(data), progress=False)


def table_row(table: str, name: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].split(" (")[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in\n{table}")


def top_docs(path: Path) -> dict[str, str]:
    """The first-ranked document of each query of a TREC run file."""
    first: dict[str, str] = {}
    for line in path.read_text().splitlines():
        qid, _, doc, rank, _, _ = line.split()
        if rank == "1":
            first[qid] = doc
    return first


# --------------------------------------------------------------------------- both variants


def test_both_variants_carry_the_hand_computed_scores(tmp_path, t5_trio, known_scores):
    result = run_known(tmp_path, t5_trio, {"method": "fixed", "weights": [0.5, 0.5]})
    rows = {row["name"]: row for row in result.results["systems"]}
    expected = {  # (fused, model alone) of MRR@10 and P@1
        "ranker": ({"mrr@10": 1.0, "p@1": 1.0}, {"mrr@10": 0.75, "p@1": 0.5}),
        "domain": ({"mrr@10": 5 / 12, "p@1": 0.0}, {"mrr@10": 1 / 3, "p@1": 0.0}),
        "TA": ({"mrr@10": 1.0, "p@1": 1.0}, {"mrr@10": 1.0, "p@1": 1.0}),
        "sweep": ({"mrr@10": 1.0, "p@1": 1.0}, {"mrr@10": 0.75, "p@1": 0.5}),  # α = 0: the ranker
    }
    for name, (fused, model) in expected.items():
        row = rows[name]
        assert row["reported_variant"] == "fused"
        assert row["variants"]["fused"]["mean"] == pytest.approx(fused), name
        assert row["variants"]["model"]["mean"] == pytest.approx(model), name
        assert row["mean"] == pytest.approx(fused), name  # the configured variant
    assert rows["BM25"]["mean"] == pytest.approx({"mrr@10": 0.5, "p@1": 0.0})
    assert "variants" not in rows["BM25"]
    assert result.results["variants"]["reported"] == "fused"
    assert result.results["variants"]["labels"] == {"fused": "fused with BM25", "model": "model alone"}

    # metrics/test.json: per query, both variants
    metrics = json.loads((result.output / "metrics" / "test.json").read_text())
    ranker = metrics["ranker"]
    assert ranker["variants"]["model"]["per_query"]["mrr@10"] == pytest.approx({"q1": 1.0, "q2": 0.5})
    assert ranker["variants"]["fused"]["per_query"]["mrr@10"] == pytest.approx({"q1": 1.0, "q2": 1.0})
    assert ranker["per_query"]["mrr@10"] == pytest.approx({"q1": 1.0, "q2": 1.0})

    # report.md: two named column groups with these numbers; the marks' variant said in words
    text = result.report.read_text()
    table = results_table(result.results)
    head = table.splitlines()[0]
    assert "MRR@10 (fused)" in head and "MRR@10 (model alone)" in head
    assert table_row(table, "ranker")[1:5] == ["**1.000**", "**1.000**", "0.750", "0.500"]
    assert table_row(table, "domain")[1:5] == ["0.417", "0.000", "0.333", "0.000"]
    assert table_row(table, "BM25")[3:5] == ["–", "–"]  # the first stage has no model-alone value
    assert table in text
    assert "*fused with BM25* the reported variant" in text and "significance marks" in text

    # runs/test: the reported (fused) run, and the model alone under model/
    runs = result.output / "runs" / "test"
    assert top_docs(runs / "ranker.trec") == {"q1": "d1", "q2": "d3"}  # fused
    assert top_docs(runs / "model" / "ranker.trec") == {"q1": "d1", "q2": "d1"}  # model alone
    assert (runs / "model" / "sweep" / "alpha=0.5.trec").is_file()
    # the significance tests see the fused runs
    assert top_docs_of(known_scores["runs"]["ranker"]) == {"q1": "d1", "q2": "d3"}


def top_docs_of(run: dict[str, dict[str, float]]) -> dict[str, str]:
    return {q: max(docs, key=lambda d: (docs[d], d)) for q, docs in run.items()}


def test_sweep_and_its_references_in_both_variants(tmp_path, t5_trio, known_scores):
    result = run_known(tmp_path, t5_trio, {"method": "fixed", "weights": [0.5, 0.5]})
    sweep = result.results["sweeps"]["sweep"]
    assert sweep["reported_variant"] == "fused"
    # fused dev MRR: α 0 → 0.5, α 0.5 → 0.5: a tie, the first α wins
    assert sweep["variants"]["fused"]["dev"] == pytest.approx([0.5, 0.5])
    assert sweep["variants"]["model"]["dev"] == pytest.approx([1 / 3, 1.0])
    assert sweep["variants"]["fused"]["test"] == pytest.approx([1.0, 1.0])
    assert sweep["variants"]["model"]["test"] == pytest.approx([0.75, 1.0])
    assert sweep["best_alpha"] == 0.0
    assert sweep["dev"] == sweep["variants"]["fused"]["dev"]
    assert sweep["ranker"] == pytest.approx({"dev": 0.5, "test": 1.0})
    assert sweep["variants"]["model"]["ranker"] == pytest.approx({"dev": 1 / 3, "test": 0.75})
    assert sweep["first_stage"] == pytest.approx({"name": "BM25", "dev": 0.5, "test": 0.5})
    text = result.report.read_text()
    assert "MRR@10 dev (model alone)" in text and "among the runs fused with BM25" in text


def test_fusion_none_reports_and_selects_on_the_model_alone(tmp_path, t5_trio, known_scores):
    result = run_known(tmp_path, t5_trio, {"method": "none"})
    rows = {row["name"]: row for row in result.results["systems"]}
    assert rows["ranker"]["reported_variant"] == "model"
    assert set(rows["ranker"]["variants"]) == {"model"}
    assert rows["ranker"]["mean"] == pytest.approx({"mrr@10": 0.75, "p@1": 0.5})
    sweep = result.results["sweeps"]["sweep"]
    assert sweep["dev"] == pytest.approx([1 / 3, 1.0])
    assert sweep["best_alpha"] == 0.5  # the model alone picks α = 0.5; fused runs tie and pick 0
    assert rows["sweep"]["mean"] == pytest.approx({"mrr@10": 1.0, "p@1": 1.0})
    assert top_docs_of(known_scores["runs"]["ranker"]) == {"q1": "d1", "q2": "d1"}  # tested: the model
    assert not (result.output / "runs" / "test" / "model").exists()
    table = results_table(result.results)
    assert "(fused)" not in table and "(model alone)" not in table
    assert "model alone" in result.report.read_text()


def test_weights_name_their_sides_and_one_sided_fusion_says_so(tmp_path, t5_trio, known_scores):
    half = run_known(tmp_path / "half", t5_trio, {"method": "fixed", "weights": [0.8, 0.2]})
    details = {row["name"]: row["details"] for row in half.results["systems"]}
    assert details["ranker"] == "BM25 0.8 · model 0.2, fixed"
    assert details["TA"] == "α=0.5; BM25 0.8 · model 0.2, fixed"

    first_only = run_known(tmp_path / "first", t5_trio, {"method": "fixed", "weights": [1.0, 0.0]})
    rows = {row["name"]: row for row in first_only.results["systems"]}
    assert rows["ranker"]["details"] == (
        "BM25 1 · model 0, fixed; equals BM25: fusion weight 1 on the first stage"
    )
    assert rows["ranker"]["mean"] == pytest.approx(rows["BM25"]["mean"])  # it does equal BM25
    assert rows["ranker"]["variants"]["model"]["mean"]["mrr@10"] == pytest.approx(0.75)
    assert "equals BM25: fusion weight 1 on the first stage" in first_only.report.read_text()


def test_dev_runs_of_every_system_scored_on_dev(tmp_path, t5_trio, known_scores):
    result = run_known(tmp_path, t5_trio, {"method": "tuned", "step": 0.5})
    dev = result.output / "runs" / "dev"
    assert sorted(p.name for p in dev.glob("*.trec")) == sorted(
        ["BM25.trec", "ranker.trec", "domain.trec", "TA.trec", "sweep.trec"]
    )
    assert sorted(p.name for p in (dev / "model").glob("*.trec")) == sorted(
        ["ranker.trec", "domain.trec", "TA.trec", "sweep.trec"]
    )
    assert top_docs(dev / "BM25.trec") == {"q3": "d1", "q4": "d3"}
    assert top_docs(dev / "model" / "TA.trec") == {"q3": "d2", "q4": "d4"}
    assert sorted(p.name for p in (dev / "sweep").glob("*.trec")) == ["alpha=0.5.trec", "alpha=0.trec"]


# --------------------------------------------------------------------------- rendering


def variant_results() -> dict[str, Any]:
    """A results dict as the runner writes it, with both variants."""
    return {
        "title": "variants",
        "metrics": ["ndcg@10"],
        "primary_metric": "ndcg@10",
        "baselines": ["BM25"],
        "variants": {
            "reported": "fused",
            "available": ["fused", "model"],
            "labels": {"fused": "fused with BM25", "model": "model alone"},
            "first_stage": "BM25",
        },
        "systems": [
            {"name": "BM25", "type": "first-stage", "mean": {"ndcg@10": 0.765}},
            {
                "name": "ranker",
                "type": "ranker",
                "mean": {"ndcg@10": 0.753},
                "reported_variant": "fused",
                "variants": {"fused": {"mean": {"ndcg@10": 0.753}}, "model": {"mean": {"ndcg@10": 0.302}}},
            },
        ],
        "significance": {"marks": {"ranker": {"ndcg@10": {"better": [], "worse": ["BM25"]}}}},
        "ablations": {
            "layers": {
                "alpha": 0.5,
                "layers": [0, 1],
                "split": "test",
                "only": [0.755, 0.753],
                "except": [0.754, 0.755],
                "ranker": 0.753,
                "full": 0.756,
                "first_stage": {"name": "BM25", "value": 0.765},
                "reported_variant": "fused",
                "variants": {
                    "fused": {
                        "only": [0.755, 0.753],
                        "except": [0.754, 0.755],
                        "ranker": 0.753,
                        "full": 0.756,
                    },
                    "model": {
                        "only": [0.321, 0.301],
                        "except": [0.299, 0.324],
                        "ranker": 0.302,
                        "full": 0.315,
                    },
                },
            }
        },
    }


def test_marks_only_on_the_reported_group_and_latex_groups():
    results = variant_results()
    table = results_table(results)
    assert table.splitlines()[0] == "| system | nDCG@10 (fused) | nDCG@10 (model alone) | details |"
    assert table_row(table, "ranker")[1:3] == ["0.753₋a", "**0.302**"]  # the tests are of fused runs
    tex = results_latex(results)
    assert "& \\multicolumn{1}{c}{fused with BM25} & \\multicolumn{1}{c}{model alone} \\\\" in tex
    assert "ranker & 0.753$_{-a}$ & 0.302 \\\\" in tex


def test_ablation_text_gives_both_variants():
    text = render_markdown(variant_results())
    assert (
        "fused with BM25: ranker 0.753, all layers 0.756; model alone: ranker 0.302, all layers 0.315" in text
    )
    assert "ranker alone" not in text
    assert "| 0 | 0.755 | 0.754 | 0.321 | 0.299 |" in text
    assert "(α = 0.5, test split)" in text


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plot functions save."""
    saved: list[Any] = []
    original = report_module._save

    def save(fig, path):
        saved.append(fig)
        return original(fig, path)

    monkeypatch.setattr(report_module, "_save", save)
    return saved


def horizontal_lines(ax) -> dict[str, float]:
    """label → y of every horizontal line (axhline) of ``ax``."""
    out = {}
    for line in ax.get_lines():
        y = list(line.get_ydata())
        if len(y) == 2 and y[0] == y[1] and list(line.get_xdata()) == [0, 1]:
            out[line.get_label()] = float(y[0])
    return out


def test_alpha_plot_has_first_stage_and_ranker_reference_lines(tmp_path, figures):
    sweep = {
        "alphas": [0.25, 0.5, 1.0],
        "dev": [0.70, 0.71, 0.69],
        "test": [0.75, 0.76, 0.74],
        "best_alpha": 0.5,
        "first_stage": {"name": "BM25", "dev": 0.702, "test": 0.765},
        "ranker": {"dev": 0.708, "test": 0.753},
    }
    report_module.plot_alpha_sweep(sweep, tmp_path / "a.png")
    (ax,) = figures[0].axes
    lines = horizontal_lines(ax)
    assert lines == pytest.approx(
        {"BM25 (dev)": 0.702, "ranker (dev)": 0.708, "BM25 (test)": 0.765, "ranker (test)": 0.753}
    )
    report_module.plot_alpha_sweep(sweep, tmp_path / "b.png", variant="fused with BM25")
    assert "fused with BM25" in figures[1].axes[0].get_ylabel()  # the variant the plot shows


@pytest.fixture
def layer_axes(tmp_path, figures):
    report_module.plot_layer_ablation(variant_results()["ablations"]["layers"], tmp_path / "l.png")
    (ax,) = figures[0].axes
    return ax


def test_layer_plot_shows_separate_points(layer_axes):
    references = horizontal_lines(layer_axes)
    data_lines = [line for line in layer_axes.get_lines() if line.get_label() not in references]
    assert len(data_lines) == 2  # only, except
    for line in data_lines:  # layers are not a continuum: no line joins them
        assert line.get_linestyle() == "None" and line.get_marker() not in (None, "None", "")
    assert set(references) == {"ranker (α = 0)", "all layers (α = 0.5)", "BM25"}


def test_layer_plot_axis_is_honest_and_names_the_split(layer_axes):
    low, high = layer_axes.get_ylim()
    assert high - low >= 0.05  # report.MIN_SPAN: 0.003 apart on 40 queries is not a steep effect
    assert "test split" in layer_axes.get_title()


def test_layer_plot_legend_hides_nothing(layer_axes):
    layer_axes.figure.canvas.draw()
    legend = layer_axes.get_legend().get_window_extent()
    assert not legend.overlaps(layer_axes.get_window_extent()), "the legend covers the plot"
