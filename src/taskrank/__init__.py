"""taskrank: zero-shot domain adaptation of neural re-rankers by task arithmetic.

    θ_new = θ_ranker + α · (θ_domain − θ_pretrained)

Method: Braga, Kasela, Raganato, Pasi. "Investigating Task Arithmetic for Zero-Shot
Information Retrieval", SIGIR 2025 (arXiv 2505.00649).

The public API is imported lazily so that ``import taskrank`` stays cheap.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "TaskrankError": "taskrank.errors",
    "CheckpointError": "taskrank.errors",
    "MergeError": "taskrank.errors",
    "ConfigError": "taskrank.errors",
    "DataError": "taskrank.errors",
    "ModelError": "taskrank.errors",
    "Checkpoint": "taskrank.checkpoints",
    "StateDictSource": "taskrank.checkpoints",
    "resolve_checkpoint": "taskrank.checkpoints",
    "TaskVector": "taskrank.arithmetic",
    "LayerSelection": "taskrank.arithmetic",
    "MergeResult": "taskrank.arithmetic",
    "MergeReport": "taskrank.arithmetic",
    "merge": "taskrank.arithmetic",
    "AlphaSweep": "taskrank.arithmetic",
    "fingerprint": "taskrank.checkpoints",
    "load_reranker": "taskrank.rerankers",
    "Reranker": "taskrank.rerankers",
    "KINDS": "taskrank.rerankers",
    "load_beir": "taskrank.data",
    "BeirDataset": "taskrank.data",
    "dev_split": "taskrank.data",
    "load_trec_dataset": "taskrank.data",
    "read_run": "taskrank.data",
    "write_run": "taskrank.data",
    "read_qrels": "taskrank.data",
    "write_qrels": "taskrank.data",
    "bm25_search": "taskrank.retrieval",
    "evaluate": "taskrank.evaluation",
    "Evaluation": "taskrank.evaluation",
    "fuse": "taskrank.evaluation",
    "rrf": "taskrank.evaluation",
    "tune_fusion": "taskrank.evaluation",
    "compare": "taskrank.evaluation",
    "Comparison": "taskrank.evaluation",
    # (the adapt() function lives at taskrank.adapt.adapt: ``taskrank.adapt`` is its subpackage,
    # and a top-level name equal to a subpackage would change meaning once that is imported)
    "AdaptResult": "taskrank.adapt",
    "read_corpus": "taskrank.adapt",
    "train_ranker": "taskrank.adapt.training",
    "examples_from_qrels": "taskrank.adapt.training",
    "run_experiment": "taskrank.experiment",
    "plan_experiment": "taskrank.experiment",
    "load_config": "taskrank.config",
    "ExperimentConfig": "taskrank.config",
    "run_demo": "taskrank.demo",
    "select_alpha": "taskrank.labelfree",
    "LabelFreeChoice": "taskrank.labelfree",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
