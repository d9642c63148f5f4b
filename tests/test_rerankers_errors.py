"""Re-rankers: every bad input is a clear TaskrankError raised before any scoring starts."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from taskrank.errors import CheckpointError, ConfigError, DataError, ModelError
from taskrank.rerankers import KINDS, load_reranker, resolve_device, resolve_dtype


@pytest.fixture(scope="module")
def ce(bert_trio):
    return load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu")


@pytest.fixture
def no_forward(ce, monkeypatch):
    """Fail the test if the model is ever run."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the model ran although the input was invalid")

    monkeypatch.setattr(ce.model, "forward", forbidden)
    return ce


CORPUS = {"d1": {"title": "Cell", "text": "protein"}, "d2": {"title": "", "text": "virus"}}
QUERIES = {"q1": "cell protein", "q2": "virus"}


def test_unknown_kind_lists_the_valid_ones(bert_trio):
    with pytest.raises(ConfigError) as err:
        load_reranker(bert_trio["ranker"], "colbert")
    assert "'colbert'" in str(err.value)
    for kind in KINDS:
        assert kind in str(err.value)


@pytest.mark.parametrize(
    ("trio", "member", "kind", "found"),
    [
        ("bert_trio", "pretrained", "monot5", "BertModel"),
        ("bert_trio", "domain", "cross-encoder", "BertForMaskedLM"),
        ("t5_trio", "ranker", "cross-encoder", "T5ForConditionalGeneration"),
        ("t5_trio", "ranker", "bi-encoder", "T5ForConditionalGeneration"),
        ("t5_trio", "ranker", "query-likelihood", "T5ForConditionalGeneration"),
        ("llama_trio", "ranker", "bi-encoder", "LlamaForCausalLM"),
        ("llama_trio", "ranker", "monot5", "LlamaForCausalLM"),
        ("bert_trio", "ranker", "query-likelihood", "BertForSequenceClassification"),
    ],
)
def test_checkpoint_of_the_wrong_family(request, trio, member, kind, found):
    path = request.getfixturevalue(trio)[member]
    with pytest.raises(ModelError) as err:
        load_reranker(path, kind, device="cpu")
    message = str(err.value)
    assert str(path) in message and found in message and repr(kind) in message


def test_model_in_memory_of_the_wrong_family(bert_trio):
    model = AutoModel.from_pretrained(bert_trio["pretrained"])
    with pytest.raises(ModelError, match="BertModel in memory.*'cross-encoder'"):
        load_reranker(
            model, "cross-encoder", tokenizer=AutoTokenizer.from_pretrained(bert_trio["pretrained"])
        )


def test_config_without_architectures_is_refused(bert_trio, tmp_path):
    import shutil

    path = shutil.copytree(bert_trio["ranker"], tmp_path / "noarch")
    config = json.loads((path / "config.json").read_text())
    del config["architectures"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="no 'architectures' entry"):
        load_reranker(path, "cross-encoder", device="cpu")


def test_missing_checkpoint_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_reranker(tmp_path / "nowhere" / "model", "monot5")


def test_unknown_hub_id_offline():
    with pytest.raises(CheckpointError, match="no-such-org/no-such-model"):
        load_reranker("no-such-org/no-such-model", "monot5", device="cpu")


def test_cuda_where_there_is_none(bert_trio, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ModelError, match="CUDA is not available"):
            load_reranker(bert_trio["ranker"], "cross-encoder", device=device)
    assert resolve_device("auto").type == "cpu"


def test_cuda_index_beyond_the_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ModelError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


