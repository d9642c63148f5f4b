"""Bi-encoder re-ranking (Reimers & Gurevych, "Sentence-BERT", EMNLP 2019): query and document are
encoded separately, pooled, and compared by cosine similarity (or dot product).

Pooling, normalisation and the maximum sequence length are read from a sentence-transformers
folder (``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json``) when there
is one; explicit options (and an explicit ``max_length``) take precedence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import CheckpointError, ConfigError, ModelError
from .base import Reranker
from .batching import Packed
from .loading import Source

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "cls", "max")
SIMILARITIES = ("cosine", "dot")
_ST = "sentence_transformers.models."
# sentence-transformers pooling keys: legacy booleans and the newer single "pooling_mode"
_LEGACY_POOLING = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# head-bearing or generative architectures that are not plain encoders
_NOT_ENCODERS = ("ForConditionalGeneration", "ForCausalLM", "LMHeadModel", "Seq2SeqLM")


def _read_json(folder: Source, name: str) -> Any | None:
    """A JSON file of the checkpoint folder (local or hub), or None when it has none."""
    if folder.local is not None:
        path = folder.local / name
        if not path.is_file():
            return None
        label = str(path)
        text = path.read_text(encoding="utf-8")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            local = hf_hub_download(folder.ref, name, revision=folder.revision)
        except EntryNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {name} of {folder.ref}: {exc}") from exc
        label = f"{folder.ref}/{name}"
        text = Path(local).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{label} is not valid JSON: {exc}") from exc


def read_sentence_transformers(folder: Source) -> dict[str, Any]:
    """Pooling, normalisation, max_seq_length (and the file that gives it) and transformer
    sub-folder of a sentence-transformers folder; an empty dict when ``folder`` is a plain
    transformers checkpoint."""
    modules = _read_json(folder, "modules.json")
    if modules is None:
        return {}
    found: dict[str, Any] = {"normalize": False}
    for module in modules:
        kind = str(module.get("type", ""))
        path = str(module.get("path", ""))
        if kind == _ST + "Transformer":
            found["subdir"] = path
            name = f"{path}/sentence_bert_config.json" if path else "sentence_bert_config.json"
            bert_cfg = _read_json(folder, name)
            if bert_cfg and bert_cfg.get("max_seq_length"):
                found["max_seq_length"] = int(bert_cfg["max_seq_length"])
                found["max_seq_length_file"] = name
        elif kind == _ST + "Pooling":
            cfg = _read_json(folder, f"{path}/config.json")
            if cfg is None:
                raise CheckpointError(
                    f"{folder.label}: modules.json names {path}/config.json, which is missing"
                )
            mode = cfg.get("pooling_mode")
            modes = [mode] if isinstance(mode, str) else list(mode or [])
            modes += [name for key, name in _LEGACY_POOLING.items() if cfg.get(key)]
            modes = list(dict.fromkeys(modes))
            if len(modes) != 1 or modes[0] not in POOLINGS:
                raise ModelError(
                    f"{folder.label}/{path}/config.json asks for pooling {modes}; "
                    f"supported: one of {POOLINGS}"
                )
            found["pooling"] = modes[0]
        elif kind == _ST + "Normalize":
            found["normalize"] = True
        else:
            raise ModelError(
                f"{folder.label}/modules.json has module {kind!r}, which the bi-encoder cannot apply"
            )
    return found


class BiEncoderReranker(Reranker):
    """Score = similarity of the pooled embeddings of query and document.

    Each distinct query and document is encoded once (length-sorted batches), then all pairs
    are scored at once.

    Options: ``pooling`` (``mean``/``cls``/``max``; default from the folder, else mean),
    ``normalize`` (L2-normalise embeddings; default from the folder, else False),
    ``similarity`` (``cosine``/``dot``; default cosine).
    """

    kind: ClassVar[str] = "bi-encoder"
    auto_class: ClassVar[str] = "AutoModel"
    options: ClassVar[dict[str, Any]] = {"pooling": None, "normalize": None, "similarity": "cosine"}
    expects: ClassVar[str] = (
        "an encoder checkpoint (BertModel, RobertaModel, a sentence-transformers folder…)"
    )

    @classmethod
    def check_family(cls, architectures: Sequence[str], config: PretrainedConfig, source: str) -> None:
        encoder_only = not getattr(config, "is_encoder_decoder", False) or any(
            a.endswith("EncoderModel") for a in architectures
        )
        if not encoder_only or any(a.endswith(_NOT_ENCODERS) for a in architectures):
            raise cls.family_error(source, architectures, config)

    @classmethod
    def prepare_options(cls, source: Source | None, options: dict[str, Any]) -> dict[str, Any]:
        folder = read_sentence_transformers(source) if source is not None else {}
        if folder:
            logger.info("sentence-transformers folder %s: %s", source.label if source else "", folder)
        for key, fallback in (("pooling", "mean"), ("normalize", False)):
            if options.get(key) is None:
                options[key] = folder.get(key, fallback)
        options.setdefault("similarity", "cosine")
        if options["pooling"] not in POOLINGS:
            raise ConfigError(f"unknown pooling {options['pooling']!r}; valid: {', '.join(POOLINGS)}")
        if options["similarity"] not in SIMILARITIES:
            raise ConfigError(
                f"unknown similarity {options['similarity']!r}; valid: {', '.join(SIMILARITIES)}"
            )
        options["normalize"] = bool(options["normalize"])
        if folder.get("max_seq_length"):
            options["_max_length"] = (folder["max_seq_length"], folder["max_seq_length_file"])
        if folder.get("subdir") and source is not None and source.local is not None:
            options["_model_location"] = source.local / folder["subdir"]
        return options

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        # a model with a head (…ForMaskedLM) still yields token states from its base model
        self.encoder = getattr(model, "base_model", model)

    def tokenize(self, texts: Sequence[str]) -> Packed:
        """Token ids of each text, as :meth:`encode_texts` feeds them to the model (exposed for
        the batch plan of ``taskrank rerank --engine ray``, tests and benchmarks)."""
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, return_attention_mask=False
        )
        return Packed({name: enc[name] for name in ("input_ids", "token_type_ids") if name in enc})

    def encode_texts(self, texts: Sequence[str], progress: bool = False) -> torch.Tensor:
        """Embeddings of ``texts`` (rows in input order), pooled and normalised as configured."""
        import torch

        packed = self.tokenize(texts)
        pooled_rows: list[torch.Tensor] = []
        order: list[np.ndarray] = []
        pooling = self.config["pooling"]
        unit = self.config["normalize"] or self.config["similarity"] == "cosine"
        with torch.inference_mode():
            for rows, inputs in self.iter_batches(packed, progress=progress, description="bi-encoder"):
                states = self.encoder(**inputs).last_hidden_state.float()
                mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)
                if pooling == "cls":
                    pooled = states[:, 0]
                elif pooling == "max":
                    pooled = states.masked_fill(mask == 0, float("-inf")).amax(dim=1)
                else:
                    pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled_rows.append(torch.nn.functional.normalize(pooled, dim=-1) if unit else pooled)
                order.append(rows)
            embeddings = torch.cat(pooled_rows)
            out = torch.empty_like(embeddings)
            out[torch.from_numpy(np.concatenate(order)).to(out.device)] = embeddings
        return out

    def _score(self, queries: Sequence[str], documents: Sequence[str], progress: bool) -> np.ndarray:
        import torch

        texts = list(dict.fromkeys([*queries, *documents]))
        index = {text: i for i, text in enumerate(texts)}
        with torch.inference_mode():
            emb = self.encode_texts(texts, progress=progress)
            q = torch.as_tensor([index[t] for t in queries], device=emb.device)
            d = torch.as_tensor([index[t] for t in documents], device=emb.device)
            scores = (emb[q] * emb[d]).sum(dim=-1)
        return scores.cpu().numpy().astype(np.float64)
