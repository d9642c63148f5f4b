"""Lazy, strict access to Hugging Face checkpoints, one tensor at a time, and a streaming writer.

A checkpoint is a local directory or a hub id (resolved through ``huggingface_hub`` and its
cache). Weights are read from safetensors (single file or sharded with an index) or PyTorch
``.bin`` pickles (``weights_only=True``, sharded too) without instantiating the model.

Safetensors tensors are read with plain positioned reads rather than a memory map, so a
tensor that has been used does not stay resident: reading three 1 GB checkpoints costs the
memory of the tensors in hand, not 3 GB of mapped pages.
"""

from __future__ import annotations

from .checkpoint import (
    Checkpoint,
    StateDictSource,
    TensorSource,
    as_source,
    copy_non_weight_files,
    fingerprint,
    sha256_file,
)
from .formats import (
    BIN_INDEX,
    BIN_SINGLE,
    SAFE_INDEX,
    SAFE_SINGLE,
    ShardedSafetensorsWriter,
    TensorSpec,
    parse_size,
)
from .resolve import resolve_checkpoint

__all__ = [
    "BIN_INDEX",
    "BIN_SINGLE",
    "SAFE_INDEX",
    "SAFE_SINGLE",
    "Checkpoint",
    "ShardedSafetensorsWriter",
    "StateDictSource",
    "TensorSource",
    "TensorSpec",
    "as_source",
    "copy_non_weight_files",
    "fingerprint",
    "parse_size",
    "resolve_checkpoint",
    "sha256_file",
]
