"""The folder a training run leaves: the weights, the tokenizer, a JSON record and a README.md card.

``adapt`` and ``train_ranker`` write the same shape of card (a Hugging Face front matter, a
title, what was done, the settings as a table, the versions); :func:`model_card` writes both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_dir, write_json, write_text

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .retrieval_objectives import RetrievalModel


def model_card(
    *,
    base_model: str,
    tags: Sequence[str],
    title: str,
    body: str,
    settings: Mapping[str, object],
    table_header: str,
    versions: Mapping[str, str],
    record_file: str,
) -> str:
    """A README.md model card: front matter (``base_model``, ``tags`` after ``taskrank``), the
    ``title``, the ``body`` (Markdown), the ``settings`` as a two-column table whose first column
    is headed ``table_header``, the versions, and where the full record lies."""
    tag_lines = "\n".join(f"- {tag}" for tag in ("taskrank", *tags))
    rows = "\n".join(f"| {k} | {v} |" for k, v in settings.items())
    return f"""---
base_model: {base_model}
library_name: transformers
tags:
{tag_lines}
---

# {title}

{body}

| {table_header} | value |
|---|---|
{rows}

Versions: {", ".join(f"{k} {v}" for k, v in versions.items())}.
The full record is in `{record_file}`.
"""


def save_trained(
    out: Path,
    model: PreTrainedModel | RetrievalModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    record_file: str,
    record: Mapping[str, object],
    card: str,
    overwrite: bool,
    dtype: torch.dtype | None = None,
    write_model: Callable[[Path], None] | None = None,
) -> None:
    """Write ``out`` atomically: the model (cast to ``dtype`` when given), its tokenizer, the
    JSON ``record`` as ``record_file`` and the ``card`` as README.md. ``write_model``, when
    given, writes the weights, tokenizer and config into the folder instead (a bi-encoder keeps
    its pretrained folder's files)."""
    model.eval()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if write_model is not None:
            write_model(tmp)
        else:
            (model if dtype is None else model.to(dtype=dtype)).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        write_json(tmp / record_file, record)
        write_text(tmp / "README.md", card)


__all__ = ["model_card", "save_trained"]
