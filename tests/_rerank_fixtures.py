"""Reference scorers for the re-ranker tests: one direct, unbatched forward pass per pair,
written from the paper's description without any of taskrank's batching or tokenization code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

PAIRS = [
    ("cell protein", "the gene of the cancer virus in a patient"),
    ("what is a drug dose", "dose of the drug in the clinical trial of the treatment " * 4),
    ("immune", "immune cell"),
    ("football in the city", "market price of the river and the mountain forest"),
    ("cell protein", "weather"),
    ("law court", "the king and the court of law in the history of war"),
]


@torch.inference_mode()
def monot5_reference(
    path: Path, pairs, true_token: str = "▁true", false_token: str = "▁false"
) -> list[float]:
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=torch.float32).eval()
    true_id, false_id = tok.convert_tokens_to_ids([true_token, false_token])
    out = []
    for query, doc in pairs:
        ids = tok(f"Query: {query} Document: {doc} Relevant:", return_tensors="pt").input_ids
        start = torch.tensor([[model.config.decoder_start_token_id]])
        logits = model(input_ids=ids, decoder_input_ids=start).logits[0, 0]
        out.append(torch.log_softmax(logits[[true_id, false_id]], dim=-1)[0].item())
    return out


@torch.inference_mode()
def cross_encoder_reference(path: Path, pairs, label: int = 0) -> list[float]:
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    return [model(**tok(q, d, return_tensors="pt")).logits[0, label].item() for q, d in pairs]


@torch.inference_mode()
def bi_encoder_reference(path: Path, pairs, pooling: str = "mean") -> list[float]:
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()

    def embed(text: str) -> torch.Tensor:
        states = model(**tok(text, return_tensors="pt")).last_hidden_state[0]
        return {"mean": states.mean(0), "cls": states[0], "max": states.max(0).values}[pooling]

    return [torch.cosine_similarity(embed(q), embed(d), dim=0).item() for q, d in pairs]


@torch.inference_mode()
def query_likelihood_reference(path: Path, pairs) -> list[float]:
    """The paper's recipe: prompt ``Document: {doc} Query:`` + query; the prompt's own
    tokens are masked and the query tokens' log-probabilities averaged."""
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    for query, doc in pairs:
        source = f"Document: {doc} Query:"
        full = tok(source + query).input_ids
        n_source = len(tok(source).input_ids)
        assert full[:n_source] == tok(source).input_ids
        logits = model(torch.tensor([full])).logits[0]
        logp = torch.log_softmax(logits[n_source - 1 : len(full) - 1], dim=-1)
        targets = torch.tensor(full[n_source:])
        out.append(logp.gather(-1, targets[:, None]).mean().item())
    return out


def sentence_transformers_folder(
    base: Path, out: Path, *, pooling: str = "cls", normalize: bool = True, max_seq_length: int = 16
) -> Path:
    """A sentence-transformers folder around a tiny BertModel (modules.json, pooling, normalize)."""
    shutil.copytree(base, out)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    modules.append(
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    )
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "1_Pooling").mkdir()
    flags = {
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
    }
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **flags}))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return out
