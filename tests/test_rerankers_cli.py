"""``taskrank rerank``: BEIR folder + candidate run in, TREC run out; errors exit with code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from taskrank.cli import main
from taskrank.data import read_run, write_run
from taskrank.rerankers import load_reranker

DOCS = {
    "d1": ("Cell", "protein gene of the cell"),
    "d2": ("", "football match in the city"),
    "d3": ("Virus", "the virus infects the immune cell"),
    "d4": ("Court", "the king and the law court"),
}
QUERIES = {"q1": "cell protein", "q2": "law court", "q3": "weather"}


def _beir(root: Path) -> Path:
    root.mkdir()
    lines = [json.dumps({"_id": k, "title": t, "text": x}) for k, (t, x) in DOCS.items()]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    lines = [json.dumps({"_id": k, "text": v}) for k, v in QUERIES.items()]
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td4\t1\n")
    return root


def _taskrank(monkeypatch, *args: str) -> int:
    """Run the ``taskrank`` entry point in-process; returns its exit code (0 on success)."""
    monkeypatch.setattr(sys, "argv", ["taskrank", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return exc.code
    return 0


@pytest.fixture
def setup(tmp_path):
    dataset = _beir(tmp_path / "beir")
    candidates = tmp_path / "bm25.trec"
    write_run({"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"d4": 5.0, "d1": 4.0, "d2": 1.0}}, candidates)
    return dataset, candidates, tmp_path / "out" / "rerank.trec"


def _run_cli(monkeypatch, model, kind, dataset, candidates, out, *extra):
    args = ["rerank", "--model", model, "--kind", kind, "--dataset", dataset]
    return _taskrank(monkeypatch, *args, "--candidates", candidates, "--out", out, "--quiet", *extra)


def test_rerank_writes_the_library_result(monkeypatch, setup, bert_trio):
    dataset, candidates, out = setup
    code = _run_cli(
        monkeypatch,
        bert_trio["ranker"],
        "cross-encoder",
        dataset,
        candidates,
        out,
        "--top-k",
        "2",
        "--device",
        "cpu",
    )
    assert code == 0
    written = read_run(out)
    corpus = {k: {"title": t, "text": x} for k, (t, x) in DOCS.items()}
    expected = load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu").rerank(
        read_run(candidates), corpus, QUERIES, top_k=2, progress=False
    )
    assert {q: set(d) for q, d in written.items()} == {"q1": {"d1", "d2"}, "q2": {"d4", "d1"}}
    for qid, docs in expected.items():
        np.testing.assert_allclose([written[qid][d] for d in docs], list(docs.values()), atol=1e-9, rtol=0)
    assert out.read_text().split("\n")[0].endswith(" taskrank")


def test_family_options_pass_through(monkeypatch, setup, t5_trio):
    dataset, candidates, out = setup
    extra = (
        "--device",
        "cpu",
        "--option",
        "true_token=▁yes",
        "--option",
        "false_token=▁no",
        "--batch-size",
        "2",
    )
    assert _run_cli(monkeypatch, t5_trio["ranker"], "monot5", dataset, candidates, out, *extra) == 0
    yes_no = load_reranker(t5_trio["ranker"], "monot5", true_token="▁yes", false_token="▁no")
    score = yes_no.score([("cell protein", "Cell protein gene of the cell")])[0]
    assert read_run(out)["q1"]["d1"] == pytest.approx(score, abs=1e-6)


def test_existing_output_needs_overwrite(monkeypatch, setup, bert_trio, capsys):
    dataset, candidates, out = setup
    out.parent.mkdir(parents=True)
    out.write_text("old\n")
    code = _run_cli(monkeypatch, bert_trio["ranker"], "cross-encoder", dataset, candidates, out)
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "old\n"
    code = _run_cli(
        monkeypatch, bert_trio["ranker"], "cross-encoder", dataset, candidates, out, "--overwrite"
    )
    assert code == 0
    assert set(read_run(out)) == {"q1", "q2"}


def test_missing_document_fails_before_the_model_is_loaded(monkeypatch, setup, tmp_path, capsys):
    dataset, _, out = setup
    candidates = tmp_path / "bad.trec"
    write_run({"q1": {"d1": 2.0, "nope": 1.0}}, candidates)
    # the model path does not exist: the candidate error must come first
    code = _run_cli(monkeypatch, tmp_path / "no-model", "monot5", dataset, candidates, out)
    assert code == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "not in the corpus" in err
    assert not out.exists()


def test_unknown_kind_and_bad_option(monkeypatch, setup, bert_trio, capsys):
    dataset, candidates, out = setup
    assert _run_cli(monkeypatch, bert_trio["ranker"], "splade", dataset, candidates, out) == 2
    err = capsys.readouterr().err  # typer's usage error: --kind is a choice list
    assert "'splade' is not one of 'monot5', 'cross-encoder', 'bi-encoder', 'query-likelihood'" in err
    assert (
        _run_cli(monkeypatch, bert_trio["ranker"], "monot5", dataset, candidates, out, "--option", "x") == 2
    )
    assert "KEY=VALUE" in capsys.readouterr().err
    assert not out.exists()


def test_kind_is_a_choice_list_in_help_and_a_usage_error_otherwise(monkeypatch, setup, capsys):
    """``--kind`` lists the kinds of taskrank.vocabulary in ``--help``; another name is refused by
    typer (exit 2, the choices listed) before any file is read."""
    from typer.testing import CliRunner

    from taskrank.cli import app
    from taskrank.vocabulary import KINDS

    help_text = CliRunner().invoke(app, ["rerank", "--help"], env={"COLUMNS": "200"}).output
    assert "|".join(KINDS) in help_text
    dataset, candidates, out = setup
    assert _run_cli(monkeypatch, "no-model", "monoT5", dataset, candidates, out) == 2
    err = capsys.readouterr().err
    assert "Usage:" in err and "Invalid value for '--kind'" in err
    assert all(f"'{kind}'" in err for kind in KINDS)
    assert not out.exists()


def test_split_restricts_the_candidates_and_says_how_many_were_dropped(setup, bert_trio, monkeypatch, capsys):
    """Candidates for queries outside ``--split`` are dropped with one warning line, as fuse and
    evaluate take such a run (rerank once refused it); none left is a one-line error, exit 2."""
    from typer.testing import CliRunner

    from taskrank.cli import app

    dataset, _, out = setup
    (dataset / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td2\t1\n")
    candidates = dataset.parent / "all.trec"
    write_run({q: {"d1": 3.0, "d2": 2.0, "d4": 1.0} for q in ("q1", "q2", "q3")}, candidates)
    for split, kept in (("test", {"q1", "q2"}), ("dev", {"q3"})):
        target = out.with_name(f"{split}.trec")
        args = ["rerank", "--model", str(bert_trio["ranker"]), "--kind", "cross-encoder", "--dataset",
                str(dataset), "--candidates", str(candidates), "--out", str(target), "--split", split,
                "--device", "cpu", "--quiet"]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (result.output, result.exception)
        assert set(read_run(target)) == kept
        dropped = 3 - len(kept)
        warning = f"warning: {dropped} of 3 queries of {candidates} are not in split {split!r}"
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and warnings[0].startswith(warning), result.stderr
    only_dev = dataset.parent / "dev-only.trec"
    write_run({"q3": {"d2": 1.0}}, only_dev)
    code = _run_cli(monkeypatch, bert_trio["ranker"], "cross-encoder", dataset, only_dev, out)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {only_dev}: none of its 1 queries is in split 'test' (e.g. 'q3')"
    assert not out.exists()
