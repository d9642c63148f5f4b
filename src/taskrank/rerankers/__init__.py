"""Re-rankers: four scoring families behind one interface.

===================  ==========================================  ===============================
kind                 model                                       score of (query, document)
===================  ==========================================  ===============================
``monot5``           encoder-decoder ``...ForConditionalGeneration``  log P("true") over (true, false)
``cross-encoder``    ``...ForSequenceClassification``            the relevant label's logit
``bi-encoder``       any encoder (sentence-transformers folder)  cosine / dot of pooled embeddings
``query-likelihood`` ``...ForCausalLM``                          mean log P(query | document)
===================  ==========================================  ===============================

The family is always explicit and is checked against the checkpoint's architecture.
Scoring follows Braga et al., "Investigating Task Arithmetic for Zero-Shot Information
Retrieval", SIGIR 2025 (monoT5: Nogueira et al. 2020; RankingGPT: Zhang et al. 2023).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..devices import resolve_device, resolve_dtype
from ..errors import ConfigError, ModelError
from ..vocabulary import KINDS
from .base import Reranker, select_candidates
from .batching import Packed, plan_batches
from .bi_encoder import BiEncoderReranker
from .cross_encoder import CrossEncoderReranker
from .loading import Source, architectures_of, load_config, load_model, load_tokenizer, resolve_source
from .monot5 import MonoT5Reranker
from .quantize import QUANTIZE_MODES, check_quantize, choose_scoring_dtype, quantize_reranker
from .query_likelihood import QueryLikelihoodReranker

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: kind → family class, in the order of :data:`taskrank.vocabulary.KINDS` (the valid names).
REGISTRY: dict[str, type[Reranker]] = {
    cls.kind: cls
    for cls in (MonoT5Reranker, CrossEncoderReranker, BiEncoderReranker, QueryLikelihoodReranker)
}
if tuple(REGISTRY) != KINDS:
    raise RuntimeError(f"taskrank.rerankers registers {tuple(REGISTRY)}, but vocabulary.KINDS is {KINDS}")


def reranker_class(kind: str) -> type[Reranker]:
    """The family class registered under ``kind``; an unknown kind lists the valid ones."""
    cls = REGISTRY.get(kind)
    if cls is None:
        raise ConfigError(f"unknown re-ranker kind {kind!r}; valid: {', '.join(KINDS)}")
    return cls


#: The maximum input length when neither the caller nor the model says one.
DEFAULT_MAX_LENGTH = 512


@dataclass(frozen=True)
class ScoringSettings:
    """The settings a checkpoint is scored with, resolved once: its family, the maximum input
    length and where that came from, and every family option (defaults filled in from the family
    and the checkpoint folder, e.g. a sentence-transformers folder's pooling and normalisation).

    Loading another checkpoint with ``max_length=s.max_length`` and ``**s.options`` scores it
    exactly as this one is scored, whatever files its own folder holds (an experiment scores its
    domain model with the ranker's settings this way)."""

    kind: str
    max_length: int
    max_length_from: str  # "the caller", a file of the checkpoint folder, or "the default"
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self, origin: str | None = None) -> str:
        """``max length 256 (sentence_bert_config.json), normalize True, pooling cls, …``; ``origin``
        replaces the wording of where the maximum length came from."""
        opts = "".join(f", {k} {v}" for k, v in sorted(self.options.items()) if v is not None)
        return f"max length {self.max_length} ({origin or self.max_length_from}){opts}"


def scoring_settings(
    model: str | os.PathLike[str],
    kind: str,
    *,
    max_length: int | None = None,
    revision: str | None = None,
    **options: Any,
) -> ScoringSettings:
    """The :class:`ScoringSettings` :func:`load_reranker` would use for a checkpoint, read from its
    config and small JSON files only (no weights are loaded).

    Args:
        model: a checkpoint directory or a hub id (at ``revision``).
        kind: one of :data:`KINDS`; checked against the checkpoint's architecture.
        max_length: the maximum input length to use; ``None``: the model's own (a
            sentence-transformers folder's ``max_seq_length``), else :data:`DEFAULT_MAX_LENGTH`.
        **options: family options; those not given take the family's and the folder's defaults.

    Example::

        s = scoring_settings("sentence-transformers/all-MiniLM-L6-v2", "bi-encoder")
        s.max_length, s.max_length_from  # (256, 'sentence_bert_config.json')
    """
    cls = _check_arguments(kind, options, max_length, None)
    source = resolve_source(model)
    if revision is not None and source.local is None:
        source = Source(source.ref, None, revision)
    settings, _ = _inspect_checkpoint(cls, source, max_length, options)
    return settings


def load_reranker(
    model: str | os.PathLike[str] | torch.nn.Module,
    kind: str,
    *,
    tokenizer: str | os.PathLike[str] | PreTrainedTokenizerBase | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    max_tokens: int | None = None,
    quantize: str | None = None,
    **options: Any,
) -> Reranker:
    """Load a re-ranker of family ``kind`` from a checkpoint directory, a hub id, or a model in memory.

    Args:
        model: a directory, a hub id, or an already-loaded ``transformers`` model (``nn.Module``,
            used as is: not copied, so in-place weight updates such as an α sweep are seen).
        kind: one of :data:`KINDS`; checked against the model's architecture.
        tokenizer: a tokenizer object or its path; defaults to the checkpoint's own (required
            for a model in memory whose ``name_or_path`` holds no tokenizer).
        device: ``"auto"`` (CUDA if present, else MPS, else CPU; for a model in memory: where
            it is), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``. Resolved once
            (:func:`taskrank.devices.resolve_device`).
        dtype: ``None`` (float32; a model in memory keeps its dtype), ``"float32"``,
            ``"bfloat16"``, ``"float16"`` (GPU only).
        batch_size: pairs per forward pass; ``max_tokens`` replaces it with a padded-token budget.
        max_length: maximum input length in tokens, used as given; ``None`` (the default): the
            model's own (a sentence-transformers folder's ``max_seq_length``), else
            :data:`DEFAULT_MAX_LENGTH` (512). :func:`scoring_settings` tells the value beforehand.
        quantize: ``None``/``"none"``, or ``"int8"``: score through an int8 OpenVINO model
            converted from the float32 one (CPU only; monot5, cross-encoder, bi-encoder; the
            ``openvino`` extra). ``dtype="auto"`` is float32 then; bfloat16 and float16 are
            refused. A snapshot: later in-place weight updates are not seen
            (:mod:`taskrank.rerankers.quantize`).
        **options: family options, e.g. ``true_token``/``false_token`` (monot5),
            ``relevant_label`` (cross-encoder), ``pooling``/``normalize``/``similarity``
            (bi-encoder), ``max_document_length``/``max_query_length`` (query-likelihood).

    Example::

        rr = load_reranker("castorini/monot5-base-msmarco", "monot5", device="cuda", dtype="bfloat16")
        run = rr.rerank(bm25_run, corpus, queries, top_k=100)
    """
    import torch

    cls = _check_arguments(kind, options, max_length, max_tokens, batch_size)
    mode = check_quantize(quantize, kind)
    if mode != "none" and dtype is not None:  # int8 converts float32: auto is float32, bf16 refused now
        dtype = choose_scoring_dtype(dtype, mode).name
    if isinstance(model, torch.nn.Module):
        ready = _adopt(cls, model, tokenizer, device, dtype, max_length, max_tokens, options)
    elif isinstance(model, (str, os.PathLike)):
        ready = _load_checkpoint(cls, model, tokenizer, device, dtype, max_length, max_tokens, options)
    else:
        raise ConfigError(
            f"model must be a path, a hub id or a transformers model, got {type(model).__name__}"
        )
    reranker = cls(
        ready.model,
        ready.tokenizer,
        device=ready.device,
        batch_size=batch_size,
        max_length=ready.settings.max_length,
        max_tokens=max_tokens,
        source=ready.label,
        **ready.settings.options,
    )
    return quantize_reranker(reranker, mode)


@dataclass(frozen=True)
class _Ready:
    """A model on its device with its tokenizer and settings: what a family class is built from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    settings: ScoringSettings
    label: str


def _check_arguments(
    kind: str,
    options: Mapping[str, Any],
    max_length: int | None,
    max_tokens: int | None,
    batch_size: int | None = None,
) -> type[Reranker]:
    cls = reranker_class(kind)
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        valid = ", ".join(sorted(cls.options)) or "none"
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for kind {kind!r}; valid: {valid}")
    for name, value in (("batch_size", batch_size), ("max_length", max_length), ("max_tokens", max_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return cls


def _check_budget(max_tokens: int | None, max_length: int) -> None:
    if max_tokens is not None and max_tokens < max_length:
        raise ConfigError(f"max_tokens ({max_tokens}) must be at least max_length ({max_length})")


def _inspect_checkpoint(
    cls: type[Reranker], source: Source, max_length: int | None, options: Mapping[str, Any]
) -> tuple[ScoringSettings, Path | None]:
    """Read a checkpoint's config, check its family, and settle its scoring settings."""
    config = load_config(source)
    cls.check_family(architectures_of(config), config, source.label)
    return _settle(cls, source, config, max_length, options)


def _load_checkpoint(
    cls: type[Reranker],
    model: str | os.PathLike[str],
    tokenizer: str | os.PathLike[str] | PreTrainedTokenizerBase | None,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    max_length: int | None,
    max_tokens: int | None,
    options: Mapping[str, Any],
) -> _Ready:
    """A checkpoint directory or hub id: every check first, then the weights and the tokenizer."""
    import torch
    import transformers

    source = resolve_source(model)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    settings, location = _inspect_checkpoint(cls, source, max_length, options)
    _check_budget(max_tokens, settings.max_length)
    weights = location or source.local or source.ref
    what = f"{cls.kind} model from {source.label}"
    loaded = load_model(getattr(transformers, cls.auto_class), weights, torch_dtype or torch.float32, what)
    module: torch.nn.Module = loaded  # transformers' typing of PreTrainedModel.to misleads type checkers
    module.to(torch_device).eval()
    tok = load_tokenizer(tokenizer if tokenizer is not None else weights, source.label)
    logger.info(
        "loaded %s re-ranker %s on %s (%s; %s)",
        cls.kind,
        source.label,
        torch_device,
        loaded.dtype,
        settings.describe(),
    )
    return _Ready(loaded, tok, torch_device, settings, source.label)


def _adopt(
    cls: type[Reranker],
    model: torch.nn.Module,
    tokenizer: str | os.PathLike[str] | PreTrainedTokenizerBase | None,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    max_length: int | None,
    max_tokens: int | None,
    options: Mapping[str, Any],
) -> _Ready:
    """A model in memory, used as is: moved (in place) to the device and dtype asked for."""
    config = getattr(model, "config", None)
    if config is None:
        raise ModelError(f"{type(model).__name__} has no .config; pass a transformers model")
    label = f"<{type(model).__name__} in memory>"
    cls.check_family([type(model).__name__], config, label)
    current = next(model.parameters()).device
    auto_device = device is None or (isinstance(device, str) and device.strip().lower() == "auto")
    torch_device = current if auto_device else resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if tokenizer is None:
        name = getattr(config, "_name_or_path", "") or getattr(model, "name_or_path", "")
        if not name:
            raise ConfigError(f"{label}: pass tokenizer=..., the model does not say where it was loaded from")
        tokenizer = name
    tok = load_tokenizer(tokenizer, label)
    # nn.Module.to works in place: the caller's object is the one scored (α sweeps rely on it)
    if torch_dtype is not None:
        model.to(dtype=torch_dtype)
    model.to(torch_device).eval()
    name = getattr(config, "_name_or_path", "") or ""
    folder = Source(name, Path(name)) if name and Path(name).is_dir() else None
    settings, _ = _settle(cls, folder, config, max_length, options, label)
    _check_budget(max_tokens, settings.max_length)
    return _Ready(cast("PreTrainedModel", model), tok, torch_device, settings, label)


def _settle(
    cls: type[Reranker],
    folder: Source | None,
    config: PretrainedConfig,
    max_length: int | None,
    options: Mapping[str, Any],
    label: str | None = None,
) -> tuple[ScoringSettings, Path | None]:
    """The settings of a checkpoint whose family is checked, and where its weights are."""
    prepared = cls.prepare_options(folder, dict(options))
    location = prepared.pop("_model_location", None)
    own = prepared.pop("_max_length", None)
    if max_length is not None:
        length, origin = max_length, "the caller"
    elif own is not None:
        length, origin = own
    else:
        length, origin = DEFAULT_MAX_LENGTH, "the default"
    _check_positions(config, length, label or (folder.label if folder is not None else "the model"))
    settings = ScoringSettings(cls.kind, int(length), origin, {**cls.options, **prepared})
    return settings, location


def _check_positions(config: PretrainedConfig, max_length: int, label: str) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if (
        isinstance(limit, int)
        and getattr(config, "model_type", "") in _ABSOLUTE_POSITIONS
        and max_length > limit
    ):
        raise ConfigError(
            f"max_length {max_length} exceeds max_position_embeddings {limit} of {label}; "
            "use a smaller max_length (--max-length, scoring.max_length)"
        )


# model types with learned absolute positions (a longer input would index past the table)
_ABSOLUTE_POSITIONS = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "gpt2"})

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "KINDS",
    "QUANTIZE_MODES",
    "REGISTRY",
    "BiEncoderReranker",
    "CrossEncoderReranker",
    "MonoT5Reranker",
    "Packed",
    "QueryLikelihoodReranker",
    "Reranker",
    "ScoringSettings",
    "load_reranker",
    "plan_batches",
    "reranker_class",
    "resolve_device",
    "resolve_dtype",
    "scoring_settings",
    "select_candidates",
]
