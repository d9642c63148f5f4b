"""The offline demo: the bundled dataset, and a smaller variant of `taskrank demo` end to end."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskrank.cli import app
from taskrank.data import load_beir
from taskrank.demo import DEMO_DATA, QUICK, DemoSettings, demo_config, ranker_examples
from taskrank.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

#: The generator of the bundled dataset: a script of the repository, not part of the package.
GENERATOR = Path(__file__).resolve().parents[1] / "scripts" / "make_demo_data.py"


def words(texts) -> set[str]:
    return {w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t)}


def test_bundled_dataset_is_beir_with_disjoint_splits():
    test = load_beir(DEMO_DATA, "test", progress=False)
    dev = load_beir(DEMO_DATA, "dev", progress=False)
    train = load_beir(DEMO_DATA, "train", progress=False)
    assert 200 <= len(test.corpus) <= 400
    assert 40 <= len(test.queries) + len(dev.queries) <= 60
    assert not set(test.queries) & set(dev.queries)
    assert not (set(train.queries) & (set(test.queries) | set(dev.queries)))
    for split in (test, dev, train):
        for qid, judged in split.qrels.items():
            assert max(judged.values()) == 2, f"{qid} has no document holding its fact"
    # target-domain queries judge target-domain documents only; general ones general only
    assert all(d.startswith("mar-") for j in test.qrels.values() for d in j)
    assert all(d.startswith("gen-") for j in train.qrels.values() for d in j)


def test_target_vocabulary_differs_from_the_general_part():
    test = load_beir(DEMO_DATA, "test", progress=False)
    general = words(d["text"] for i, d in test.corpus.items() if i.startswith("gen-"))
    marine = words(d["text"] for i, d in test.corpus.items() if i.startswith("mar-"))
    shared = general & marine
    assert len(shared) / len(marine) < 0.25, sorted(shared)


def test_bundled_files_are_what_the_generator_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_demo_data", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(tmp_path)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/dev.tsv", "qrels/test.tsv"):
        assert (tmp_path / name).read_bytes() == (DEMO_DATA / name).read_bytes(), name


def test_ranker_examples_use_general_queries_only():
    examples = ranker_examples(negatives=2, seed=0)
    assert {label for _, _, label in examples} == {0, 1}
    assert sum(label for *_, label in examples) * 3 == len(examples)  # 2 negatives per positive
    train = load_beir(DEMO_DATA, "train", progress=False)
    assert {q for q, _, _ in examples} <= set(train.queries.values())
    marine_texts = {
        f"{d['title']} {d['text']}".strip() for i, d in train.corpus.items() if i.startswith("mar-")
    }
    assert not {doc for _, doc, _ in examples} & marine_texts


def test_demo_settings_are_checked():
    with pytest.raises(ConfigError, match="ranker_steps must be at least 1"):
        DemoSettings(ranker_steps=0)
    with pytest.raises(ConfigError, match="multiple of 4"):
        DemoSettings(hidden=30)


def test_demo_config_is_a_valid_experiment(tmp_path):
    paths = {role: tmp_path / role for role in ("pretrained", "ranker", "domain")}
    config = demo_config(tmp_path, paths)
    assert [s.type for s in config.systems] == [
        "first-stage",
        "ranker",
        "domain",
        "merge",
        "sweep",
        "sweep",
        "ablation",
    ]
    assert [s.select_on for s in config.systems if s.type == "sweep"] == ["dev", "label-free"]
    assert config.dataset.path == str(DEMO_DATA)


def test_demo_runs_end_to_end_and_reports_every_system(tmp_path):
    runner = CliRunner()
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--quick", "--no-progress"])
    assert result.exit_code == 0, result.output
    report = out / "results" / "report.md"
    assert f"report: {report}" in result.output
    assert "| system | nDCG@10 (fused) | P@10 (fused) |" in result.output
    text = report.read_text()
    config = demo_config(out, {r: out / "models" / r for r in ("pretrained", "ranker", "domain")}, QUICK)
    for system in config.systems:
        assert system.name in text, f"{system.name} missing from the demo report"
    table = text.split("## Results", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| system")]
    assert len(rows) == 6  # every system but the ablation, which has its own section
    for row in rows:
        value = float(re.sub(r"[^0-9.]", "", row.split("|")[2]))
        assert 0.0 <= value <= 1.0
    assert (out / "results" / "plots" / "alpha-0.png").is_file()
    assert (out / "results" / "plots" / "layers-0.png").is_file()
    for role in ("pretrained", "ranker", "domain"):
        assert (out / "models" / role / "config.json").is_file()

    # a second run reuses the models and every cached step
    weights = {p: p.stat().st_mtime_ns for p in (out / "models").rglob("*.safetensors")}
    steps = {p: p.stat().st_mtime_ns for p in (out / "results" / "cache").rglob("*.json")}
    again = runner.invoke(app, ["demo", "--out", str(out), "--quick", "--no-progress"])
    assert again.exit_code == 0, again.output
    assert (out / "results" / "report.md").read_text() == text
    assert {p: p.stat().st_mtime_ns for p in weights} == weights
    assert {p: p.stat().st_mtime_ns for p in steps} == steps
