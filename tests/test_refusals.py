"""Setups that can only give meaningless numbers are refused (issue 12, items 4, 7 and 8):
a metric deeper than the runs, fusion tuned on qrels that share no query with the runs, and
``taskrank evaluate`` against qrels that share no query with a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from _cli import run_cli
from _experiment_fixtures import config_error, with_changes
from taskrank.config import load_config, parse_config
from taskrank.data import write_qrels, write_run
from taskrank.errors import ConfigError, DataError
from taskrank.evaluation import tune_fusion

BASE = {
    "name": "refusals",
    "output": "out",
    "dataset": {"path": "data/x"},
    "models": {"ranker": "r", "domain": "d", "pretrained": "p", "kind": "monot5"},
    "systems": [{"name": "BM25", "type": "first-stage"}, {"name": "ranker", "type": "ranker"}],
}


def cfg(**changes: object) -> dict:
    return with_changes(BASE, **changes)


# --------------------------------------------------------------------------- 4: metric deeper than the runs


def test_metric_deeper_than_the_reranked_runs_is_refused() -> None:
    message = config_error(cfg(scoring={"top_k": 30}, metrics=["ndcg@10", "recall@100"]))
    assert (
        "metrics: recall@100 looks at 100 documents per query, but scoring.top_k re-ranks only 30 "
        "documents per query; lower the cutoff to 30 or less, or raise scoring.top_k"
    ) in message
    assert "ndcg@10" not in message  # only the metrics at fault are named


def test_every_deep_metric_is_named_and_the_default_list_is_said_to_be_one() -> None:
    message = config_error(cfg(scoring={"top_k": 30}, metrics=["recall@100", "map@50", "p@30"]))
    assert "metrics: recall@100, map@50 look at up to 100 documents per query" in message
    assert "p@30" not in message
    message = config_error(cfg(scoring={"top_k": 30}))  # metrics not set: the default list has R@100
    assert "recall@100, map@100 look at up to 100" in message
    assert "these are the default metrics; list yours under 'metrics'" in message


def test_a_cutoff_equal_to_the_depth_is_accepted() -> None:
    config = parse_config(cfg(first_stage={"k": 50}, scoring={"top_k": 30}, metrics=["ndcg@10", "recall@30"]))
    assert config.metrics == ["ndcg@10", "recall@30"]


def test_without_reranking_first_stage_k_limits() -> None:
    only_bm25 = cfg(
        systems=[{"name": "BM25", "type": "first-stage"}], first_stage={"k": 20}, scoring={"top_k": 20}
    )
    message = config_error({**only_bm25, "metrics": ["recall@100"]})
    assert "recall@100 looks at 100 documents per query, but first_stage.k retrieves only 20" in message
    assert "raise first_stage.k" in message
    assert parse_config({**only_bm25, "metrics": ["recall@20"]}).metrics == ["recall@20"]


def test_tuning_metric_and_primary_metric_are_checked_too() -> None:
    deep_tuning = config_error(
        cfg(scoring={"top_k": 5}, metrics=["ndcg@5"], report={"primary_metric": "ndcg@5"})
    )
    assert (
        "fusion: metric ndcg@10 looks at 10 documents per query, but scoring.top_k re-ranks only 5"
        in deep_tuning
    )
    # fixed weights are not tuned: their metric is never computed
    fixed = cfg(
        scoring={"top_k": 5},
        metrics=["ndcg@5"],
        report={"primary_metric": "ndcg@5"},
        fusion={"method": "fixed"},
    )
    assert parse_config(fixed).fusion.metric == "ndcg@10"
    deep_primary = config_error(cfg(scoring={"top_k": 5}, metrics=["ndcg@5"], fusion={"metric": "ndcg@5"}))
    assert "report: primary_metric ndcg@10 looks at 10 documents per query" in deep_primary


def test_the_refusal_names_the_line_of_the_metrics_key(tmp_path: Path) -> None:
    file = tmp_path / "exp.yaml"
    file.write_text(
        "name: refusals\n"
        "output: out\n"
        "dataset: {path: data/x}\n"
        "models: {ranker: r, domain: d, pretrained: p, kind: monot5}\n"
        "scoring: {top_k: 30}\n"
        "systems:\n"
        "  - {name: BM25, type: first-stage}\n"
        "  - {name: ranker, type: ranker}\n"
        "metrics: [ndcg@10, recall@100]\n"
    )
    with pytest.raises(
        ConfigError, match=r"exp\.yaml:9: metrics: recall@100 looks at 100 documents per query"
    ):
        load_config(file)


def test_the_demo_config_asks_for_no_metric_deeper_than_its_runs(tmp_path: Path) -> None:
    from taskrank.demo import QUICK, DemoSettings, demo_config

    models = {role: tmp_path / role for role in ("ranker", "domain", "pretrained")}
    for settings in (DemoSettings(), QUICK):
        config = demo_config(tmp_path, models, settings)
        assert f"recall@{settings.top_k}" in config.metrics
        assert all(int(m.split("@")[1]) <= config.scoring.top_k for m in config.metrics)


# --------------------------------------------------------------------------- 7: fusion tuned on no query


@pytest.fixture
def test_runs(tmp_path: Path) -> dict[str, Path]:
    first = {"q1": {"d1": 3.0, "d2": 1.0}, "q2": {"d3": 2.0, "d4": 1.0}}
    second = {"q1": {"d1": 0.1, "d2": 0.9}, "q2": {"d3": 0.8, "d4": 0.2}}
    paths = {"first": tmp_path / "bm25.test.trec", "second": tmp_path / "model.test.trec"}
    write_run(first, paths["first"])
    write_run(second, paths["second"])
    paths["dev_qrels"] = tmp_path / "dev.qrels"
    write_qrels({"q7": {"d1": 1}, "q8": {"d2": 1}, "q9": {"d4": 1}}, paths["dev_qrels"])
    return paths


def test_fuse_refuses_to_tune_test_runs_on_dev_qrels(monkeypatch, capsys, test_runs, tmp_path: Path) -> None:
    out = tmp_path / "fused.trec"
    code, stdout, err = run_cli(
        monkeypatch, capsys, "fuse", test_runs["first"], test_runs["second"], "--out", out,
        "--dev-qrels", test_runs["dev_qrels"],
    )  # fmt: skip
    assert code == 2 and "0.0000" not in stdout and not out.exists()
    line = " ".join(err.split())
    assert "cannot tune the fusion weights" in line
    assert (
        f"{test_runs['first']} and {test_runs['second']} and {test_runs['dev_qrels']} share no query" in line
    )
    assert "the runs have 2 queries" in line and "the qrels judge 3" in line
    assert "--dev-first-stage and --dev-reranker" in line


def test_fuse_warns_when_dev_runs_hold_few_judged_queries(
    monkeypatch, capsys, test_runs, tmp_path: Path
) -> None:
    dev_first, dev_second = tmp_path / "bm25.dev.trec", tmp_path / "model.dev.trec"
    write_run({"q7": {"d1": 2.0, "d2": 1.0}}, dev_first)
    write_run({"q7": {"d1": 0.2, "d2": 0.7}}, dev_second)
    args = ["fuse", test_runs["first"], test_runs["second"], "--out", tmp_path / "fused.trec",
            "--dev-qrels", test_runs["dev_qrels"], "--dev-first-stage", dev_first,
            "--dev-reranker", dev_second]  # fmt: skip
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "hold only 1 of the 3 queries judged in" in warnings[0] and "tuned on those 1" in warnings[0]
    write_run(
        {"q7": {"d1": 2.0}, "q8": {"d2": 1.0}},
        dev_first,
    )
    code, _, err = run_cli(monkeypatch, capsys, *args, "--overwrite")
    assert code == 0 and "warning" not in err  # 2 of 3: more than half


def test_tune_fusion_refuses_runs_sharing_no_query_with_the_qrels() -> None:
    with pytest.raises(DataError, match=r"share no query with the qrels \(1 judged queries\)"):
        tune_fusion({"q1": {"d1": 1.0}}, {"q1": {"d1": 0.5}}, {"q2": {"d1": 1}})


# --------------------------------------------------------------------------- 8: evaluate, no query shared


def test_evaluate_refuses_qrels_sharing_no_query(monkeypatch, capsys, test_runs) -> None:
    code, stdout, err = run_cli(
        monkeypatch, capsys, "evaluate", test_runs["first"], "--qrels", test_runs["dev_qrels"]
    )
    assert code == 2 and stdout == ""
    line = " ".join(err.split())
    assert f"{test_runs['first']} and {test_runs['dev_qrels']} share no query" in line
    assert "the run has 2 queries (e.g. 'q1'), the qrels judge 3 (e.g. 'q7')" in line


def test_evaluate_warns_in_one_line_when_few_judged_queries_are_in_the_run(
    monkeypatch, capsys, test_runs, tmp_path: Path
) -> None:
    qrels = tmp_path / "test.qrels"
    write_qrels({"q1": {"d1": 1}, "q3": {"d1": 1}, "q4": {"d1": 1}, "q5": {"d1": 1}, "q6": {"d1": 1}}, qrels)
    code, stdout, err = run_cli(
        monkeypatch, capsys, "evaluate", test_runs["first"], "--qrels", qrels, "-m", "p@1"
    )
    assert code == 0 and "0.2000" in stdout  # q1 right, the 4 others missing: 0
    assert err.strip().splitlines() == [
        f"warning: {test_runs['first']} holds only 1 of the 5 queries judged in {qrels}; "
        "the other 4 count as 0"
    ]
    write_qrels({"q1": {"d1": 1}, "q2": {"d3": 1}, "q3": {"d1": 1}}, qrels)
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", test_runs["first"], "--qrels", qrels)
    assert code == 0 and err == ""  # 2 of 3 judged queries: no warning
