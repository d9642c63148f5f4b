"""monoT5-style re-ranking with an encoder-decoder model (Nogueira et al., "Document Ranking with a
Pretrained Sequence-to-Sequence Model", Findings of EMNLP 2020), as used by Braga et al. (SIGIR 2025).

Input ``Query: {query} Document: {document} Relevant:``; the score is the log-probability of the
"true" token after a log-softmax over the (true, false) logits at the first decoder step.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ConfigError, ModelError
from ..tokenization import special_affixes
from .base import Reranker
from .batching import Packed
from .loading import Source

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_TEMPLATE = "Query: {query} Document: {document} Relevant:"


def template_segments(template: str, fields: tuple[str, str] = ("query", "document")) -> list[str | None]:
    """Split ``template`` into literal text and placeholders (``None`` marks a placeholder slot,
    in the order of ``fields``). Each field must appear exactly once, in that order."""
    parts: list[str | None] = []
    seen: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"bad template {template!r}: {exc}") from exc
    for literal, field, spec, conversion in parsed:
        if literal:
            parts.append(literal)
        if field is None:
            continue
        if field not in fields or spec or conversion:
            raise ConfigError(f"template {template!r} has unknown placeholder {{{field}}}; valid: {fields}")
        seen.append(field)
        parts.append(None)
    if seen != list(fields):
        wanted = " then ".join("{" + f + "}" for f in fields)
        raise ConfigError(f"template {template!r} must contain {wanted}, each once")
    return parts


def fit_pair(query_len: int, doc_len: int, room: int) -> tuple[int, int]:
    """Token counts kept for a (query, document) pair in ``room`` tokens: the document is cut
    first; the query only when it would take more than half of the room from a long document."""
    keep_query = min(query_len, room - min(doc_len, room // 2))
    return keep_query, min(doc_len, room - keep_query)


class MonoT5Reranker(Reranker):
    """Score = log P(true) after a log-softmax over the (true, false) logits at the first decoder step.

    Inputs are assembled from separately tokenized pieces (template words, query, document);
    for the word-level SentencePiece tokenizers of T5/mT5 this equals tokenizing the whole
    string. When an input would exceed ``max_length`` the document is truncated (then the
    query, see :func:`fit_pair`), never the trailing ``Relevant:``.

    Options: ``true_token`` (``"▁true"``), ``false_token`` (``"▁false"``); ``"▁yes"``/``"▁no"``
    for the mT5 rankers; ``template``.
    """

    kind: ClassVar[str] = "monot5"
    auto_class: ClassVar[str] = "AutoModelForSeq2SeqLM"
    options: ClassVar[dict[str, Any]] = {
        "true_token": "▁true",
        "false_token": "▁false",
        "template": DEFAULT_TEMPLATE,
    }
    expects: ClassVar[str] = "an encoder-decoder ...ForConditionalGeneration checkpoint (T5, mT5)"

    @classmethod
    def check_family(cls, architectures: Sequence[str], config: PretrainedConfig, source: str) -> None:
        if not getattr(config, "is_encoder_decoder", False) or not any(
            a.endswith("ForConditionalGeneration") for a in architectures
        ):
            raise cls.family_error(source, architectures, config)

    @classmethod
    def prepare_options(cls, source: Source | None, options: dict[str, Any]) -> dict[str, Any]:
        template_segments(str(options.get("template", DEFAULT_TEMPLATE)))
        return options

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        vocab_size = int(getattr(model.config, "vocab_size", 0) or 0)
        vocab = tokenizer.get_vocab()
        ids = []
        for option in ("true_token", "false_token"):
            token = self.config[option]
            token_id = vocab.get(token)
            if token_id is None or (vocab_size and token_id >= vocab_size):
                raise ModelError(
                    f"{option} {token!r} is not in the vocabulary of {self.source} "
                    "(monoT5 uses '▁true'/'▁false', the mT5 rankers '▁yes'/'▁no')"
                )
            ids.append(token_id)
        self.true_id, self.false_id = ids
        start = getattr(model.config, "decoder_start_token_id", None)
        if start is None:
            raise ModelError(f"{self.source} has no decoder_start_token_id in its config")
        self.decoder_start = int(start)
        self.segments = template_segments(str(self.config["template"]))
        self.prefix, self.suffix = special_affixes(tokenizer)

    def encode(self, queries: Sequence[str], documents: Sequence[str]) -> Packed:
        """Token ids of each pair's input (exposed for tests and benchmarks)."""
        tok = self.tokenizer
        uniq_q = list(dict.fromkeys(queries))
        uniq_d = list(dict.fromkeys(documents))
        q_ids = dict(zip(uniq_q, tok(uniq_q, add_special_tokens=False)["input_ids"], strict=True))
        d_ids = dict(zip(uniq_d, tok(uniq_d, add_special_tokens=False)["input_ids"], strict=True))
        literals = [s for s in self.segments if s is not None]
        lit_ids = dict(
            zip(
                literals,
                tok([s.strip() for s in literals], add_special_tokens=False)["input_ids"],
                strict=True,
            )
        )
        fixed = len(self.prefix) + len(self.suffix) + sum(len(v) for v in lit_ids.values())
        room = self.max_length - fixed
        if room < 2:
            raise ConfigError(f"max_length {self.max_length} leaves no room for query and document")
        sequences = []
        for query, document in zip(queries, documents, strict=True):
            q, d = q_ids[query], d_ids[document]
            keep_q, keep_d = fit_pair(len(q), len(d), room)
            fields = iter((q[:keep_q], d[:keep_d]))
            ids = list(self.prefix)
            for segment in self.segments:
                ids += next(fields) if segment is None else lit_ids[segment]
            sequences.append(ids + self.suffix)
        return Packed({"input_ids": sequences})

    def _forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch

        ids = inputs["input_ids"]
        decoder_ids = torch.full((ids.shape[0], 1), self.decoder_start, dtype=ids.dtype, device=ids.device)
        logits = self.model(
            input_ids=ids,
            attention_mask=inputs["attention_mask"],
            decoder_input_ids=decoder_ids,
            use_cache=False,
        ).logits[:, 0, [self.true_id, self.false_id]]
        return torch.log_softmax(logits.float(), dim=-1)[:, 0]

    def _score(self, queries: Sequence[str], documents: Sequence[str], progress: bool) -> np.ndarray:
        return self.run_batches(
            self.encode(queries, documents), self._forward, progress=progress, description="monoT5"
        )
