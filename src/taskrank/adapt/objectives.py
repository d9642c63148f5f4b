"""Self-supervised objectives for continued pre-training, chosen from a checkpoint's config.

* ``mlm``: masked-language modelling for encoders (BERT, RoBERTa, MiniLM, ...), through
  ``transformers.DataCollatorForLanguageModeling``;
* ``span-corruption``: T5 span corruption with sentinel tokens for T5/mT5/UMT5, written here
  because transformers ships no collator for it (Raffel et al., "Exploring the Limits of
  Transfer Learning with a Unified Text-to-Text Transformer", JMLR 2020, section 3.1.4);
* ``causal-lm``: next-token prediction for decoders, ``DataCollatorForLanguageModeling(mlm=False)``.

The choice never looks at a model's name, only at ``model_type``, ``is_encoder_decoder`` and
``architectures``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ConfigError, ModelError
from ..tokenization import special_affixes

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

#: Objective name -> the ``transformers`` auto class whose head it trains.
OBJECTIVES: dict[str, str] = {
    "mlm": "AutoModelForMaskedLM",
    "span-corruption": "AutoModelForSeq2SeqLM",
    "causal-lm": "AutoModelForCausalLM",
}

#: Encoder-decoder model types pre-trained with T5 span corruption (they have sentinel tokens).
SPAN_CORRUPTION_MODEL_TYPES = frozenset({"t5", "mt5", "umt5", "longt5", "switch_transformers"})

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def describe_architecture(config: PretrainedConfig) -> str:
    """``architecture BertModel (model_type 'bert')``: how errors name a checkpoint's architecture."""
    archs = ", ".join(getattr(config, "architectures", None) or []) or "(none recorded)"
    return f"architecture {archs} (model_type {getattr(config, 'model_type', None)!r})"


def detect_objective(config: PretrainedConfig) -> str:
    """The pre-training objective that suits a ``transformers`` config.

    Encoder-decoders of the T5 family get ``span-corruption``; a config whose architecture is a
    causal LM, or whose model type only exists as a decoder, gets ``causal-lm``; encoders with a
    masked-LM head in transformers get ``mlm``. Anything else raises :class:`ModelError` naming
    the architecture.

    >>> from transformers import T5Config
    >>> detect_objective(T5Config())
    'span-corruption'
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    archs = list(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False):
        if model_type in SPAN_CORRUPTION_MODEL_TYPES:
            return "span-corruption"
        raise ModelError(
            f"no known pre-training objective for the encoder-decoder {describe_architecture(config)}; "
            f"span corruption supports model types {', '.join(sorted(SPAN_CORRUPTION_MODEL_TYPES))}"
        )
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and any(a.endswith(_CAUSAL_SUFFIXES) for a in archs):
        return "causal-lm"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "mlm"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal-lm"
    raise ModelError(
        f"no known pre-training objective for {describe_architecture(config)}; taskrank adapt trains "
        "encoders with a masked-LM head (mlm), T5-family encoder-decoders (span-corruption) and causal LMs "
        "(causal-lm)"
    )


def sentinel_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of ``<extra_id_0>``, ``<extra_id_1>``, ... in ``tokenizer``, in that order.

    Raises :class:`ModelError` when the tokenizer has none (span corruption needs them).
    """
    vocab = tokenizer.get_vocab()
    ids: list[int] = []
    while f"<extra_id_{len(ids)}>" in vocab:
        ids.append(vocab[f"<extra_id_{len(ids)}>"])
    if not ids:
        raise ModelError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} has no "
            "sentinel tokens <extra_id_0>, <extra_id_1>, ...; T5 span corruption needs them"
        )
    return ids


def _segment(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """Split ``total`` items into ``parts`` random positive lengths (uniform over compositions)."""
    if parts <= 1:
        return [total]
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]])).astype(int).tolist()


