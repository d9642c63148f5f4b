"""The offline demo: ``taskrank demo`` (the README's first command).

Everything runs locally, on a CPU, in under 40 seconds (benchmarks/demo.md):

1. the bundled dataset (``taskrank/demo_data``: news and everyday-web documents plus a marine-
   biology target domain, BEIR format, text written for the project);
2. a tiny T5 model trio: θ_pretrained built with :mod:`taskrank.tiny`; θ_ranker trained with
   :func:`taskrank.adapt.training.train_ranker` on the *general* queries only (the target domain stays
   zero-shot); θ_domain adapted with :func:`taskrank.adapt.adapt` (span corruption) on the
   *marine* documents only, without any query or label;
3. the experiment runner, as ``taskrank run`` would: BM25, the ranker alone, the domain model
   alone, a merge at fixed α, an α sweep chosen on dev, the same sweep with α chosen without
   labels (``select_on: label-free``), and a per-layer ablation.

The numbers are whatever these tiny models give: the demo shows the machinery, not the paper's
effect sizes.

Example::

    from taskrank.demo import run_demo
    result = run_demo("taskrank-demo")
    print(result.table)
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import write_json
from .config import ExperimentConfig, parse_config
from .data.formats import read_jsonl
from .errors import ConfigError
from .progress import announce
from .threads import resolve_threads, torch_threads

if TYPE_CHECKING:
    from .experiment import ExperimentResult

log = logging.getLogger(__name__)

#: The bundled BEIR-format dataset.
DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
TARGET_PREFIX = "mar-"  # ids of the target-domain (marine biology) documents and queries
GENERAL_PREFIX = "gen-"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo; the defaults run in under 40 seconds on two CPU cores."""

    hidden: int = 64
    layers: int = 2
    ranker_steps: int = 400
    ranker_lr: float = 3e-3
    adapt_steps: int = 150
    negatives: int = 4
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    merge_alpha: float = 0.5
    top_k: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "ranker_steps", "adapt_steps", "negatives", "top_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"demo setting {name} must be at least 1, got {getattr(self, name)}")
        if self.hidden % 4:
            raise ConfigError(
                f"demo setting hidden must be a multiple of 4 (attention heads), got {self.hidden}"
            )


#: A smaller variant for the test suite.
QUICK = DemoSettings(hidden=32, ranker_steps=60, adapt_steps=30, alphas=(0.0, 0.5, 1.0), top_k=20)


def demo_words() -> list[str]:
    """Every word of the demo corpus and queries (the tiny tokenizer's vocabulary)."""
    words: dict[str, None] = {}
    for name in ("corpus.jsonl", "queries.jsonl"):
        for _, record in read_jsonl(DEMO_DATA / name):
            text = f"{record.get('title', '')} {record.get('text', '')}"
            for word in re.findall(r"[A-Za-z]+", text):
                words.setdefault(word.lower(), None)
    return list(words)


def ranker_examples(negatives: int, seed: int) -> list[tuple[str, str, int]]:
    """(query, document, label) triples from the *general* train queries: the documents graded 2
    are positives; ``negatives`` documents of other general topics per positive are negatives."""
    from .data import doc_text, load_beir

    train = load_beir(DEMO_DATA, "train", progress=False)
    general = sorted(d for d in train.corpus if d.startswith(GENERAL_PREFIX))
    rng = random.Random(seed)
    examples: list[tuple[str, str, int]] = []
    for qid, judged in train.qrels.items():
        query = train.queries[qid]
        others = [d for d in general if d not in judged]
        for doc_id, grade in judged.items():
            if grade < 2:
                continue
            examples.append((query, doc_text(train.corpus[doc_id]), 1))
            for neg in rng.sample(others, negatives):
                examples.append((query, doc_text(train.corpus[neg]), 0))
    rng.shuffle(examples)
    return examples


def build_models(
    root: str | os.PathLike[str], settings: DemoSettings = DemoSettings(), *, progress: bool = True
) -> dict[str, Path]:
    """Build (or reuse, when built with the same settings) the demo's model trio under ``root``."""
    from .adapt import adapt
    from .adapt.training import train_ranker
    from .tiny import build_tiny

    root = Path(root)
    paths = {role: root / role for role in ("pretrained", "ranker", "domain")}
    recipe = root / "demo-models.json"
    wanted = {"settings": asdict(settings), "data": _data_stamp()}
    if recipe.is_file() and all(p.is_dir() for p in paths.values()):
        try:
            if json.loads(recipe.read_text(encoding="utf-8")) == json.loads(json.dumps(wanted)):
                announce(f"reusing the demo models in {root}", progress)
                return paths
        except ValueError:
            log.warning("ignoring unreadable %s", recipe)
    recipe.unlink(missing_ok=True)
    announce(
        f"building the tiny pretrained T5 (hidden {settings.hidden}, {settings.layers} layers) in {root}",
        progress,
    )
    build_tiny(
        "T5ForConditionalGeneration",
        paths["pretrained"],
        words=demo_words(),
        seed=settings.seed,
        hidden=settings.hidden,
        layers=settings.layers,
    )
    announce(f"training the ranker on the general queries: {settings.ranker_steps} steps", progress)
    train_ranker(
        paths["pretrained"],
        ranker_examples(settings.negatives, settings.seed),
        paths["ranker"],
        kind="monot5",
        steps=settings.ranker_steps,
        lr=settings.ranker_lr,
        seed=settings.seed,
        device="cpu",
        overwrite=True,
        progress=progress,
    )
    announce(f"adapting the pretrained model to the marine documents: {settings.adapt_steps} steps", progress)
    target = root / "target-corpus.jsonl"
    records = [
        r for _, r in read_jsonl(DEMO_DATA / "corpus.jsonl") if str(r["_id"]).startswith(TARGET_PREFIX)
    ]
    from .atomic import write_text

    write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    adapt(
        paths["pretrained"],
        target,
        paths["domain"],
        steps=settings.adapt_steps,
        lr=1e-3,
        batch_size=8,
        seed=settings.seed,
        device="cpu",
        overwrite=True,
        progress=progress,
    )
    write_json(recipe, wanted)
    return paths