def test_bad_device_and_dtype_names(bert_trio):
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        load_reranker(bert_trio["ranker"], "cross-encoder", device="gpu")
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu", dtype="int8")
    with pytest.raises(ConfigError, match="float16 is not supported on the CPU"):
        resolve_dtype("fp16", torch.device("cpu"))
    assert resolve_dtype("bf16", torch.device("cpu")) is torch.bfloat16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"max_length": -3}, "max_length must be a positive integer"),
        ({"max_tokens": 100}, r"max_tokens \(100\) must be at least max_length"),
        ({"true_token": "▁true"}, "unknown option.*true_token.*valid: relevant_label"),
        ({"relevant_label": 3}, "relevant_label 3 is out of range"),
        ({"relevant_label": "POSITIVE"}, "'POSITIVE' is not a label"),
        ({"max_length": 4096}, "exceeds max_position_embeddings 512"),
    ],
)
def test_bad_options(bert_trio, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu", **kwargs)


def test_monot5_token_missing_from_vocabulary(t5_trio):
    with pytest.raises(ModelError, match="true_token '▁sim' is not in the vocabulary"):
        load_reranker(t5_trio["ranker"], "monot5", device="cpu", true_token="▁sim", false_token="▁não")


def test_bad_templates(t5_trio, llama_trio):
    with pytest.raises(ConfigError, match=r"must contain \{query\} then \{document\}"):
        load_reranker(t5_trio["ranker"], "monot5", device="cpu", template="Document: {document}")
    with pytest.raises(ConfigError, match="unknown placeholder"):
        load_reranker(t5_trio["ranker"], "monot5", device="cpu", template="{query} {doc}")
    with pytest.raises(ConfigError, match=r"must end with \{query\}"):
        load_reranker(
            llama_trio["ranker"],
            "query-likelihood",
            device="cpu",
            template="Document: {document} Query:{query}.",
        )
    with pytest.raises(ConfigError, match="exceed max_length 64"):
        load_reranker(llama_trio["ranker"], "query-likelihood", device="cpu", max_length=64)


def test_bi_encoder_bad_options_and_folders(bert_trio, tmp_path):
    with pytest.raises(ConfigError, match="unknown pooling 'sum'"):
        load_reranker(bert_trio["pretrained"], "bi-encoder", pooling="sum")
    with pytest.raises(ConfigError, match="unknown similarity 'l2'"):
        load_reranker(bert_trio["pretrained"], "bi-encoder", similarity="l2")
    import shutil

    folder = shutil.copytree(bert_trio["pretrained"], tmp_path / "st")
    dense = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    dense.append({"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(dense))
    with pytest.raises(ModelError, match="modules.json has module 'sentence_transformers.models.Dense'"):
        load_reranker(folder, "bi-encoder")


@pytest.mark.usefixtures("no_forward")
def test_empty_query_or_document_in_pairs(ce):
    with pytest.raises(DataError, match=r"pair\(s\) 1, 2"):
        ce.score([("cell", "protein"), ("  ", "protein"), ("cell", "")])
    with pytest.raises(DataError, match="pair 0 is not a"):
        ce.score([("only one",)])


@pytest.mark.usefixtures("no_forward")
def test_missing_candidate_documents_are_listed(ce):
    candidates = {"q1": {"d1": 1.0, **{f"gone{i}": 0.5 for i in range(7)}}}
    with pytest.raises(DataError) as err:
        ce.rerank(candidates, CORPUS, QUERIES, progress=False)
    message = str(err.value)
    assert "7 candidate document id(s) are not in the corpus" in message
    assert "'gone0'" in message and "and 2 more" in message


@pytest.mark.usefixtures("no_forward")
def test_missing_query_empty_query_and_empty_document(ce):
    with pytest.raises(DataError, match="query id.*'q9'"):
        ce.rerank({"q9": {"d1": 1.0}}, CORPUS, QUERIES, progress=False)
    with pytest.raises(DataError, match="empty query text for query id.*'q1'"):
        ce.rerank({"q1": {"d1": 1.0}}, CORPUS, {"q1": " "}, progress=False)
    corpus = {**CORPUS, "d3": {"title": " ", "text": ""}}
    with pytest.raises(DataError, match="empty title and text for document id.*'d3'"):
        ce.rerank({"q1": {"d1": 1.0, "d3": 2.0}}, corpus, QUERIES, progress=False)
    with pytest.raises(ConfigError, match="top_k must be at least 1"):
        ce.rerank({"q1": {"d1": 1.0}}, CORPUS, QUERIES, top_k=0, progress=False)