@dataclass
class SpanCorruptionCollator:
    """T5 span corruption: drop random spans from the input, ask the decoder to restore them.

    Each noise span is replaced in the input by one sentinel (``<extra_id_0>``, ``<extra_id_1>``,
    ...); the target lists each sentinel followed by the tokens it hides, then ``</s>``. As in
    T5, ``noise_density`` of the tokens are noise, in spans of mean length
    ``mean_span_length``, and each example starts with kept tokens and ends with a noise span.
    Randomness comes only from the ``numpy.random.Generator`` passed in, so batches are
    reproducible.

    >>> c = SpanCorruptionCollator(sentinels=[99, 98], pad_token_id=0, eos_token_id=1)
    >>> inputs, targets = c.corrupt([10, 11, 12, 13, 14, 15], np.random.default_rng(0))
    >>> inputs[-1], targets[0], targets[-1]
    (1, 99, 1)
    """

    sentinels: Sequence[int]
    pad_token_id: int
    eos_token_id: int
    noise_density: float = 0.15
    mean_span_length: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 < self.noise_density < 1.0:
            raise ConfigError(f"noise_density must lie in (0, 1), got {self.noise_density}")
        if self.mean_span_length < 1.0:
            raise ConfigError(f"mean_span_length must be at least 1, got {self.mean_span_length}")
        if not self.sentinels:
            raise ConfigError("span corruption needs at least one sentinel token id")

    def corrupt(self, ids: Sequence[int], rng: np.random.Generator) -> tuple[list[int], list[int]]:
        """Corrupt one token sequence (no special tokens): ``(input_ids, labels)``, both ending in EOS."""
        length = len(ids)
        if length == 0:
            raise ValueError("cannot corrupt an empty token sequence")
        num_noise = int(min(max(round(length * self.noise_density), 1), max(length - 1, 1)))
        num_kept = length - num_noise
        num_spans = round(num_noise / self.mean_span_length)
        num_spans = int(max(1, min(num_spans, num_noise, max(num_kept, 1), len(self.sentinels))))
        noise_lengths = _segment(num_noise, num_spans, rng)
        kept_lengths = _segment(num_kept, num_spans, rng) if num_kept else [0]
        inputs: list[int] = []
        targets: list[int] = []
        pos = 0
        for span, (kept, noise) in enumerate(zip(kept_lengths, noise_lengths, strict=True)):
            inputs.extend(ids[pos : pos + kept])
            pos += kept
            inputs.append(self.sentinels[span])
            targets.append(self.sentinels[span])
            targets.extend(ids[pos : pos + noise])
            pos += noise
        inputs.append(self.eos_token_id)
        targets.append(self.eos_token_id)
        return inputs, targets

    def __call__(
        self, examples: Sequence[Sequence[int]], rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        """A padded batch: ``input_ids``, ``attention_mask`` and ``labels`` (padding is -100)."""
        pairs = [self.corrupt(ids, rng) for ids in examples]
        width_in = max(len(i) for i, _ in pairs)
        width_out = max(len(t) for _, t in pairs)
        input_ids = torch.full((len(pairs), width_in), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(pairs), width_in), dtype=torch.long)
        labels = torch.full((len(pairs), width_out), -100, dtype=torch.long)
        for row, (inp, tgt) in enumerate(pairs):
            input_ids[row, : len(inp)] = torch.tensor(inp)
            attention[row, : len(inp)] = 1
            labels[row, : len(tgt)] = torch.tensor(tgt)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


BatchFn = Callable[[Sequence[Sequence[int]], int], Mapping[str, torch.Tensor]]


def make_batcher(
    objective: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    mlm_probability: float = 0.15,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
) -> BatchFn:
    """A function ``(token id lists without special tokens, seed) -> model inputs with labels``.

    The same lists and seed always give the same batch: every random choice is drawn from a
    generator made from ``seed`` (a ``numpy.random.Generator`` for span corruption, the
    collator's own ``torch.Generator`` for masking).
    """
    from transformers import DataCollatorForLanguageModeling

    if objective == "span-corruption":
        sentinels = sentinel_ids(tokenizer)
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ModelError("span corruption needs a tokenizer with a pad and an EOS token")
        collator = SpanCorruptionCollator(
            sentinels=sentinels,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            noise_density=noise_density,
            mean_span_length=mean_span_length,
        )

        def span_batch(examples: Sequence[Sequence[int]], seed: int) -> Mapping[str, torch.Tensor]:
            return collator(examples, np.random.default_rng(seed))

        return span_batch

    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    mlm = objective == "mlm"
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    if mlm and tokenizer.mask_token is None:
        raise ModelError(f"tokenizer {name!r} has no mask token; masked-LM training needs one")
    if tokenizer.pad_token_id is None:
        raise ModelError(f"tokenizer {name!r} has no pad token; set one to batch documents")
    if mlm and not 0.0 < mlm_probability < 1.0:
        raise ConfigError(f"mlm_probability must lie in (0, 1), got {mlm_probability}")

    prefix, suffix = special_affixes(tokenizer)

    def lm_batch(examples: Sequence[Sequence[int]], seed: int) -> Mapping[str, torch.Tensor]:
        # A fresh collator per batch: its generator then depends on this batch's seed alone.
        collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=mlm, mlm_probability=mlm_probability if mlm else None, seed=seed
        )
        features = [
            {
                "input_ids": [*prefix, *ids, *suffix],
                "special_tokens_mask": [1] * len(prefix) + [0] * len(ids) + [1] * len(suffix),
            }
            for ids in examples
        ]
        batch = collator(features)
        if "attention_mask" not in batch:
            batch["attention_mask"] = (batch["input_ids"] != tokenizer.pad_token_id).long()
        return batch

    return lm_batch
