"""Reading a re-ranker's checkpoint: where it is, its config, its tokenizer and its weights.

Every failure is a :class:`CheckpointError` that names the checkpoint (or the weight file at
fault), never a library traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..checkpoints.resolve import local_checkpoint
from ..errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase


class AutoClass(Protocol):
    """A transformers auto class (``AutoModelForSequenceClassification``…), as :func:`load_model` uses it."""

    def from_pretrained(self, location: str | os.PathLike[str], *, dtype: torch.dtype) -> PreTrainedModel: ...


@dataclass(frozen=True)
class Source:
    """Where a model came from: a local directory, a hub id (at ``revision``, default main), or an
    object in memory."""

    ref: str
    local: Path | None
    revision: str | None = None

    @property
    def label(self) -> str:
        return str(self.local) if self.local is not None else self.ref


def resolve_source(ref: str | os.PathLike[str]) -> Source:
    """A checkpoint reference: an existing directory, or a hub id (``org/name``); the rule is
    :func:`taskrank.checkpoints.resolve.local_checkpoint`'s."""
    text = os.fspath(ref)
    return Source(text, local_checkpoint(text))


def load_config(source: Source) -> PretrainedConfig:
    """The ``config.json`` of a checkpoint, as a transformers config; errors name the checkpoint."""
    from transformers import AutoConfig

    try:
        if source.local is not None:
            return AutoConfig.from_pretrained(source.local)
        return AutoConfig.from_pretrained(source.ref, revision=source.revision)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot read the config of checkpoint {source.label}: {exc}") from exc


def load_tokenizer(
    ref: str | os.PathLike[str] | PreTrainedTokenizerBase, source_label: str
) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a path or hub id; an already-built tokenizer is returned as is."""
    if ref is not None and not isinstance(ref, (str, os.PathLike)):
        return ref
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(os.fspath(ref))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot load a tokenizer for {source_label} from {ref}: {exc}") from exc


def load_model(
    auto_class: AutoClass, location: str | os.PathLike[str], dtype: torch.dtype, what: str
) -> PreTrainedModel:
    """``auto_class.from_pretrained(location, dtype=dtype)``, where a bad weight file is a
    :class:`CheckpointError` naming the file (truncated or corrupt safetensors, a header claiming
    an impossible length, a pickle that ``weights_only`` refuses), not a library traceback.

    A local folder's safetensors headers are checked first (cheap); its pickles only once
    transformers has failed, to find the file at fault. ``what`` says what was being loaded.
    """
    from pickle import UnpicklingError

    from safetensors import SafetensorError

    from ..checkpoints.checkpoint import check_weight_files

    failures = (OSError, ValueError, KeyError, RuntimeError, EOFError, SafetensorError, UnpicklingError)
    folder = Path(location) if Path(location).is_dir() else None
    if folder is not None:
        check_weight_files(folder, pickles=False)
    try:
        return auto_class.from_pretrained(location, dtype=dtype)
    except failures as exc:
        if folder is not None:
            check_weight_files(folder)  # raises, naming the file, when one is at fault
        raise CheckpointError(f"cannot load {what}: {' '.join(str(exc).split())}") from exc


def architectures_of(config: PretrainedConfig) -> list[str]:
    """The ``architectures`` a checkpoint's config names (none: an empty list)."""
    return list(getattr(config, "architectures", None) or [])


__all__ = ["Source", "architectures_of", "load_config", "load_model", "load_tokenizer", "resolve_source"]
