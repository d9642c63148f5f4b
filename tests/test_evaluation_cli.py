"""``taskrank retrieve``, ``fuse`` and ``evaluate``: files in, files and tables out; errors exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _cli import run_cli as _taskrank
from _data_fixtures import make_beir
from taskrank.data import read_run, write_qrels, write_run
from taskrank.evaluation import compare, fuse

DOCS = {
    "d1": ("Aspirin", "aspirin reduces fever and headache"),
    "d2": ("Virus", "the influenza virus infects lung cells"),
    "d3": ("", "football match in the city stadium"),
    "d4": ("Vaccine", "vaccines protect against the virus"),
}
QUERIES = {"q1": "aspirin fever", "q2": "virus infects cells", "q3": "football stadium", "q4": "zebra"}
QRELS = {"test": [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d4", 1), ("q3", "d3", 1), ("q4", "d1", 1)]}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_beir(tmp_path / "toy", docs=DOCS, queries=QUERIES, qrels=QRELS)


def test_retrieve_writes_run_and_parameters(monkeypatch, capsys, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "bm25.trec"
    args = ["retrieve", "--dataset", dataset, "--out", out, "--index-cache", tmp_path / "idx", "--k1", "1.2"]
    code, stdout, _ = _taskrank(monkeypatch, capsys, *args, "--k", "2")
    assert code == 0 and "wrote" in stdout
    run = read_run(out)
    assert max(run["q1"], key=run["q1"].get) == "d1" and max(run["q3"], key=run["q3"].get) == "d3"
    assert all(len(docs) <= 2 for docs in run.values()) and "q4" not in run  # no match: no lines
    meta = json.loads((tmp_path / "runs" / "bm25.trec.json").read_text())
    assert meta["bm25"]["variant"] == "lucene" and meta["bm25"]["k1"] == 1.2 and meta["bm25"]["b"] == 0.75
    assert meta["queries"] == 4 and meta["queries_without_results"] == 1 and not meta["index_from_cache"]
    code, stdout, _ = _taskrank(monkeypatch, capsys, *args, "--k", "2", "--overwrite")
    assert code == 0 and "(cached index)" in stdout


def test_retrieve_from_corpus_and_topics(monkeypatch, capsys, dataset: Path, tmp_path: Path) -> None:
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\taspirin\nq9\tunjudged virus\n", encoding="utf-8")
    qrels = tmp_path / "qrels.txt"
    write_qrels({"q1": {"d1": 1}}, qrels)
    out = tmp_path / "run.trec"
    args = ["retrieve", "--corpus", dataset / "corpus.jsonl", "--queries", topics, "--qrels", qrels]
    code, _, _ = _taskrank(
        monkeypatch, capsys, *args, "--out", out, "--index-cache", tmp_path / "i", "--quiet"
    )
    assert code == 0 and set(read_run(out)) == {"q1"}


def test_retrieve_errors(monkeypatch, capsys, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "bm25.trec"
    code, _, err = _taskrank(monkeypatch, capsys, "retrieve", "--out", out)
    assert (
        code == 2 and "give a dataset (--dataset), or both corpus and queries (--corpus and --queries)" in err
    )
    code, _, err = _taskrank(
        monkeypatch, capsys, "retrieve", "--dataset", dataset, "--split", "dev", "--out", out
    )
    assert code == 2 and "unknown split 'dev'; valid splits: test" in err
    code, _, err = _taskrank(
        monkeypatch, capsys, "retrieve", "--dataset", dataset, "--language", "xx", "--out", out
    )
    assert code == 2 and "unsupported BM25 language 'xx'" in err
    out.write_text("keep me")
    code, _, err = _taskrank(monkeypatch, capsys, "retrieve", "--dataset", dataset, "--out", out)
    assert code == 2 and "already exists" in err and out.read_text() == "keep me"


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    first = {"q1": {"d1": 9.0, "d2": 3.0, "d3": 1.0}, "q2": {"d2": 7.0, "d4": 8.0, "d1": 1.0}}
    second = {"q1": {"d1": 0.2, "d2": 0.9, "d3": 0.1}, "q2": {"d2": 0.8, "d4": 0.1, "d1": 0.0}}
    paths = {"first": tmp_path / "first.trec", "second": tmp_path / "second.trec"}
    write_run(first, paths["first"])
    write_run(second, paths["second"])
    qrels = tmp_path / "dev.qrels"
    write_qrels({"q1": {"d1": 1}, "q2": {"d2": 1}}, qrels)
    paths["qrels"] = qrels
    return paths


def test_fuse_fixed_weights_and_rrf(monkeypatch, capsys, runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fused.trec"
    code, stdout, _ = _taskrank(monkeypatch, capsys, "fuse", runs["first"], runs["second"], "--out", out,
                                "--weights", "0.4,0.6")  # fmt: skip
    assert code == 0 and "weights 0.4,0.6" in stdout
    expected = fuse(read_run(runs["first"]), read_run(runs["second"]), (0.4, 0.6))
    written = read_run(out)
    assert {q: pytest.approx(v) for q, v in written.items()} == expected
    args = ["fuse", runs["first"], runs["second"], "--out", tmp_path / "r.trec"]
    code, _, _ = _taskrank(monkeypatch, capsys, *args, "--method", "rrf", "--rrf-k", "10")
    assert code == 0
    assert read_run(tmp_path / "r.trec")["q1"]["d1"] == pytest.approx(1 / 11 + 1 / 12)


def test_fuse_depth_cuts_both_runs_first(monkeypatch, capsys, runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fused.trec"
    code, _, _ = _taskrank(
        monkeypatch, capsys, "fuse", runs["first"], runs["second"], "--out", out, "--depth", "2"
    )
    assert code == 0
    # q1: first keeps d1 (9), d2 (3); second keeps d2 (.9), d1 (.2): d3 is gone, min-max over the kept two
    assert read_run(out)["q1"] == pytest.approx({"d1": 0.5, "d2": 0.5})
    code, _, err = _taskrank(
        monkeypatch, capsys, "fuse", runs["first"], runs["second"], "--out", out, "--depth", "0"
    )
    assert code == 2 and "--depth must be >= 1" in err


def test_fuse_tunes_weights_on_dev(monkeypatch, capsys, runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fused.trec"
    args = ["fuse", runs["first"], runs["second"], "--out", out, "--dev-qrels", runs["qrels"]]
    code, stdout, _ = _taskrank(monkeypatch, capsys, *args, "--metric", "mrr@10", "--step", "0.25")
    # normalised, q1 needs w0 > 0.538 for d1 to lead and q2 needs w0 < 0.86 for d2: on the 0.25 grid only 0.75
    assert code == 0 and "weights 0.75,0.25 tuned" in stdout and "(mrr@10 = 1.0000)" in stdout
    expected = fuse(read_run(runs["first"]), read_run(runs["second"]), (0.75, 0.25))
    assert {q: pytest.approx(v) for q, v in read_run(out).items()} == expected


def test_fuse_errors(monkeypatch, capsys, runs: dict[str, Path], tmp_path: Path) -> None:
    base = ["fuse", runs["first"], runs["second"], "--out", tmp_path / "f.trec"]
    code, _, err = _taskrank(monkeypatch, capsys, *base, "--weights", "0.5")
    assert code == 2 and "--weights expects two numbers" in err
    code, _, err = _taskrank(monkeypatch, capsys, *base, "--method", "max")
    assert code == 2 and "unknown fusion method 'max'; valid: wsum, rrf" in err
    code, _, err = _taskrank(monkeypatch, capsys, *base, "--weights", "0.5,0.5", "--dev-qrels", runs["qrels"])
    assert code == 2 and "either --weights or --dev-qrels" in err
    code, _, err = _taskrank(
        monkeypatch, capsys, "fuse", tmp_path / "missing.trec", runs["second"], "--out", "x"
    )
    assert code == 2 and "missing.trec: no such file" in err


def test_evaluate_prints_the_table(monkeypatch, capsys, runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    code, stdout, _ = _taskrank(monkeypatch, capsys, "evaluate", f"bm25={runs['first']}", runs["second"],
                                "--qrels", runs["qrels"], "-m", "ndcg@10,p@10", "--baseline", "bm25",
                                "--out", out)  # fmt: skip
    assert code == 0
    assert (
        "| | system | nDCG@10 | P@10 |" in stdout and "| a | bm25 |" in stdout and "| b | second |" in stdout
    )
    assert "Queries without relevance judgments are excluded" in stdout
    assert "counts as 0 for every metric" in stdout
    assert out.read_text() == stdout
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    table = compare({"bm25": read_run(runs["first"]), "second": read_run(runs["second"])}, qrels,
                    ["ndcg@10", "p@10"], baselines=["bm25"])  # fmt: skip
    assert table.to_markdown() == stdout
    code, stdout, _ = _taskrank(monkeypatch, capsys, "evaluate", runs["first"], runs["second"],
                                "--qrels", runs["qrels"], "--format", "json", "--test", "fisher")  # fmt: skip
    data = json.loads(stdout)
    assert code == 0 and data["systems"] == ["first", "second"] and data["test"] == "fisher"
    code, stdout, _ = _taskrank(monkeypatch, capsys, "evaluate", runs["first"], "--qrels", runs["qrels"],
                                "--format", "latex")  # fmt: skip
    assert code == 0 and r"\begin{tabular}" in stdout


def test_evaluate_qrels_from_beir_folder(monkeypatch, capsys, dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.trec"
    write_run({"q1": {"d1": 1.0}}, run)
    code, stdout, _ = _taskrank(monkeypatch, capsys, "evaluate", run, "--qrels", dataset, "-m", "p@1")
    assert code == 0 and "| a | run | **0.2500** |" in stdout  # 1 of 4 judged queries has its document first
    code, _, err = _taskrank(monkeypatch, capsys, "evaluate", run, "--qrels", dataset, "--split", "dev")
    assert code == 2 and "unknown split 'dev'; valid splits: test" in err


def test_evaluate_errors(monkeypatch, capsys, runs: dict[str, Path], tmp_path: Path) -> None:
    base = ["evaluate", runs["first"], runs["second"], "--qrels", runs["qrels"]]
    code, _, err = _taskrank(monkeypatch, capsys, *base, "--format", "html")
    assert code == 2 and "unknown format 'html'; valid: markdown, latex, json" in err
    code, _, err = _taskrank(monkeypatch, capsys, *base, "-m", "f1@10")
    assert code == 2 and "unknown metric 'f1@10'" in err
    code, _, err = _taskrank(monkeypatch, capsys, *base, "--baseline", "bm25")
    assert code == 2 and "unknown baseline(s) bm25; systems: first, second" in err
    code, _, err = _taskrank(
        monkeypatch, capsys, "evaluate", runs["first"], runs["first"], "--qrels", runs["qrels"]
    )
    assert code == 2 and "two runs are named 'first'" in err
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 high run\n")
    code, _, err = _taskrank(monkeypatch, capsys, "evaluate", bad, "--qrels", runs["qrels"])
    assert code == 2 and "bad.trec:1: score must be a number, got 'high'" in err
