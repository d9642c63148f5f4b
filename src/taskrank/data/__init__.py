"""Datasets, runs and qrels: BEIR folders (local or downloaded by name), TREC files, dev splits.

Plain dict types travel between modules:

- ``Corpus``  = doc id -> {"title", "text"}
- ``Queries`` = query id -> text
- ``Qrels``   = query id -> doc id -> relevance
- ``Run``     = query id -> doc id -> score
"""

from __future__ import annotations

from .beir import (
    BEIR_DATASETS,
    BeirDataset,
    BeirSpec,
    available_splits,
    default_cache_dir,
    dev_split,
    download_beir,
    load_beir,
    load_trec_dataset,
    resolve_dataset,
    restrict_to_judged,
)
from .formats import (
    Corpus,
    Qrels,
    Queries,
    Run,
    doc_text,
    load_corpus,
    load_queries,
    ranked,
    read_jsonl,
    read_lines,
    read_qrels,
    read_run,
    top_k,
    write_qrels,
    write_run,
)

__all__ = [
    "BEIR_DATASETS",
    "BeirDataset",
    "BeirSpec",
    "Corpus",
    "Qrels",
    "Queries",
    "Run",
    "available_splits",
    "default_cache_dir",
    "dev_split",
    "doc_text",
    "download_beir",
    "load_beir",
    "load_corpus",
    "load_queries",
    "load_trec_dataset",
    "ranked",
    "read_jsonl",
    "read_lines",
    "read_qrels",
    "read_run",
    "resolve_dataset",
    "restrict_to_judged",
    "top_k",
    "write_qrels",
    "write_run",
]
