"""The ranker-training helper: tiny pretrained models become re-rankers that rank better than chance."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from taskrank.adapt.training import examples_from_qrels, train_ranker
from taskrank.errors import ConfigError, DataError, ModelError, TaskrankError
from taskrank.rerankers import load_reranker


def _topics(words: tuple[str, ...]) -> list[list[str]]:
    # the conftest vocabulary in four topical groups: biomedical, web/media, places/markets, law/history
    return [list(words[0:12]), list(words[12:21]), list(words[21:29]), list(words[29:])]


def _triples(words: tuple[str, ...], n: int, seed: int) -> list[tuple[str, str, int]]:
    """Per query (two words of one topic): a relevant document of its topic, a non-relevant one of another."""
    topics = _topics(words)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        mine, other = rng.sample(range(len(topics)), 2)
        query = " ".join(rng.sample(topics[mine], 2))
        out.append((query, " ".join(rng.choices(topics[mine], k=6)), 1))
        out.append((query, " ".join(rng.choices(topics[other], k=6)), 0))
    return out


def _pairwise_accuracy(path: Path, kind: str, held_out: list[tuple[str, str, int]]) -> float:
    scores = load_reranker(path, kind, device="cpu").score([(q, d) for q, d, _ in held_out])
    wins = [scores[i] > scores[i + 1] for i in range(0, len(held_out), 2)]
    return sum(wins) / len(wins)


@pytest.mark.parametrize(
    ("trio", "kind", "architecture"),
    [
        ("t5_trio", "monot5", "T5ForConditionalGeneration"),
        ("bert_trio", "cross-encoder", "BertForSequenceClassification"),
    ],
)
def test_trained_ranker_ranks_held_out_pairs_far_better_than_chance(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tiny_words: tuple[str, ...],
    trio: str,
    kind: str,
    architecture: str,
) -> None:
    pretrained = request.getfixturevalue(trio)["pretrained"]
    held_out = _triples(tiny_words, 60, seed=99)
    out = train_ranker(pretrained, _triples(tiny_words, 300, seed=0), tmp_path / "ranker", kind=kind, seed=1)
    assert _pairwise_accuracy(out, kind, held_out) >= 0.9
    config = AutoConfig.from_pretrained(out)
    assert config.architectures == [architecture]
    if kind == "cross-encoder":
        assert config.num_labels == 1
    record = json.loads((out / "training.json").read_text())
    assert record["kind"] == kind and record["examples"] == 600 and record["positives"] == 300
    assert record["final_loss"] < 0.5 * record["losses"][0]
    card = (out / "README.md").read_text()
    assert f'load_reranker(path, "{kind}")' in card and "600 (query, document, label) triples" in card


def test_untrained_monot5_base_is_at_chance(t5_trio: dict[str, Path], tiny_words: tuple[str, ...]) -> None:
    """The baseline the test above beats: the random tiny T5 read as a monoT5 ranker."""
    accuracy = _pairwise_accuracy(t5_trio["pretrained"], "monot5", _triples(tiny_words, 60, seed=99))
    assert 0.25 <= accuracy <= 0.75


def test_same_seed_same_ranker(tmp_path: Path, t5_trio: dict[str, Path], tiny_words: tuple[str, ...]) -> None:
    data = _triples(tiny_words, 20, seed=0)
    paths = [
        train_ranker(t5_trio["pretrained"], data, tmp_path / f"r{i}", steps=4, seed=s)
        for i, s in enumerate([7, 7, 8])
    ]
    a, b, c = (load_file(p / "model.safetensors") for p in paths)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_global_rng_is_left_alone(
    tmp_path: Path, bert_trio: dict[str, Path], tiny_words: tuple[str, ...]
) -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    train_ranker(
        bert_trio["pretrained"], _triples(tiny_words, 8, 0), tmp_path / "r", kind="cross-encoder", steps=2
    )
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ([], "no training examples given"),
        ([("q", "d")], r"training example 0 must be a \(query, document, label\) triple"),
        ([("q", "d", 1), ("q", "d", 2)], r"training example 1 has label 2; labels are 0"),
        ([("q", "d", 1), ("q", "d", True)], r"training example 1 has label True"),
        ([("q", "d", 1), (" ", "d", 0)], r"training example 1 has an empty or non-string query"),
        ([("q", "d", 1), ("q", "", 0)], r"training example 1 has an empty or non-string document"),
        ([("q", "d", 1), ("q", "e", 1)], r"need both labels 0 and 1; all 2 have label 1"),
    ],
)
def test_bad_examples_are_named(
    tmp_path: Path, t5_trio: dict[str, Path], examples: list, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        train_ranker(t5_trio["pretrained"], examples, tmp_path / "r", steps=1)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"kind": "listwise"}, ConfigError, r"unknown ranker kind 'listwise'; valid: monot5, cross-encoder"),
        ({"steps": 0}, ConfigError, r"steps must be a positive integer, got 0"),
        ({"lr": 0.0}, ConfigError, r"lr must be a number in \(0, 1\]"),
        ({"lr": float("inf")}, ConfigError, r"lr must be a number in \(0, 1\], got inf"),
        ({"batch_size": 0}, ConfigError, r"batch_size must be a positive integer"),
        ({"max_length": 2}, ConfigError, r"max_length must be an integer of at least 8"),
        ({"true_token": "▁maybe"}, ModelError, r"true_token '▁maybe' is not in the tokenizer's vocabulary"),
        (
            {"kind": "cross-encoder"},
            ModelError,
            r"cross-encoder needs an encoder .* T5ForConditionalGeneration",
        ),
    ],
)
def test_bad_settings_are_refused(
    tmp_path: Path,
    t5_trio: dict[str, Path],
    tiny_words: tuple[str, ...],
    kwargs: dict,
    error: type,
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        train_ranker(
            t5_trio["pretrained"], _triples(tiny_words, 4, 0), tmp_path / "r", **{"steps": 1, **kwargs}
        )
    assert not (tmp_path / "r").exists()


def test_monot5_needs_a_t5_model(
    tmp_path: Path, bert_trio: dict[str, Path], tiny_words: tuple[str, ...]
) -> None:
    with pytest.raises(ModelError, match=r"monot5 needs a T5-family encoder-decoder; .* BertModel"):
        train_ranker(bert_trio["pretrained"], _triples(tiny_words, 4, 0), tmp_path / "r", kind="monot5")


def test_existing_output_is_refused(
    tmp_path: Path, t5_trio: dict[str, Path], tiny_words: tuple[str, ...]
) -> None:
    (tmp_path / "r").mkdir()
    with pytest.raises(TaskrankError, match="already exists; pass --overwrite"):
        train_ranker(t5_trio["pretrained"], _triples(tiny_words, 4, 0), tmp_path / "r", steps=1)
    train_ranker(t5_trio["pretrained"], _triples(tiny_words, 4, 0), tmp_path / "r", steps=1, overwrite=True)
    assert (tmp_path / "r" / "model.safetensors").is_file()


def test_examples_from_qrels() -> None:
    corpus = {
        "d1": {"title": "Cells", "text": "a cell"},
        "d2": {"title": "", "text": "courts"},
        "d3": {"title": "Law", "text": ""},
    }
    queries = {"q1": "cell", "q2": "law", "q3": "unjudged"}
    qrels = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    examples = examples_from_qrels(corpus, queries, qrels, negatives=1, seed=0)
    assert examples[0] == ("cell", "Cells a cell", 1)
    assert examples[1][0] == "cell" and examples[1][2] == 0 and examples[1][1] in {"courts", "Law"}
    assert examples[2] == ("law", "Law", 1)
    assert examples[3][2] == 0 and examples[3][1] in {"Cells a cell", "courts"}
    assert len(examples) == 4
    assert len(examples_from_qrels(corpus, queries, qrels, negatives=5)) == 2 + 2 + 2  # pools of 2 docs each
    with pytest.raises(DataError, match=r"qrels name query 'q9', which is not among the queries"):
        examples_from_qrels(corpus, queries, {"q9": {"d1": 1}})
    with pytest.raises(
        DataError, match=r"qrels of query 'q1' name document 'd9', which is not in the corpus"
    ):
        examples_from_qrels(corpus, queries, {"q1": {"d9": 1}})
    with pytest.raises(ConfigError, match="negatives must be non-negative"):
        examples_from_qrels(corpus, queries, qrels, negatives=-1)
