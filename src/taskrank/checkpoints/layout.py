"""Where a Hugging Face checkpoint keeps its weights: file names, shard indexes, the hub cache.

Nothing here imports torch, so the command line can find (and start hashing) the weight files
while torch is still loading.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
WEIGHT_INDEXES = (SAFE_INDEX, BIN_INDEX, "tf_model.h5.index.json", "flax_model.msgpack.index.json")

# Files fetched from the hub for a checkpoint: configs, tokenizers, sentence-transformers modules.
HUB_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.py", "*/*.json", "*/*.txt", "README.md"]


def in_hub_cache(path: Path) -> tuple[str, str] | None:
    """(repo id, commit) when ``path`` is a snapshot folder of the hub cache."""
    if path.parent.name != "snapshots":
        return None
    repo_folder = path.parent.parent.name  # models--org--name
    if not repo_folder.startswith("models--"):
        return None
    return repo_folder[len("models--") :].replace("--", "/"), path.name


def _index_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"corrupt shard index {index}: {exc}") from exc
    files = sorted({index.parent / f for f in weight_map.values()})
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise CheckpointError(f"shard index {index} names missing file(s): {', '.join(missing)}")
    return files


def weight_files(path: Path) -> tuple[str, list[Path]]:
    """The weight format (``safetensors`` or ``bin``) of the checkpoint folder ``path`` and its
    weight files: safetensors first, sharded or not, then PyTorch pickles."""
    if (path / SAFE_INDEX).exists():
        return "safetensors", _index_files(path / SAFE_INDEX)
    if (path / SAFE_SINGLE).exists():
        return "safetensors", [path / SAFE_SINGLE]
    if (path / BIN_INDEX).exists():
        return "bin", _index_files(path / BIN_INDEX)
    if (path / BIN_SINGLE).exists():
        return "bin", [path / BIN_SINGLE]
    raise CheckpointError(
        f"no weights in {path}: expected {SAFE_SINGLE}, {SAFE_INDEX}, {BIN_SINGLE} or {BIN_INDEX}"
    )
