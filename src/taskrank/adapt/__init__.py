"""Domain vectors from an unlabeled corpus: continue pre-training θ_pretrained on the target documents.

The adapted checkpoint plays θ_domain in θ_new = θ_ranker + α · (θ_domain − θ_pretrained), for
domains that have no ready-made domain model. No relevance labels are used, so the re-ranker
stays zero-shot.

>>> from taskrank.adapt import adapt
>>> adapt("google-t5/t5-base", "data/scifact/corpus.jsonl", "models/t5-scifact", steps=500)  # doctest: +SKIP
"""

from __future__ import annotations

from ..devices import resolve_device
from .checkpointing import latest_checkpoint, work_dir
from .choice import AUTO_RETRIEVAL_OBJECTIVE, RETRIEVAL_OBJECTIVES, ObjectiveChoice, choose_objective
from .corpus import CorpusTexts, corpus_files, read_corpus
from .objectives import OBJECTIVES, SpanCorruptionCollator, detect_objective, make_batcher, sentinel_ids
from .settings import AdaptSettings
from .trainer import AdaptResult, adapt

__all__ = [
    "AUTO_RETRIEVAL_OBJECTIVE",
    "OBJECTIVES",
    "RETRIEVAL_OBJECTIVES",
    "AdaptResult",
    "AdaptSettings",
    "CorpusTexts",
    "ObjectiveChoice",
    "SpanCorruptionCollator",
    "adapt",
    "choose_objective",
    "corpus_files",
    "detect_objective",
    "latest_checkpoint",
    "make_batcher",
    "read_corpus",
    "resolve_device",
    "sentinel_ids",
    "work_dir",
]
