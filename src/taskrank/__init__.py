"""taskrank: zero-shot domain adaptation of neural re-rankers by task arithmetic.

    θ_new = θ_ranker + α · (θ_domain − θ_pretrained)

Method: Braga, Kasela, Raganato, Pasi. "Investigating Task Arithmetic for Zero-Shot
Information Retrieval", SIGIR 2025 (arXiv 2505.00649).

The public API is imported lazily so that ``import taskrank`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

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
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskrank' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
