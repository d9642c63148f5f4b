"""Builders of small BEIR folders for the data, retrieval and evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def make_beir(
    root: Path,
    *,
    docs: dict[str, tuple[str, str]] | None = None,
    queries: dict[str, str] | None = None,
    qrels: dict[str, list[tuple[str, str, int]]] | None = None,
) -> Path:
    """A BEIR folder: corpus.jsonl, queries.jsonl and one qrels/{split}.tsv per split."""
    docs = docs or {
        "d1": ("Aspirin", "aspirin reduces fever and pain"),
        "d2": ("Virus", "the virus infects the cell"),
        "d3": ("", "football match in the city"),
    }
    queries = queries or {"q1": "aspirin fever", "q2": "virus cell", "q3": "football"}
    qrels = qrels or {"test": [("q1", "d1", 1), ("q2", "d2", 2)], "train": [("q3", "d3", 1)]}
    write_jsonl(root / "corpus.jsonl", [{"_id": k, "title": t, "text": x} for k, (t, x) in docs.items()])
    write_jsonl(root / "queries.jsonl", [{"_id": k, "text": v, "metadata": {}} for k, v in queries.items()])
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, d, r in rows]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_phrase_corpus(path: Path, words: tuple[str, ...], docs: int = 48) -> Path:
    """A BEIR corpus.jsonl of ``docs`` documents over ``words``, each about three of them in a
    repeated phrase pattern (the adapt tests' corpus: crops of one document share its words)."""
    import json
    import random

    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(docs):
            topic = rng.sample(words, 3)
            text = " ".join(f"the {w} of the {topic[0]}" for w in rng.choices(topic, k=5))
            handle.write(json.dumps({"_id": f"d{i}", "title": topic[1], "text": text}) + "\n")
    return path
