"""Report rendering from plain result dicts: the table, significance marks, sections, plots."""

from __future__ import annotations

import pytest

from taskrank.errors import ConfigError
from taskrank.report import (
    baseline_letters,
    metric_label,
    plot_alpha_sweep,
    plot_layer_ablation,
    render_markdown,
    results_latex,
    results_table,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def results() -> dict:
    return {
        "title": "Unit experiment",
        "metrics": ["ndcg@10", "p@10"],
        "primary_metric": "ndcg@10",
        "baselines": ["BM25", "ranker"],
        "systems": [
            {"name": "BM25", "type": "first-stage", "mean": {"ndcg@10": 0.5, "p@10": 0.2}},
            {
                "name": "ranker",
                "type": "ranker",
                "mean": {"ndcg@10": 0.55, "p@10": 0.25},
                "details": "w=(0.4, 0.6)",
            },
            {"name": "TA", "type": "sweep", "mean": {"ndcg@10": 0.6123, "p@10": 0.21}, "details": "α=0.7"},
        ],
        "significance": {
            "test": "student",
            "p_value": 0.01,
            "correction": "bonferroni",
            "marks": {
                "TA": {
                    "ndcg@10": {"better": ["BM25", "ranker"], "worse": []},
                    "p@10": {"better": [], "worse": []},
                },
                "ranker": {"ndcg@10": {"better": [], "worse": []}, "p@10": {"better": [], "worse": ["BM25"]}},
            },
        },
        "sweeps": {
            "TA": {
                "alphas": [0.0, 0.5, 1.0],
                "dev": [0.3, 0.42, 0.35],
                "test": [0.31, 0.4, None],
                "best_alpha": 0.5,
                "select_on": "dev",
            }
        },
        "ablations": {
            "layers": {
                "alpha": 0.7,
                "layers": [0, 1],
                "only": [0.5, 0.52],
                "except": [0.58, 0.6],
                "ranker": 0.55,
                "full": 0.6,
            }
        },
        "environment": {"taskrank": "0.1.0", "seed": 42},
    }


def row(table: str, name: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].split(" (")[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in\n{table}")


def test_metric_labels():
    assert metric_label("ndcg@10") == "nDCG@10"
    assert metric_label("p@10") == "P@10"
    assert metric_label("map@100") == "MAP@100"
    assert metric_label("weird@5") == "weird@5"


def test_table_marks_significance_with_baseline_letters():
    table = results_table(results())
    assert table.splitlines()[0] == "| system | nDCG@10 | P@10 | details |"
    assert row(table, "BM25")[0] == "BM25 (a)"
    assert row(table, "ranker")[0] == "ranker (b)"
    ta = row(table, "TA")
    assert ta[1] == "**0.612**ᵃᵇ"  # best in column, and better than a and b
    assert ta[2] == "0.210"
    assert row(table, "ranker")[2] == "**0.250**₋a"  # significantly worse than BM25 on P@10
    assert ta[3] == "α=0.7"


def test_table_without_baselines_or_values():
    data = results()
    data["baselines"] = []
    data["systems"][0]["mean"].pop("p@10")
    table = results_table(data)
    assert row(table, "BM25")[2] == "–"
    assert "ᵃ" not in table


def test_too_many_baselines():
    with pytest.raises(ConfigError, match="at most 26"):
        baseline_letters([f"b{i}" for i in range(27)])


def test_markdown_holds_every_section():
    text = render_markdown(results(), {"sweep:TA": "plots/alpha-0.png"})
    assert text.startswith("# Unit experiment\n")
    assert "a = BM25, b = ranker" in text and "p < 0.01, bonferroni correction" in text
    assert "### α sweep: TA" in text and "Best α = 0.5 (selected on dev)." in text
    assert "| 0.5 ◀ | 0.420 | 0.400 |" in text
    assert "| 1 | 0.350 | – |" in text
    assert "![nDCG@10 against α](plots/alpha-0.png)" in text
    assert "### Layer ablation: layers (α = 0.7)" in text and "| 1 | 0.520 | 0.600 |" in text
    assert "- seed: 42" in text


def test_environment_records_read_as_json_and_a_missing_value_as_a_dash():
    data = results()
    data["environment"] = {"dtype": None, "int8_models": {"converted": 2, "from_cache": 1, "seconds": 7.5}}
    text = render_markdown(data, {})
    assert "- dtype: —" in text
    assert '- int8_models: {"converted": 2, "from_cache": 1, "seconds": 7.5}' in text


def test_oracle_sweep_is_flagged():
    data = results()
    data["sweeps"]["TA"]["select_on"] = "test"
    assert "an oracle, not a zero-shot result" in render_markdown(data)


def test_latex_table():
    tex = results_latex(results())
    assert "\\begin{tabular}{lrr}" in tex
    assert "TA & 0.612$^{ab}$ & 0.210 \\\\" in tex


def test_latex_escapes_every_special_character_of_a_name():
    data = results()
    data["systems"][2]["name"] = "TA α=0.7 \\ ~run_1 ^2"
    row = next(line for line in results_latex(data).splitlines() if line.startswith("TA"))
    # a backslash is \textbackslash{}, not "\\" (a LaTeX line break); ~ and ^ are not active
    assert row.startswith(
        "TA $\\alpha$=0.7 \\textbackslash{} \\textasciitilde{}run\\_1 \\textasciicircum{}2 & "
    )


def test_plots_are_pngs(tmp_path):
    data = results()
    sweep = plot_alpha_sweep(data["sweeps"]["TA"], tmp_path / "a.png")
    ablation = plot_layer_ablation(data["ablations"]["layers"], tmp_path / "sub" / "l.png")
    for path in (sweep, ablation):
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_empty_plots_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="at least one α"):
        plot_alpha_sweep({"alphas": []}, tmp_path / "a.png")
    with pytest.raises(ConfigError, match="at least one layer"):
        plot_layer_ablation({"layers": []}, tmp_path / "l.png")


def test_write_report_writes_report_and_plots(tmp_path):
    data = results()
    data["latex"] = True
    report = write_report(data, tmp_path)
    text = report.read_text()
    assert "(plots/alpha-0.png)" in text and "(plots/layers-0.png)" in text
    assert (tmp_path / "plots" / "alpha-0.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "plots" / "layers-0.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "report.tex").read_text().startswith("\\begin{tabular}")
    write_report(data, tmp_path / "noplots", plots=False)
    assert not (tmp_path / "noplots" / "plots").exists()
