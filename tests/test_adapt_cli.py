"""`taskrank adapt` on the command line, and the adapted checkpoint as `--domain` of `taskrank merge`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from _cli import run_cli as _taskrank
from taskrank.checkpoints import Checkpoint


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory, tiny_words: tuple[str, ...]) -> Path:
    """A folder of plain .txt documents."""
    folder = tmp_path_factory.mktemp("adapt_txt")
    rng = random.Random(1)
    for i in range(12):
        (folder / f"doc{i:02d}.txt").write_text(" ".join(rng.choices(tiny_words, k=25)), encoding="utf-8")
    return folder


FAST = ("--steps", "3", "--batch-size", "4", "--max-length", "16", "--quiet")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    with Checkpoint(path) as checkpoint:  # single file or sharded, as the merge writes it
        return {key: checkpoint.get(key) for key in checkpoint.keys()}


@pytest.mark.parametrize("trio", ["t5_trio", "bert_trio", "llama_trio"])
def test_adapted_checkpoint_merges_through_taskrank_merge(
    request: pytest.FixtureRequest, monkeypatch, capsys, tmp_path: Path, texts: Path, trio: str
) -> None:
    models = request.getfixturevalue(trio)
    adapted = tmp_path / "domain"
    code, _, err = _taskrank(
        monkeypatch, capsys, "adapt", "--pretrained", models["pretrained"], "--corpus", texts,
        "--out", adapted, "--lr", "1e-3", *FAST,
    )  # fmt: skip
    assert code == 0, err
    merged = tmp_path / "merged"
    code, _, err = _taskrank(
        monkeypatch, capsys, "merge", "--ranker", models["ranker"], "--domain", adapted,
        "--pretrained", models["pretrained"], "--alpha", "0.5", "--out", merged, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    ranker, domain, base, new = (
        _weights(p) for p in (models["ranker"], adapted, models["pretrained"], merged)
    )
    assert new.keys() == ranker.keys()
    # every tensor the three share (after the head prefix) moved by α·(θ_domain − θ_pretrained)
    moved = 0
    for key, value in new.items():
        stripped = key.split(".", 1)[1] if key.startswith("bert.") else key
        dkey = next((k for k in (key, f"bert.{stripped}") if k in domain), None)
        if dkey is None or (stripped not in base and key not in base):
            continue
        bvalue = base[key] if key in base else base[stripped]
        expected = ranker[key] + 0.5 * (domain[dkey] - bvalue)
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)
        moved += int(not torch.equal(domain[dkey], bvalue))
    assert moved > 0  # adaptation changed weights, and the merge applied them


def test_cli_reports_and_records(
    monkeypatch, capsys, tmp_path: Path, t5_trio: dict[str, Path], texts: Path
) -> None:
    out = tmp_path / ("domain-[v1]-" + "x" * 90)  # long, and not rich markup: printed whole on one line
    args = ["adapt", "-p", t5_trio["pretrained"], "-c", texts, "-o", out, "--steps", "2", "--batch-size", "2"]
    code, stdout, err = _taskrank(
        monkeypatch, capsys, *args, "--max-length", "16", "--seed", "4", "--grad-accum", "2"
    )
    assert code == 0, err
    assert "span-corruption on 12 documents" in stdout and f"wrote {out} (use it as --domain" in stdout
    record = json.loads((out / "adapt.json").read_text())
    assert record["settings"]["seed"] == 4 and record["settings"]["grad_accum"] == 2
    assert record["corpus"]["doc_count"] == 12 and len(record["corpus"]["files"]) == 12
    # a second run into the same folder is refused (exit code 2, one line naming the folder)
    code, _, err = _taskrank(monkeypatch, capsys, *args, "--quiet")
    assert code == 2 and f"{out.name} already exists" in err and "--overwrite" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--steps", "0"), "steps must be a positive integer"),
        (("--lr", "-1"), r"lr must be a number in (0, 1]"),
        (("--lr", "5"), r"lr must be a number in (0, 1]"),
        (("--dtype", "int8"), "unknown dtype 'int8'"),
    ],
)
def test_cli_bad_settings_exit_2(
    monkeypatch, capsys, tmp_path: Path, t5_trio: dict[str, Path], texts: Path, extra: tuple, message: str
) -> None:
    code, _, err = _taskrank(
        monkeypatch, capsys, "adapt", "-p", t5_trio["pretrained"], "-c", texts, "-o", tmp_path / "o", *extra
    )
    assert code == 2 and message in err.replace("\n", " ")


def test_cli_empty_corpus_exit_2(monkeypatch, capsys, tmp_path: Path, t5_trio: dict[str, Path]) -> None:
    empty = tmp_path / "corpus.jsonl"
    empty.write_text("\n", encoding="utf-8")
    code, _, err = _taskrank(
        monkeypatch, capsys, "adapt", "-p", t5_trio["pretrained"], "-c", empty, "-o", tmp_path / "o"
    )
    assert code == 2 and "holds no documents" in err


def test_cli_resume(monkeypatch, capsys, tmp_path: Path, t5_trio: dict[str, Path], texts: Path) -> None:
    out = tmp_path / "o"
    code, _, err = _taskrank(
        monkeypatch, capsys, "adapt", "-p", t5_trio["pretrained"], "-c", texts, "-o", out, "--resume"
    )
    assert code == 2 and "nothing to resume" in err
