"""A tiny BEIR dataset over the conftest vocabulary, and experiment configs around the t5 trio."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from taskrank.config import ExperimentConfig, parse_config
from taskrank.errors import ConfigError


def write_tiny_beir(root: Path, words: tuple[str, ...], *, docs: int = 40, seed: int = 0) -> Path:
    """40 documents of 8 words; 8 test and 4 dev queries of 2 words taken from one document.
    A document holding both query words is relevant (2), one holding one of them is (1)."""
    rng = random.Random(seed)
    corpus = {f"d{i}": rng.sample(words, 8) for i in range(docs)}
    queries: dict[str, list[str]] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {"test": {}, "dev": {}}
    for n in range(12):
        source = corpus[f"d{(n * 3) % docs}"]
        terms = rng.sample(source, 2)
        qid = f"q{n}"
        queries[qid] = terms
        split = "dev" if n >= 8 else "test"
        judged = {}
        for did, text in corpus.items():
            hits = sum(t in text for t in terms)
            if hits:
                judged[did] = 2 if hits == 2 else 1
        qrels[split][qid] = judged
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    with open(root / "corpus.jsonl", "w") as handle:
        for did, text in corpus.items():
            handle.write(json.dumps({"_id": did, "title": "", "text": " ".join(text)}) + "\n")
    with open(root / "queries.jsonl", "w") as handle:
        for qid, terms in queries.items():
            handle.write(json.dumps({"_id": qid, "text": " ".join(terms)}) + "\n")
    for split, rows in qrels.items():
        with open(root / "qrels" / f"{split}.tsv", "w") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for qid, judged in rows.items():
                for did, grade in judged.items():
                    handle.write(f"{qid}\t{did}\t{grade}\n")
    return root


def config_dict(data: Path, trio: dict[str, Path], out: Path, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "tiny experiment",
        "output": str(out),
        "dataset": {"path": str(data), "split": "test", "dev": {"split": "dev"}},
        "first_stage": {"kind": "bm25", "k": 10},
        "models": {
            "ranker": str(trio["ranker"]),
            "domain": str(trio["domain"]),
            "pretrained": str(trio["pretrained"]),
            "kind": "monot5",
        },
        "scoring": {"device": "cpu", "batch_size": 32, "max_length": 64, "top_k": 10},
        "systems": [
            {"name": "BM25", "type": "first-stage"},
            {"name": "ranker", "type": "ranker"},
            {"name": "domain", "type": "domain"},
            {"name": "TA α=0.5", "type": "merge", "alpha": 0.5},
            {"name": "sweep", "type": "sweep", "alphas": [0.0, 0.5, 1.0]},
            {"name": "ablation", "type": "ablation", "alpha": 0.5},
        ],
        "fusion": {"method": "tuned", "step": 0.25},
        "metrics": ["ndcg@10", "p@10"],
    }
    base.update(changes)
    return base


def make_config(data: Path, trio: dict[str, Path], out: Path, **changes: Any) -> ExperimentConfig:
    return parse_config(config_dict(data, trio, out, **changes))


def with_changes(base: dict[str, Any], **changes: object) -> dict[str, Any]:
    """A deep copy of the config dict ``base`` with some top-level keys replaced."""
    data = copy.deepcopy(base)
    data.update(changes)
    return data


def config_error(data: dict[str, Any]) -> str:
    """The message of the :class:`ConfigError` that ``data``, read from ``exp.yaml``, is refused with."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, "exp.yaml")
    return str(info.value)


def step_keys(config: ExperimentConfig) -> dict[str, tuple[str, dict[str, Any]]]:
    """The test split's re-ranking key and inputs of the ranker and of the α = 0.5 merge, as a
    prepared experiment of ``config`` computes them (nothing is scored)."""
    from taskrank.experiment import Experiment, ModelState

    exp = Experiment(config, progress=False)
    exp.prepare()
    split = exp.data.test
    states = {"ranker": ModelState("ranker"), "merge": ModelState.merged(0.5)}
    return {
        name: (exp.steps.rerank_key(state, split), exp.steps.rerank_inputs(state, split))
        for name, state in states.items()
    }
