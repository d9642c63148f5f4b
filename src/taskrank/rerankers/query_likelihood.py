"""Query-likelihood re-ranking with a causal LM, as RankingGPT (Zhang et al., "RankingGPT: Empowering
Large Language Models in Text Ranking with Progressive Enhancement", 2023) and Braga et al. (SIGIR 2025):
the score is the mean log-probability of the query tokens given ``Document: {document} Query:``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ConfigError, ModelError
from .base import Reranker
from .batching import Packed
from .loading import Source
from .monot5 import template_segments

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

# The authors' scoring code appends the query to "Query:" with no separator; the default keeps
# that exact string so that scores match theirs.
DEFAULT_TEMPLATE = "Document: {document} Query:{query}"


class QueryLikelihoodReranker(Reranker):
    """Score = mean log P(query token | document prompt, earlier query tokens).

    The document is truncated to ``max_document_length`` tokens (256) and the query to
    ``max_query_length`` (128) before the prompt is built, as in the paper; truncation cuts
    the text at a token boundary. Needs a fast tokenizer (offsets locate the query tokens).

    Options: ``max_document_length``, ``max_query_length``, ``template`` (``{document}`` then
    ``{query}``, the query last).
    """

    kind: ClassVar[str] = "query-likelihood"
    auto_class: ClassVar[str] = "AutoModelForCausalLM"
    options: ClassVar[dict[str, Any]] = {
        "max_document_length": 256,
        "max_query_length": 128,
        "template": DEFAULT_TEMPLATE,
    }
    expects: ClassVar[str] = "a decoder-only ...ForCausalLM checkpoint (Llama, Mistral, GPT-2…)"

    @classmethod
    def check_family(cls, architectures: Sequence[str], config: PretrainedConfig, source: str) -> None:
        if getattr(config, "is_encoder_decoder", False) or not any(
            a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures
        ):
            raise cls.family_error(source, architectures, config)

    @classmethod
    def prepare_options(cls, source: Source | None, options: dict[str, Any]) -> dict[str, Any]:
        template = str(options.get("template", DEFAULT_TEMPLATE))
        segments = template_segments(template, ("document", "query"))
        if segments[-1] is not None:
            raise ConfigError(f"query-likelihood template {template!r} must end with {{query}}")
        for key in ("max_document_length", "max_query_length"):
            value = options.get(key, cls.options[key])
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        return options

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(
                f"query-likelihood needs a fast tokenizer (offsets); {self.source} has a slow one"
            )
        doc_len, query_len = self.config["max_document_length"], self.config["max_query_length"]
        if doc_len + query_len > self.max_length:
            raise ConfigError(
                f"max_document_length {doc_len} + max_query_length {query_len} "
                f"exceed max_length {self.max_length}"
            )
        params = inspect.signature(model.forward).parameters
        self._keep_logits = "logits_to_keep" in params
        self._positions = "position_ids" in params

    def _cut(self, texts: list[str], limit: int) -> dict[str, str]:
        """Each text cut after its first ``limit`` tokens (at the end of the last kept token)."""
        enc = self.tokenizer(
            texts, add_special_tokens=False, truncation=True, max_length=limit, return_offsets_mapping=True
        )
        out = {}
        for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"], strict=True):
            out[text] = text[: offsets[-1][1]] if len(ids) == limit and offsets else text
        return out

    def encode(self, queries: Sequence[str], documents: Sequence[str]) -> tuple[Packed, np.ndarray]:
        """The model inputs and targets of each pair.

        Returns the prompt + query token ids without the last token (nothing reads its
        prediction), and a matrix of the query token ids right-aligned with ``-1`` on the left:
        the last ``k`` input positions of a row predict its last ``k`` targets.
        """
        docs = self._cut(list(dict.fromkeys(documents)), self.config["max_document_length"])
        qs = self._cut(list(dict.fromkeys(queries)), self.config["max_query_length"])
        head_template = str(self.config["template"]).split("{query}")[0]
        texts: list[str] = []
        starts: list[int] = []
        for query, document in zip(queries, documents, strict=True):
            head = head_template.format(document=docs[document])
            starts.append(len(head))
            texts.append(head + qs[query])
        enc = self.tokenizer(texts, return_offsets_mapping=True, return_special_tokens_mask=True)
        sequences: list[list[int]] = []
        targets: list[list[int]] = []
        for i, (ids, offsets, special) in enumerate(
            zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"], strict=True)
        ):
            last = max(j for j, s in enumerate(special) if not s)  # trailing special tokens dropped
            n_query = sum(1 for j in range(last + 1) if not special[j] and offsets[j][1] > starts[i])
            if n_query == 0 or n_query > last:
                raise ModelError(f"cannot locate the query tokens of pair {i} in the tokenized prompt")
            sequences.append(ids[:last])
            targets.append(ids[last + 1 - n_query : last + 1])
        width = max(len(t) for t in targets)
        matrix = np.full((len(targets), width), -1, dtype=np.int64)
        for i, t in enumerate(targets):
            matrix[i, width - len(t) :] = t
        return Packed({"input_ids": sequences}), matrix

    def _forward(self, inputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        import torch

        keep = target.shape[1]
        mask = inputs["attention_mask"]
        kwargs: dict[str, Any] = {
            "input_ids": inputs["input_ids"],
            "attention_mask": mask,
            "use_cache": False,
        }
        if self._positions:  # left padding: positions count real tokens only
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        if self._keep_logits:  # the LM head runs on the query positions only
            kwargs["logits_to_keep"] = keep
        logits = self.model(**kwargs).logits[:, -keep:].float()
        valid = target >= 0
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (logp * valid).sum(-1) / valid.sum(-1)

    def _score(self, queries: Sequence[str], documents: Sequence[str], progress: bool) -> np.ndarray:
        import torch

        packed, targets = self.encode(queries, documents)
        counts = (targets >= 0).sum(axis=1)
        outputs: list[torch.Tensor] = []
        order: list[np.ndarray] = []
        with torch.inference_mode():
            for rows, inputs in self.iter_batches(
                packed, progress=progress, description="query-likelihood", left=True
            ):
                keep = int(counts[rows].max())
                target = torch.from_numpy(targets[rows, -keep:]).to(self.device)
                outputs.append(self._forward(inputs, target).float())
                order.append(rows)
            scores = np.empty(len(packed), dtype=np.float64)
            scores[np.concatenate(order)] = torch.cat(outputs).cpu().numpy()
        return scores
