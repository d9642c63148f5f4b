"""Re-rankers: each family equals a direct unbatched forward pass; batching, order and truncation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from _rerank_fixtures import (
    PAIRS,
    bi_encoder_reference,
    cross_encoder_reference,
    monot5_reference,
    query_likelihood_reference,
    sentence_transformers_folder,
)
from taskrank.rerankers import KINDS, Packed, load_reranker, plan_batches
from taskrank.tiny import derive_checkpoint

ATOL = 1e-5


@pytest.fixture(scope="module")
def models(t5_trio, bert_trio, llama_trio):
    return {
        "monot5": t5_trio["ranker"],
        "cross-encoder": bert_trio["ranker"],
        "bi-encoder": bert_trio["pretrained"],
        "query-likelihood": llama_trio["ranker"],
    }


REFERENCES = {
    "monot5": monot5_reference,
    "cross-encoder": cross_encoder_reference,
    "bi-encoder": bi_encoder_reference,
    "query-likelihood": query_likelihood_reference,
}


def test_kinds_are_the_four_families():
    import typing

    from taskrank import config, vocabulary
    from taskrank.rerankers import REGISTRY

    assert set(KINDS) == {"monot5", "cross-encoder", "bi-encoder", "query-likelihood"}
    # the light list (command line, config) and the config's type agree with the registry
    assert vocabulary.KINDS == config.KINDS == KINDS == typing.get_args(config.Kind) == tuple(REGISTRY)


@pytest.mark.parametrize("kind", KINDS)
def test_scores_equal_unbatched_forward_pass(models, kind):
    scores = load_reranker(models[kind], kind, device="cpu", batch_size=4).score(PAIRS)
    expected = REFERENCES[kind](models[kind], PAIRS)
    assert scores.shape == (len(PAIRS),)
    np.testing.assert_allclose(scores, expected, atol=ATOL, rtol=0)
    # the pairs differ, so must their scores (a constant scorer would pass the line above only by luck)
    assert len(set(np.round(scores, 6))) > 1


@pytest.mark.parametrize("kind", KINDS)
def test_independent_of_batch_size_token_budget_and_order(models, kind):
    base = load_reranker(models[kind], kind, device="cpu", batch_size=32).score(PAIRS)
    one = load_reranker(models[kind], kind, device="cpu", batch_size=1).score(PAIRS)
    budget = load_reranker(models[kind], kind, device="cpu", max_tokens=512).score(PAIRS)
    perm = list(range(len(PAIRS)))
    random.Random(3).shuffle(perm)
    shuffled = load_reranker(models[kind], kind, device="cpu", batch_size=2).score([PAIRS[i] for i in perm])
    np.testing.assert_allclose(one, base, atol=ATOL, rtol=0)
    np.testing.assert_allclose(budget, base, atol=ATOL, rtol=0)
    np.testing.assert_allclose(shuffled, base[perm], atol=ATOL, rtol=0)
    # the padding a GPU uses (lengths rounded up to multiples of 8) changes nothing either
    rounded = load_reranker(models[kind], kind, device="cpu", batch_size=4)
    rounded.pad_to_multiple_of = 8
    np.testing.assert_allclose(rounded.score(PAIRS), base, atol=ATOL, rtol=0)


def test_monot5_yes_no_tokens(models):
    path = models["monot5"]
    scores = load_reranker(path, "monot5", device="cpu", true_token="▁yes", false_token="▁no").score(PAIRS)
    expected = monot5_reference(path, PAIRS, true_token="▁yes", false_token="▁no")
    np.testing.assert_allclose(scores, expected, atol=ATOL, rtol=0)
    default = load_reranker(path, "monot5", device="cpu").score(PAIRS)
    assert not np.allclose(scores, default)


def test_monot5_scores_are_log_probabilities(models):
    scores = load_reranker(models["monot5"], "monot5", device="cpu").score(PAIRS)
    assert np.all(scores < 0)


def test_monot5_truncates_the_document_keeps_the_prompt(models, tiny_words):
    path = models["monot5"]
    words = [w for w in tiny_words for _ in range(3)]  # every word is one token (▁word)
    query = "cell protein gene"
    # fixed tokens: ▁Query : ▁Document : ▁Relevant : </s> = 7; max_length 40 leaves 33, 3 for the query
    scores = load_reranker(path, "monot5", device="cpu", max_length=40).score([(query, " ".join(words))])
    expected = monot5_reference(path, [(query, " ".join(words[:30]))])
    np.testing.assert_allclose(scores, expected, atol=ATOL, rtol=0)
    # the query is cut too once it would take more than half of the room from a long document
    long_query = " ".join(words[::-1][:40])
    scores = load_reranker(path, "monot5", device="cpu", max_length=40).score([(long_query, " ".join(words))])
    expected = monot5_reference(path, [(" ".join(words[::-1][:17]), " ".join(words[:16]))])
    np.testing.assert_allclose(scores, expected, atol=ATOL, rtol=0)


def test_cross_encoder_truncates_to_max_length(models, tiny_words):
    path = models["cross-encoder"]
    words = list(tiny_words) * 2
    scores = load_reranker(path, "cross-encoder", device="cpu", max_length=24).score(
        [("cell", " ".join(words))]
    )
    # [CLS] cell [SEP] + 20 document words + [SEP]
    expected = cross_encoder_reference(path, [("cell", " ".join(words[:20]))])
    np.testing.assert_allclose(scores, expected, atol=ATOL, rtol=0)


def test_cross_encoder_two_labels(bert_trio, tmp_path):
    path = derive_checkpoint(
        bert_trio["pretrained"], tmp_path / "ce2", architecture="BertForSequenceClassification", num_labels=2
    )
    default = load_reranker(path, "cross-encoder", device="cpu").score(PAIRS)
    np.testing.assert_allclose(default, cross_encoder_reference(path, PAIRS, label=1), atol=ATOL, rtol=0)
    first = load_reranker(path, "cross-encoder", device="cpu", relevant_label=0).score(PAIRS)
    np.testing.assert_allclose(first, cross_encoder_reference(path, PAIRS, label=0), atol=ATOL, rtol=0)
    by_name = load_reranker(path, "cross-encoder", device="cpu", relevant_label="LABEL_0").score(PAIRS)
    np.testing.assert_allclose(by_name, first, atol=0, rtol=0)


def test_bi_encoder_reads_sentence_transformers_folder(bert_trio, tmp_path, tiny_words):
    folder = sentence_transformers_folder(
        bert_trio["pretrained"], tmp_path / "st", pooling="cls", max_seq_length=16
    )
    rr = load_reranker(folder, "bi-encoder", device="cpu")
    assert (rr.config["pooling"], rr.config["normalize"], rr.max_length) == ("cls", True, 16)
    short = [(q, d) for q, d in PAIRS if len(d.split()) < 10]
    np.testing.assert_allclose(
        rr.score(short), bi_encoder_reference(folder, short, pooling="cls"), atol=ATOL, rtol=0
    )
    # max_seq_length 16: [CLS] + 14 words + [SEP]
    words = list(tiny_words)
    expected = bi_encoder_reference(folder, [("cell", " ".join(words[:14]))], pooling="cls")
    np.testing.assert_allclose(rr.score([("cell", " ".join(words))]), expected, atol=ATOL, rtol=0)


def test_bi_encoder_options_pooling_and_dot(models):
    path = models["bi-encoder"]
    maxed = load_reranker(path, "bi-encoder", device="cpu", pooling="max").score(PAIRS)
    np.testing.assert_allclose(maxed, bi_encoder_reference(path, PAIRS, pooling="max"), atol=ATOL, rtol=0)
    cosine = load_reranker(path, "bi-encoder", device="cpu").score(PAIRS)
    dot = load_reranker(path, "bi-encoder", device="cpu", similarity="dot").score(PAIRS)
    normalized_dot = load_reranker(path, "bi-encoder", device="cpu", similarity="dot", normalize=True).score(
        PAIRS
    )
    assert not np.allclose(dot, cosine)
    np.testing.assert_allclose(normalized_dot, cosine, atol=ATOL, rtol=0)


def test_bi_encoder_encodes_each_distinct_text_once(models, monkeypatch):
    rr = load_reranker(models["bi-encoder"], "bi-encoder", device="cpu")
    seen: list[int] = []
    original = rr.encode_texts

    def spy(texts, progress=False):
        seen.append(len(texts))
        return original(texts, progress)

    monkeypatch.setattr(rr, "encode_texts", spy)
    rr.score([("cell", "immune cell"), ("cell", "weather"), ("gene", "immune cell")])
    assert seen == [4]  # cell, gene, immune cell, weather


def test_query_likelihood_truncates_document_and_query(models, tiny_words):
    path = models["query-likelihood"]
    words = [w for w in tiny_words for _ in range(9)]  # 324 one-token words
    query = " ".join(words[::-1][:150])
    rr = load_reranker(path, "query-likelihood", device="cpu")
    scores = rr.score([(query, " ".join(words))])
    expected = query_likelihood_reference(path, [(" ".join(words[::-1][:128]), " ".join(words[:256]))])
    np.testing.assert_allclose(scores, expected, atol=ATOL, rtol=0)
    small = load_reranker(path, "query-likelihood", device="cpu", max_document_length=5, max_query_length=3)
    expected = query_likelihood_reference(path, [(" ".join(words[::-1][:3]), " ".join(words[:5]))])
    np.testing.assert_allclose(small.score([(query, " ".join(words))]), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_model_in_memory_is_scored_without_copy(models, kind):
    path = models[kind]
    from_disk = load_reranker(path, kind, device="cpu").score(PAIRS)
    import transformers

    from taskrank.rerankers import reranker_class

    auto = getattr(transformers, reranker_class(kind).auto_class)
    model = auto.from_pretrained(path, dtype=torch.float32)
    rr = load_reranker(model, kind, tokenizer=AutoTokenizer.from_pretrained(path))
    assert rr.model is model
    np.testing.assert_allclose(rr.score(PAIRS), from_disk, atol=ATOL, rtol=0)
    # an in-place weight update (what an alpha sweep does) is seen by the same re-ranker
    param = next(p for n, p in model.named_parameters() if "embed" in n or "shared" in n)
    with torch.no_grad():
        saved = param.clone()
        param.mul_(1.5)
    assert not np.allclose(rr.score(PAIRS), from_disk, atol=1e-4)
    with torch.no_grad():
        param.copy_(saved)
    np.testing.assert_allclose(rr.score(PAIRS), from_disk, atol=ATOL, rtol=0)


def test_in_memory_tokenizer_defaults_to_name_or_path(models):
    model = AutoModelForSeq2SeqLM.from_pretrained(models["monot5"])
    rr = load_reranker(model, "monot5")
    np.testing.assert_allclose(rr.score(PAIRS), monot5_reference(models["monot5"], PAIRS), atol=ATOL, rtol=0)


def test_bfloat16_on_cpu_is_close(models):
    path = models["cross-encoder"]
    exact = load_reranker(path, "cross-encoder", device="cpu").score(PAIRS)
    rr = load_reranker(path, "cross-encoder", device="cpu", dtype="bf16")
    assert rr.model.dtype == torch.bfloat16
    np.testing.assert_allclose(rr.score(PAIRS), exact, atol=0.05, rtol=0)


def test_rerank_scores_top_k_with_title_and_text(models):
    path = models["cross-encoder"]
    corpus = {
        "d1": {"title": "Cell", "text": "protein gene"},
        "d2": {"title": "", "text": "football city"},
        "d3": {"title": "Weather", "text": ""},
        "d4": {"title": "Law", "text": "court"},
    }
    queries = {"q1": "cell protein", "q2": "law"}
    candidates = {"q1": {"d1": 3.0, "d2": 9.0, "d3": 1.0}, "q2": {"d4": 1.0, "d1": 1.0, "d2": 0.5}}
    rr = load_reranker(path, "cross-encoder", device="cpu")
    run = rr.rerank(candidates, corpus, queries, top_k=2, progress=False)
    # q1: the two best first-stage docs d2 (9) and d1 (3); q2: tie d1/d4 broken by id
    assert {q: set(d) for q, d in run.items()} == {"q1": {"d1", "d2"}, "q2": {"d1", "d4"}}
    expected = cross_encoder_reference(
        path,
        [("cell protein", "Cell protein gene"), ("cell protein", "football city"), ("law", "Law court")],
    )
    got = [run["q1"]["d1"], run["q1"]["d2"], run["q2"]["d4"]]
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_plan_batches_sorts_by_length_and_respects_budget():
    lengths = np.array([5, 50, 7, 50, 20])
    assert [b.tolist() for b in plan_batches(lengths, batch_size=2)] == [[1, 3], [4, 2], [0]]
    budget = plan_batches(lengths, batch_size=99, max_tokens=100)
    assert [b.tolist() for b in budget] == [[1, 3], [4, 2, 0]]
    assert all(len(b) * lengths[b].max() <= 100 for b in budget)


def test_packed_pads_right_and_left():
    packed = Packed({"input_ids": [[1, 2, 3], [4], [5, 6]], "token_type_ids": [[0, 1, 1], [0], [0, 1]]})
    right = packed.pad(np.array([0, 1]), {"input_ids": 9})
    assert right["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert right["token_type_ids"].tolist() == [[0, 1, 1], [0, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    left = packed.pad(np.array([2, 1]), {"input_ids": 9}, left=True)
    assert left["input_ids"].tolist() == [[5, 6], [9, 4]]
    assert left["attention_mask"].tolist() == [[1, 1], [0, 1]]
    rounded = packed.pad(np.array([0, 2]), {"input_ids": 9}, multiple=4)
    assert rounded["input_ids"].tolist() == [[1, 2, 3, 9], [5, 6, 9, 9]]
    assert rounded["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]


def test_score_of_no_pairs_is_empty(models):
    rr = load_reranker(models["cross-encoder"], "cross-encoder", device="cpu")
    assert rr.score([]).shape == (0,)


def test_alpha_sweep_in_memory_matches_merged_checkpoint(t5_trio, tmp_path):
    """The merge engine hands over a model in memory: scores follow its in-place α updates and
    equal those of the same merge written to disk."""
    from taskrank.arithmetic import AlphaSweep, TaskVector, merge

    model = AutoModelForSeq2SeqLM.from_pretrained(t5_trio["ranker"], dtype=torch.float32)
    rr = load_reranker(model, "monot5", tokenizer=AutoTokenizer.from_pretrained(t5_trio["ranker"]))
    plain = rr.score(PAIRS)
    sweep = AlphaSweep(model, TaskVector.from_checkpoints(t5_trio["domain"], t5_trio["pretrained"]))
    sweep.set_alpha(0.7)
    swept = rr.score(PAIRS)
    merged = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], 0.7, out=tmp_path / "m")
    np.testing.assert_allclose(swept, load_reranker(merged.path, "monot5").score(PAIRS), atol=ATOL, rtol=0)
    assert not np.allclose(swept, plain, atol=1e-4)
    sweep.set_alpha(0.0)
    np.testing.assert_array_equal(rr.score(PAIRS), plain)
