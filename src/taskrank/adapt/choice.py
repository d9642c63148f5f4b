"""Which objective an ``adapt`` run trains with: ``auto``, or an explicit one checked against the checkpoint.

``auto`` gives a sentence-transformers bi-encoder folder (``modules.json`` or
``sentence_bert_config.json`` beside its ``config.json``, and no other ``model_type`` in its
``config_sentence_transformers.json``: sentence-transformers saves its CrossEncoder and
SparseEncoder folders with the same files) the retrieval objective
:data:`AUTO_RETRIEVAL_OBJECTIVE`, because masked-LM training with a fresh head drifts the encoder
away from the embedding space the ranker relies on; any other checkpoint gets the objective its
architecture calls for (:func:`~taskrank.adapt.objectives.detect_objective`). A hub id is decided
from the files :func:`taskrank.checkpoints.resolve_checkpoint` fetched, which include every JSON
file of the repository and its sub-folders. An explicit objective that does not fit the
architecture is a :class:`~taskrank.errors.ModelError` naming both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, ModelError
from ..vocabulary import OBJECTIVE_NAMES
from .objectives import describe_architecture, detect_objective

if TYPE_CHECKING:
    from transformers import PretrainedConfig

#: The objectives made for bi-encoders (they train a sentence-transformers model, not an LM head).
RETRIEVAL_OBJECTIVES = ("contrastive", "tsdae")
#: What ``auto`` trains a sentence-transformers folder with (one constant, so measurement can change it).
AUTO_RETRIEVAL_OBJECTIVE = "contrastive"
#: Files that mark a folder as a sentence-transformers model, in the order they are looked for.
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json")
#: The ``model_type`` of a bi-encoder in ``config_sentence_transformers.json`` (older folders record none).
BI_ENCODER_MODEL_TYPE = "SentenceTransformer"


@dataclass(frozen=True)
class ObjectiveChoice:
    """The objective a run trains with, what was asked for, and why (recorded in the card)."""

    objective: str
    requested: str
    reason: str


def sentence_transformers_model_type(folder: Path) -> str | None:
    """The ``model_type`` recorded in ``folder``'s ``config_sentence_transformers.json``
    (``SentenceTransformer``, ``CrossEncoder``, ``SparseEncoder``, ...), or ``None`` when none is
    (older bi-encoder folders, plain checkpoints)."""
    try:
        config = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = config.get("model_type") if isinstance(config, dict) else None
    return kind if isinstance(kind, str) else None


def sentence_transformers_marker(folder: Path) -> str | None:
    """The file that makes ``folder`` a sentence-transformers bi-encoder, or ``None`` for a plain
    checkpoint or a sentence-transformers folder of another model type (a CrossEncoder)."""
    if sentence_transformers_model_type(folder) not in (None, BI_ENCODER_MODEL_TYPE):
        return None
    return next((name for name in SENTENCE_TRANSFORMERS_FILES if (folder / name).is_file()), None)


def _not_a_bi_encoder(folder: Path) -> str:
    """``not a sentence-transformers bi-encoder folder`` (naming the folder's model type when it has one)."""
    kind = sentence_transformers_model_type(folder)
    other = f" (a sentence-transformers {kind} folder)" if kind not in (None, BI_ENCODER_MODEL_TYPE) else ""
    return f"not a sentence-transformers bi-encoder folder{other}"


def retrieval_misfit(objective: str, config: PretrainedConfig) -> str | None:
    """Why ``objective`` (``contrastive`` or ``tsdae``) cannot train a checkpoint of ``config``, or
    ``None`` when it can: both need an encoder-only model, and TSDAE also a causal-LM class of the
    same model type, which becomes its weight-tied decoder."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    what = describe_architecture(config)
    if getattr(config, "is_encoder_decoder", False):
        return f"{objective} trains encoder-only bi-encoders, and {what} is an encoder-decoder"
    try:
        family = detect_objective(config)
    except ModelError:
        family = None
    if family != "mlm":
        return f"{objective} trains encoder-only bi-encoders, and {what} is not an encoder"
    model_type = getattr(config, "model_type", None)
    if objective == "tsdae" and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return (
            f"tsdae decodes with a weight-tied causal-LM copy of the encoder, and transformers has no "
            f"causal-LM class for {what}"
        )
    return None


def choose_objective(requested: str, config: PretrainedConfig, folder: Path, name: str) -> ObjectiveChoice:
    """The objective to train checkpoint ``name`` (local folder ``folder``, config ``config``) with.

    Raises:
        ConfigError: ``requested`` is not an objective name.
        ModelError: ``requested`` does not fit the architecture (contrastive or tsdae on a T5 or a
            decoder, span-corruption on an encoder, ...), naming the objective and the architecture.

    Example::

        choose_objective("auto", config, Path("models/all-MiniLM-L6-v2"), "all-MiniLM-L6-v2").objective
        # 'contrastive'
    """
    if requested not in OBJECTIVE_NAMES:
        raise ConfigError(f"unknown objective {requested!r}; valid: {', '.join(OBJECTIVE_NAMES)}")
    marker = sentence_transformers_marker(folder)
    if requested == "auto":
        return _automatic(config, folder, marker, name)
    if requested in RETRIEVAL_OBJECTIVES:
        problem = retrieval_misfit(requested, config)
        if problem is not None:
            raise ModelError(f"objective {requested} does not fit {name}: {problem}")
        plain = "" if marker else f"; {_not_a_bi_encoder(folder)}, so trained with mean pooling"
        return ObjectiveChoice(requested, requested, f"asked for{plain}")
    try:
        detected = detect_objective(config)
    except ModelError as exc:  # an architecture no objective trains (BART, ...)
        raise ModelError(f"objective {requested} does not fit {name}: {exc}") from exc
    if requested != detected:
        also = (
            f" or {' / '.join(RETRIEVAL_OBJECTIVES)}"
            if retrieval_misfit("contrastive", config) is None
            else ""
        )
        raise ModelError(
            f"objective {requested} does not fit {name}: its {describe_architecture(config)} is trained "
            f"with {detected}{also}"
        )
    return ObjectiveChoice(requested, requested, "asked for")


def _automatic(config: PretrainedConfig, folder: Path, marker: str | None, name: str) -> ObjectiveChoice:
    """What ``auto`` chooses, and why in words."""
    what = describe_architecture(config)
    if marker is not None:
        problem = retrieval_misfit(AUTO_RETRIEVAL_OBJECTIVE, config)
        if problem is None:
            return ObjectiveChoice(
                AUTO_RETRIEVAL_OBJECTIVE,
                "auto",
                f"chosen automatically: {name} is a sentence-transformers folder ({marker}), a bi-encoder",
            )
        detected = detect_objective(config)
        return ObjectiveChoice(
            detected,
            "auto",
            f"chosen automatically: {name} is a sentence-transformers folder ({marker}), but {problem}; "
            f"its {what} calls for {detected}",
        )
    detected = detect_objective(config)
    return ObjectiveChoice(
        detected,
        "auto",
        f"chosen automatically: {name} is {_not_a_bi_encoder(folder)}, and its {what} calls for {detected}",
    )


__all__ = [
    "AUTO_RETRIEVAL_OBJECTIVE",
    "BI_ENCODER_MODEL_TYPE",
    "RETRIEVAL_OBJECTIVES",
    "SENTENCE_TRANSFORMERS_FILES",
    "ObjectiveChoice",
    "choose_objective",
    "retrieval_misfit",
    "sentence_transformers_marker",
    "sentence_transformers_model_type",
]
