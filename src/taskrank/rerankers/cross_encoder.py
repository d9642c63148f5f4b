"""Cross-encoder re-ranking with a sequence-classification model (Nogueira & Cho, "Passage
Re-ranking with BERT", 2019): the pair is encoded jointly and the relevant label's logit is the score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ConfigError
from .base import Reranker
from .batching import Packed

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase


class CrossEncoderReranker(Reranker):
    """Score = the logit of the relevant label (the only one for a one-label head).

    The pair goes through the tokenizer's own pair template (``[CLS] q [SEP] d [SEP]``) and
    its ``longest_first`` truncation to ``max_length``.

    Options: ``relevant_label``: index or name (``config.id2label``) of the relevant label;
    default 0 with one label, 1 with two; required with more.
    """

    kind: ClassVar[str] = "cross-encoder"
    auto_class: ClassVar[str] = "AutoModelForSequenceClassification"
    options: ClassVar[dict[str, Any]] = {"relevant_label": None}
    expects: ClassVar[str] = "a ...ForSequenceClassification checkpoint"

    @classmethod
    def check_family(cls, architectures: Sequence[str], config: PretrainedConfig, source: str) -> None:
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise cls.family_error(source, architectures, config)

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.label = self._label_index(model.config)

    def _label_index(self, config: PretrainedConfig) -> int:
        n = int(config.num_labels or 0)
        wanted = self.config["relevant_label"]
        if wanted is None:
            if n > 2:
                raise ConfigError(
                    f"{self.source} has {n} labels ({config.id2label}); pass relevant_label=<index or name>"
                )
            return n - 1
        if isinstance(wanted, str) and not wanted.lstrip("-").isdigit():
            names = {str(name): int(i) for i, name in (config.id2label or {}).items()}
            if wanted not in names:
                raise ConfigError(
                    f"relevant_label {wanted!r} is not a label of {self.source}; valid: {names}"
                )
            return names[wanted]
        index = int(wanted)
        if not 0 <= index < n:
            raise ConfigError(f"relevant_label {index} is out of range for {self.source} ({n} labels)")
        return index

    def encode(self, queries: Sequence[str], documents: Sequence[str]) -> Packed:
        """Token ids of each pair (exposed for tests and benchmarks)."""
        enc = self.tokenizer(
            list(queries),
            list(documents),
            truncation="longest_first",
            max_length=self.max_length,
            return_attention_mask=False,
        )
        return Packed({name: enc[name] for name in ("input_ids", "token_type_ids") if name in enc})

    def _forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**inputs).logits[:, self.label]

    def _score(self, queries: Sequence[str], documents: Sequence[str], progress: bool) -> np.ndarray:
        return self.run_batches(
            self.encode(queries, documents), self._forward, progress=progress, description="cross-encoder"
        )
