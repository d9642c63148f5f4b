from __future__ import annotations

import json

import pytest
from transformers import AutoConfig, AutoModel, AutoTokenizer

from taskrank.errors import ConfigError
from taskrank.tiny import tiny_config, tokenizer_for


def test_trios_load_with_auto_classes(t5_trio, bert_trio, llama_trio):
    for trio in (t5_trio, bert_trio, llama_trio):
        for path in trio.values():
            cfg = AutoConfig.from_pretrained(path)
            assert cfg.architectures, path
            tok = AutoTokenizer.from_pretrained(path)
            assert len(tok) == cfg.vocab_size
            AutoModel.from_pretrained(path)


def test_t5_tokenizer_has_ranking_tokens_and_sentinels(t5_trio):
    tok = AutoTokenizer.from_pretrained(t5_trio["ranker"])
    ids = tok.convert_tokens_to_ids(["▁true", "▁false", "▁yes", "▁no", "<extra_id_0>"])
    assert tok.unk_token_id not in ids
    assert ids[-1] == len(tok) - 1, "T5 puts <extra_id_0> last"
    pieces = tok.convert_ids_to_tokens(tok("Query: cell Document: protein Relevant:").input_ids)
    assert pieces[:2] == ["▁Query", ":"] and pieces[-1] == "</s>"


def test_cross_encoder_config(bert_trio):
    cfg = json.loads((bert_trio["ranker"] / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"]
    assert AutoConfig.from_pretrained(bert_trio["ranker"]).num_labels == 1


def test_unknown_architecture_is_an_error():
    with pytest.raises(ConfigError, match="valid"):
        tokenizer_for("GPT2LMHeadModel")
    with pytest.raises(ConfigError, match="GPT2"):
        tiny_config("GPT2LMHeadModel", 10)
