"""Lazy, strict access to Hugging Face checkpoints, one tensor at a time, and a streaming writer.

A checkpoint is a local directory or a hub id (resolved through ``huggingface_hub`` and its
cache). Weights are read from safetensors (single file or sharded with an index) or PyTorch
``.bin`` pickles (``weights_only=True``, sharded too) without instantiating the model.

Safetensors tensors are read with plain positioned reads rather than a memory map, so a
tensor that has been used does not stay resident: reading three 1 GB checkpoints costs the
memory of the tensors in hand, not 3 GB of mapped pages. ``Checkpoint.get_span`` reads a range
of a tensor's elements, which a merge to disk uses to go through large tensors in pieces.

The names below are imported on first use: ``layout``, ``hashing`` and ``resolve`` need no
torch, so the command line can locate and start hashing weight files while torch loads.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "Checkpoint": ".checkpoint",
    "StateDictSource": ".checkpoint",
    "TensorSource": ".checkpoint",
    "MinimalSource": ".checkpoint",
    "SourceLike": ".checkpoint",
    "WholeTensorSource": ".checkpoint",
    "as_source": ".checkpoint",
    "copy_non_weight_files": ".checkpoint",
    "fingerprint": ".checkpoint",
    "ShardedSafetensorsWriter": ".safetensors_io",
    "TensorSpec": ".safetensors_io",
    "parse_size": ".safetensors_io",
    "read_ahead": ".hashing",
    "sha256_file": ".hashing",
    "BIN_INDEX": ".layout",
    "BIN_SINGLE": ".layout",
    "SAFE_INDEX": ".layout",
    "SAFE_SINGLE": ".layout",
    "weight_files": ".layout",
    "resolve_checkpoint": ".resolve",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_exports(__name__, globals(), _LAZY)
