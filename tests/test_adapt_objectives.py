"""Objective choice from the config, and the batches each objective trains on (T5 sentinel structure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoTokenizer,
    BartConfig,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    MT5Config,
    RobertaConfig,
    T5Config,
    ViTConfig,
)

from taskrank.adapt import SpanCorruptionCollator, detect_objective, make_batcher, sentinel_ids
from taskrank.errors import ConfigError, ModelError
from taskrank.tokenization import special_affixes

SENTINELS = [999, 998, 997, 996, 995, 994, 993, 992]
EOS, PAD = 1, 0


def _config(cls, arch: str | None, **kw):
    cfg = cls(**kw)
    cfg.architectures = [arch] if arch else None
    return cfg


@pytest.mark.parametrize(
    ("config", "objective"),
    [
        (_config(T5Config, "T5ForConditionalGeneration"), "span-corruption"),
        (_config(MT5Config, "MT5ForConditionalGeneration"), "span-corruption"),
        (_config(BertConfig, "BertModel"), "mlm"),
        (_config(BertConfig, "BertForMaskedLM"), "mlm"),
        (_config(RobertaConfig, None), "mlm"),
        (_config(LlamaConfig, "LlamaForCausalLM"), "causal-lm"),
        (_config(GPT2Config, "GPT2LMHeadModel"), "causal-lm"),
        (_config(BertConfig, "BertLMHeadModel"), "causal-lm"),
    ],
)
def test_objective_follows_the_config(config, objective: str) -> None:
    assert detect_objective(config) == objective


def test_objective_ignores_the_name() -> None:
    cfg = _config(T5Config, "T5ForConditionalGeneration")
    cfg._name_or_path = "bert-base-uncased-llama"
    assert detect_objective(cfg) == "span-corruption"


def test_unknown_architectures_are_named() -> None:
    with pytest.raises(ModelError, match=r"encoder-decoder architecture BartForConditionalGeneration"):
        detect_objective(_config(BartConfig, "BartForConditionalGeneration"))
    with pytest.raises(ModelError, match=r"architecture ViTModel \(model_type 'vit'\)"):
        detect_objective(_config(ViTConfig, "ViTModel"))


def _check_structure(original: list[int], inputs: list[int], targets: list[int]) -> int:
    """Assert the T5 layout and return the number of spans."""
    assert inputs[-1] == EOS and targets[-1] == EOS
    in_sent = [t for t in inputs if t in SENTINELS]
    tg_sent = [t for t in targets if t in SENTINELS]
    k = len(in_sent)
    assert k >= 1
    assert in_sent == tg_sent == SENTINELS[:k]  # <extra_id_0>, <extra_id_1>, ... in order
    assert targets[0] == SENTINELS[0]  # the target opens with the first sentinel
    # every sentinel in the input hides at least one token
    spans: dict[int, list[int]] = {}
    current = None
    for tok in targets[:-1]:
        if tok in SENTINELS:
            current = tok
            spans[current] = []
        else:
            spans[current].append(tok)
    assert all(spans[s] for s in SENTINELS[:k])
    # putting the hidden spans back restores the original exactly
    restored: list[int] = []
    for tok in inputs[:-1]:
        restored.extend(spans[tok] if tok in SENTINELS else [tok])
    assert restored == original
    return k


def test_span_corruption_has_the_t5_sentinel_structure() -> None:
    collator = SpanCorruptionCollator(sentinels=SENTINELS, pad_token_id=PAD, eos_token_id=EOS)
    rng = np.random.default_rng(3)
    for length in (1, 2, 3, 7, 20, 64):
        original = list(range(10, 10 + length))
        inputs, targets = collator.corrupt(original, rng)
        _check_structure(original, inputs, targets)
        noise = len(targets) - 1 - sum(t in SENTINELS for t in targets)
        expected = min(max(round(length * 0.15), 1), max(length - 1, 1))
        assert noise == expected


def test_span_count_follows_the_mean_span_length_and_the_sentinel_supply() -> None:
    original = list(range(10, 110))  # 100 tokens, 15 noise, 5 spans of mean length 3
    collator = SpanCorruptionCollator(sentinels=SENTINELS, pad_token_id=PAD, eos_token_id=EOS)
    inputs, targets = collator.corrupt(original, np.random.default_rng(0))
    assert _check_structure(original, inputs, targets) == 5
    assert len(inputs) == 100 - 15 + 5 + 1
    assert inputs[0] == 10  # T5 starts with kept tokens
    assert targets[-2] == inputs[-3] + 1 or targets[-2] == 109  # and ends with a noise span
    few = SpanCorruptionCollator(sentinels=SENTINELS[:2], pad_token_id=PAD, eos_token_id=EOS)
    inputs, targets = few.corrupt(original, np.random.default_rng(0))
    assert _check_structure(original, inputs, targets) == 2


def test_span_corruption_is_seeded_by_the_generator() -> None:
    collator = SpanCorruptionCollator(sentinels=SENTINELS, pad_token_id=PAD, eos_token_id=EOS)
    ids = list(range(10, 60))
    a = collator.corrupt(ids, np.random.default_rng(7))
    b = collator.corrupt(ids, np.random.default_rng(7))
    draws = {tuple(collator.corrupt(ids, np.random.default_rng(s))[0]) for s in range(8)}
    assert a == b
    assert len(draws) > 1


def test_span_corruption_batch_pads_inputs_and_labels() -> None:
    collator = SpanCorruptionCollator(sentinels=SENTINELS, pad_token_id=PAD, eos_token_id=EOS)
    batch = collator([list(range(10, 40)), [10, 11, 12]], np.random.default_rng(0))
    assert batch["input_ids"].shape[0] == 2
    short_in = int(batch["attention_mask"][1].sum())
    assert (batch["input_ids"][1, short_in:] == PAD).all()
    assert batch["input_ids"][1, short_in - 1] == EOS
    short_out = int((batch["labels"][1] != -100).sum())
    assert (batch["labels"][1, short_out:] == -100).all()
    assert batch["labels"][1, short_out - 1] == EOS


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"noise_density": 0.0}, "noise_density"), ({"noise_density": 1.0}, "noise_density"),
     ({"mean_span_length": 0.5}, "mean_span_length"), ({"sentinels": []}, "sentinel")],
)  # fmt: skip
def test_span_corruption_rejects_bad_settings(kwargs: dict, key: str) -> None:
    base = {"sentinels": SENTINELS, "pad_token_id": PAD, "eos_token_id": EOS}
    with pytest.raises(ConfigError, match=key):
        SpanCorruptionCollator(**{**base, **kwargs})


def test_sentinels_of_the_t5_tokenizer(t5_trio: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(t5_trio["pretrained"])
    ids = sentinel_ids(tok)
    assert len(ids) == 8
    assert tok.convert_ids_to_tokens(ids[:2]) == ["<extra_id_0>", "<extra_id_1>"]
    assert ids[0] == len(tok) - 1  # <extra_id_0> has the last id, as in T5


def test_tokenizer_without_sentinels_cannot_do_span_corruption(bert_trio: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(bert_trio["pretrained"])
    with pytest.raises(ModelError, match="no sentinel tokens <extra_id_0>"):
        make_batcher("span-corruption", tok)


def test_special_affixes_follow_each_template(
    t5_trio: dict[str, Path], bert_trio: dict[str, Path], llama_trio: dict[str, Path]
) -> None:
    t5 = AutoTokenizer.from_pretrained(t5_trio["pretrained"])
    bert = AutoTokenizer.from_pretrained(bert_trio["pretrained"])
    llama = AutoTokenizer.from_pretrained(llama_trio["pretrained"])
    assert special_affixes(t5) == ([], [t5.eos_token_id])
    assert special_affixes(bert) == ([bert.cls_token_id], [bert.sep_token_id])
    assert special_affixes(llama) == ([llama.bos_token_id], [])


def test_mlm_batches_mask_only_document_tokens_and_are_seeded(bert_trio: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(bert_trio["pretrained"])
    batcher = make_batcher("mlm", tok, mlm_probability=0.5)
    docs = [
        tok("cell protein gene cancer virus patient treatment", add_special_tokens=False)["input_ids"]
    ] * 4
    docs.append(tok("dose drug", add_special_tokens=False)["input_ids"])
    a, b, c = batcher(docs, 1), batcher(docs, 1), batcher(docs, 2)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["labels"], c["labels"])
    masked = a["labels"] != -100
    assert masked.any()
    assert (a["labels"][masked] != tok.cls_token_id).all() and (a["labels"][masked] != tok.sep_token_id).all()
    assert (a["input_ids"][:, 0] == tok.cls_token_id).all()
    assert (a["input_ids"][masked] == tok.mask_token_id).any()
    assert a["attention_mask"][4].sum() == 4  # [CLS] dose drug [SEP], then padding


def test_causal_batches_predict_every_real_token(llama_trio: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(llama_trio["pretrained"])
    batcher = make_batcher("causal-lm", tok)
    long = tok("cell protein gene", add_special_tokens=False)["input_ids"]
    batch = batcher([long, long[:1]], 0)
    assert batch["input_ids"][0].tolist() == [tok.bos_token_id, *long]
    assert batch["labels"][0].tolist() == [tok.bos_token_id, *long]
    assert batch["labels"][1].tolist() == [tok.bos_token_id, long[0], -100, -100]
    assert batch["attention_mask"][1].tolist() == [1, 1, 0, 0]


def test_unknown_objective_and_bad_mlm_probability(bert_trio: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(bert_trio["pretrained"])
    with pytest.raises(
        ConfigError, match=r"unknown objective 'denoise'; valid: mlm, span-corruption, causal-lm"
    ):
        make_batcher("denoise", tok)
    with pytest.raises(ConfigError, match="mlm_probability"):
        make_batcher("mlm", tok, mlm_probability=1.5)