def _data_stamp() -> dict[str, int]:
    return {
        p.name: p.stat().st_size
        for p in sorted(DEMO_DATA.rglob("*"))
        if p.is_file() and p.suffix in (".jsonl", ".tsv")
    }


def demo_config(
    out: str | os.PathLike[str],
    models: dict[str, Path],
    settings: DemoSettings = DemoSettings(),
    *,
    threads: int = 1,
) -> ExperimentConfig:
    """The experiment the demo runs (the same schema as ``taskrank run``), scored on ``threads``
    CPU threads."""
    return parse_config(
        {
            "name": "taskrank demo — tiny monoT5 + marine-biology domain vector",
            "description": (
                "Tiny T5 models built on this machine: the ranker was trained on general news/web queries, "
                "the domain model adapted to the marine-biology documents without labels. Evaluated on "
                "marine-biology queries the ranker never saw (zero-shot). Expect modest, noisy numbers: "
                "these models have a few hundred thousand parameters."
            ),
            "output": str(Path(out) / "results"),
            "seed": settings.seed,
            "dataset": {
                "path": str(DEMO_DATA),
                "name": "taskrank demo (marine biology)",
                "split": "test",
                "dev": {"split": "dev"},
            },
            "first_stage": {"kind": "bm25", "k": settings.top_k},
            "models": {
                "ranker": str(models["ranker"]),
                "domain": str(models["domain"]),
                "pretrained": str(models["pretrained"]),
                "kind": "monot5",
            },
            "scoring": {
                "device": "cpu",
                # bfloat16 on a CPU with AMX or avx512_bf16, float32 elsewhere; environment.json says which
                "dtype": "auto",
                "batch_size": 64,
                "max_length": 128,
                "top_k": settings.top_k,
                "threads": threads,
            },
            "systems": [
                {"name": "BM25", "type": "first-stage"},
                {"name": "ranker", "type": "ranker"},
                {"name": "domain model", "type": "domain"},
                {"name": f"TA α={settings.merge_alpha:g}", "type": "merge", "alpha": settings.merge_alpha},
                {"name": "TA dev-tuned α", "type": "sweep", "alphas": list(settings.alphas)},
                {
                    "name": "TA label-free α",
                    "type": "sweep",
                    "alphas": list(settings.alphas),
                    "select_on": "label-free",
                    "label_free": {"pseudo_queries": 100},
                },
                {"name": "layer ablation", "type": "ablation", "alpha": settings.merge_alpha},
            ],
            "fusion": {"method": "tuned", "step": 0.1},
            # recall and MAP at the depth of the runs: a deeper cutoff is refused (a renamed R@top_k)
            "metrics": ["ndcg@10", "p@10", "ndcg@3", f"recall@{settings.top_k}", f"map@{settings.top_k}"],
            "significance": {"test": "student", "p_value": 0.01, "correction": "bonferroni"},
        },
        "<demo>",
    )


def run_demo(
    out: str | os.PathLike[str] = "taskrank-demo",
    *,
    settings: DemoSettings = DemoSettings(),
    overwrite: bool = False,
    progress: bool = True,
    threads: int = 1,
) -> ExperimentResult:
    """Build the tiny trio and run the demo experiment into ``out``; returns the
    :class:`taskrank.experiment.ExperimentResult` (``.table``, ``.report``).

    torch runs on ``threads`` intra-op threads throughout (restored afterwards). One is the
    default: the demo's models are so small that thread hand-offs cost more than the arithmetic
    (a T5 forward pass was 50x slower with 2 threads on a loaded 2-core machine).
    Running it again reuses the models and every cached step.
    """
    from .experiment import run_experiment

    root = Path(out)
    with torch_threads(resolve_threads(threads)):
        models = build_models(root / "models", settings, progress=progress)
        config = demo_config(root, models, settings, threads=threads)
        announce("running the experiment: BM25, re-ranking, merges, fusion, significance, report", progress)
        return run_experiment(config, overwrite=overwrite, progress=progress)


__all__ = [
    "DEMO_DATA",
    "QUICK",
    "DemoSettings",
    "build_models",
    "demo_config",
    "demo_words",
    "ranker_examples",
    "run_demo",
]
