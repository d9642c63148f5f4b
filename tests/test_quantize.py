"""``load_reranker(..., quantize="int8")`` (issue 16): the int8 OpenVINO path runs for every
family it supports, its scores stay within a bound of float32's on the tiny models, and every
request it cannot serve is refused before or instead of a silent float32 run."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
import torch

from _rerank_fixtures import PAIRS, sentence_transformers_folder
from taskrank.errors import ConfigError, ModelError
from taskrank.rerankers import load_reranker
from taskrank.rerankers.quantize import OpenVINOModel, check_quantize, quantize_reranker

pytestmark = pytest.mark.usefixtures("one_thread")

#: The bound on |int8 - float32| per family, in each family's own score unit (log P(true), logit,
#: cosine). Measured on these tiny models: 0.028 (fp32 scores spread over 0.77), 0.0010 (over
#: 0.0073) and 0.0004 (over 0.075); their hidden size of 32 is one activation group, so int8
#: rounds coarser here than on real models (monoT5-base shape: 0.014; MiniLM: 0.002 and 0.011).
TOLERANCE = {"monot5": 0.06, "cross-encoder": 5e-3, "bi-encoder": 5e-3}


@pytest.fixture(scope="module")
def openvino():
    return pytest.importorskip("openvino"), pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def bi_encoder_folder(bert_trio, tmp_path_factory):
    return sentence_transformers_folder(
        bert_trio["pretrained"], tmp_path_factory.mktemp("st") / "bi", pooling="mean", max_seq_length=64
    )


def _models(t5_trio, bert_trio, bi_encoder_folder):
    return {
        "monot5": t5_trio["ranker"],
        "cross-encoder": bert_trio["ranker"],
        "bi-encoder": bi_encoder_folder,
    }


@pytest.mark.parametrize("kind", ["monot5", "cross-encoder", "bi-encoder"])
def test_int8_runs_and_stays_close_to_float32(openvino, kind, t5_trio, bert_trio, bi_encoder_folder):
    path = _models(t5_trio, bert_trio, bi_encoder_folder)[kind]
    pairs = PAIRS * 3  # batch_size 4: several batches, so a reused output buffer would show
    reference = load_reranker(path, kind, device="cpu", batch_size=4).score(pairs)
    quantized = load_reranker(path, kind, device="cpu", batch_size=4, quantize="int8")
    assert isinstance(quantized.model, OpenVINOModel)  # scored by OpenVINO, not torch
    assert quantized.model.convert_seconds > 0
    scores = quantized.score(pairs)
    error = np.abs(scores - reference)
    spread = float(np.ptp(reference))
    assert error.max() <= TOLERANCE[kind], (error.max(), spread)
    assert not np.array_equal(scores, reference)  # int8 really ran: float32 would be bit-equal
    # the ranking of well-separated scores is unchanged
    order = np.argsort(reference)
    for low, high in itertools.pairwise(order):
        if reference[high] - reference[low] > 2 * TOLERANCE[kind]:
            assert scores[high] > scores[low]


def test_int8_scores_do_not_depend_on_the_batching(openvino, bert_trio):
    path = bert_trio["ranker"]
    one = load_reranker(path, "cross-encoder", device="cpu", batch_size=1, quantize="int8").score(PAIRS)
    many = load_reranker(path, "cross-encoder", device="cpu", batch_size=32, quantize="int8").score(PAIRS)
    np.testing.assert_allclose(one, many, atol=TOLERANCE["cross-encoder"] / 5)


def test_a_model_in_memory_is_converted_as_a_snapshot(openvino, bert_trio):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(bert_trio["ranker"])
    rr = load_reranker(model, "cross-encoder", tokenizer=str(bert_trio["ranker"]), quantize="int8")
    assert isinstance(rr.model, OpenVINOModel)
    assert isinstance(model, torch.nn.Module) and next(model.parameters()).dtype == torch.float32
    assert np.all(np.isfinite(rr.score(PAIRS)))


def test_none_leaves_the_reranker_as_loaded(bert_trio):
    rr = load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu", quantize="none")
    assert isinstance(rr.model, torch.nn.Module)
    assert check_quantize(None, "cross-encoder") == "none"
    assert check_quantize(" INT8 ", "monot5") == "int8"


def test_unknown_modes_and_unsupported_kinds_are_refused_before_loading(tmp_path):
    missing = tmp_path / "no-such-model"  # never read: the refusal comes first
    with pytest.raises(ConfigError, match=r"unknown quantize mode 'int4'; valid: none, int8"):
        load_reranker(missing, "cross-encoder", quantize="int4")
    with pytest.raises(ConfigError, match=r"supports kinds monot5, cross-encoder, bi-encoder, not 'query-l"):
        load_reranker(missing, "query-likelihood", quantize="int8")


def test_bfloat16_weights_are_refused(bert_trio, tmp_path):
    missing = tmp_path / "no-such-model"  # never read: a dtype given is refused before loading
    with pytest.raises(ConfigError, match=r"dtype bfloat16 cannot be used with quantize int8, which conv"):
        load_reranker(missing, "cross-encoder", device="cpu", dtype="bfloat16", quantize="int8")
    model = load_reranker(bert_trio["ranker"], "cross-encoder", dtype="bfloat16").model
    with pytest.raises(ConfigError, match=r"converts float32 weights; .* is in bfloat16"):
        load_reranker(model, "cross-encoder", tokenizer=str(bert_trio["ranker"]), quantize="int8")


def test_auto_is_float32_under_int8(openvino, monkeypatch, bert_trio):
    from taskrank import devices
    from taskrank.rerankers.quantize import choose_scoring_dtype

    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: "amx_bf16")  # auto alone: bfloat16
    assert choose_scoring_dtype("auto", "none").name == "bfloat16"
    assert choose_scoring_dtype("auto", "int8").describe() == (
        "float32 (auto: quantize int8 scores from float32 weights)"
    )
    rr = load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu", dtype="auto", quantize="int8")
    assert isinstance(rr.model, OpenVINOModel)


def test_a_quantized_copy_keeps_the_torch_model_and_a_cached_ir_scores_the_same(
    openvino, bert_trio, tmp_path
):
    from taskrank.rerankers.quantize import IRCache, quantized_copy

    rr = load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu", batch_size=4)
    cache = IRCache(tmp_path / "ir", {"model": "ranker"})
    first = quantized_copy(rr, "int8", cache=cache)
    assert isinstance(rr.model, torch.nn.Module) and isinstance(first.model, OpenVINOModel)
    assert not first.model.from_cache and cache.problem() is None
    second = quantized_copy(rr, "int8", cache=cache)
    assert second.model.from_cache
    np.testing.assert_array_equal(first.score(PAIRS), second.score(PAIRS))
    # the folder of other inputs (copied or renamed) is not used
    assert "made for other weights" in IRCache(tmp_path / "ir", {"model": "domain"}).problem()


def test_a_gpu_is_refused(bert_trio):
    rr = load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu")
    rr.device = torch.device("cuda")  # as loaded on a GPU; the refusal comes before any conversion
    with pytest.raises(ConfigError, match=r"runs on the CPU only, not on cuda"):
        quantize_reranker(rr, "int8")


def test_quantizing_twice_is_refused(openvino, bert_trio):
    rr = load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu", quantize="int8")
    with pytest.raises(ModelError, match=r"is already quantised \(OpenVINOModel\)"):
        quantize_reranker(rr, "int8")


def test_a_missing_openvino_names_the_extra(bert_trio, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(ModelError, match=r"needs OpenVINO and NNCF .*taskrank\[openvino\]"):
        load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu", quantize="int8")
