"""The task-vector engine: identities, selection, alignment, outputs, and every bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, BertForMaskedLM, BertModel

from taskrank.arithmetic import AlphaSweep, LayerSelection, TaskVector, layer_of, merge, merging, parse_layers
from taskrank.checkpoints import Checkpoint
from taskrank.errors import CheckpointError, MergeError, TaskrankError
from taskrank.tiny import build_tiny, derive_checkpoint


@pytest.fixture(autouse=True, params=["whole", "pieces"])
def pieces(request, monkeypatch) -> bool:
    """Every test here runs twice: as shipped, where the tiny models' tensors are each merged
    whole, and with pieces of 97 elements, so that a merge to disk works through every tensor
    in pieces (ragged last pieces, vocabulary boundaries inside a piece)."""
    if request.param == "pieces":
        monkeypatch.setattr(merging, "SPAN", 97)
    return request.param == "pieces"


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    index = json.loads((path / "model.safetensors.index.json").read_text())
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update(load_file(str(path / shard)))
    assert set(out) == set(index["weight_map"])
    return out


def raw(path: Path) -> dict[str, torch.Tensor]:
    ckpt = Checkpoint(path)
    return {k: ckpt.get(k) for k in ckpt.keys()}


def no_leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# --------------------------------------------------------------------------- identities


def test_alpha_zero_returns_the_ranker_bit_for_bit(t5_trio, tmp_path):
    res = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.0, out=tmp_path / "m")
    merged, ranker = load_dir(res.path), raw(t5_trio["ranker"])
    assert merged.keys() == ranker.keys()
    for k, v in ranker.items():
        assert torch.equal(merged[k], v), k
        assert merged[k].dtype == v.dtype


def test_ranker_equal_pretrained_and_alpha_one_gives_the_domain(t5_trio, tmp_path):
    res = merge(t5_trio["pretrained"], t5_trio["domain"], t5_trio["pretrained"], alpha=1.0)
    domain = raw(t5_trio["domain"])
    for k, v in res.state_dict.items():
        # float32 arithmetic: p + (d - p) is d up to one rounding of the difference
        torch.testing.assert_close(v, domain[k], rtol=0, atol=1e-6)
    assert res.report.unchanged == {}


def test_ranker_equal_pretrained_alpha_one_is_exact_in_bfloat16(tmp_path):
    p = build_tiny("BertModel", tmp_path / "p", seed=0, dtype="bfloat16")
    d = derive_checkpoint(p, tmp_path / "d", noise=0.1, seed=3)
    pre, dom = raw(p), raw(d)
    assert all(v.dtype == torch.bfloat16 for v in pre.values())
    res = merge(p, d, p, alpha=1.0)
    for k, v in res.state_dict.items():
        assert v.dtype == torch.bfloat16
        assert torch.equal(v, dom[k]), k


def test_vector_algebra(t5_trio, bert_trio):
    a = TaskVector.from_checkpoints(t5_trio["domain"], t5_trio["pretrained"])
    b = TaskVector.from_checkpoints(t5_trio["ranker"], t5_trio["pretrained"])
    key = "encoder.block.0.layer.1.DenseReluDense.wi.weight"
    assert torch.equal(((a + b) - b).get(key), a.get(key))
    assert torch.equal((-a).get(key), -a.get(key))
    assert torch.equal((a * 0.5).get(key), a.get(key) * 0.5)
    assert torch.equal((2 * a).get(key), a.get(key) * 2)
    total = sum([a, b])
    torch.testing.assert_close(total.get(key), a.get(key) + b.get(key), rtol=0, atol=1e-7)
    # the same identity with in-memory vectors (no folding of terms): equal up to rounding
    d, p = raw(t5_trio["domain"]), raw(t5_trio["pretrained"])
    a2 = TaskVector(d, p)
    b2 = TaskVector(raw(t5_trio["ranker"]), dict(p))
    torch.testing.assert_close(((a2 + b2) - b2).get(key), a2.get(key), rtol=0, atol=1e-6)


def test_vectors_are_lazy(t5_trio, monkeypatch):
    calls: list[str] = []
    original = Checkpoint._read  # every tensor read, whole or in pieces, goes through it
    monkeypatch.setattr(
        Checkpoint, "_read", lambda self, key, span: calls.append(key) or original(self, key, span)
    )
    a = TaskVector.from_checkpoints(t5_trio["domain"], t5_trio["pretrained"])
    v = 0.3 * (a + a) - a
    assert calls == []
    v.get("shared.weight")
    assert set(calls) == {"shared.weight"}


def test_sum_of_vectors_merge_matches_naive(t5_trio, tmp_path):
    a = TaskVector.from_checkpoints(t5_trio["domain"], t5_trio["pretrained"])
    b = TaskVector.from_checkpoints(t5_trio["ranker"], t5_trio["pretrained"])
    res = merge(t5_trio["ranker"], vector=0.5 * a - 0.25 * b, alpha=1.0)
    r, d, p = raw(t5_trio["ranker"]), raw(t5_trio["domain"]), raw(t5_trio["pretrained"])
    for k, v in res.state_dict.items():
        expected = r[k] + 0.5 * (d[k] - p[k]) - 0.25 * (r[k] - p[k])
        torch.testing.assert_close(v, expected, rtol=1e-6, atol=1e-6)
    assert res.report.alpha == [0.5, -0.25]


# --------------------------------------------------------------------------- selection


def test_layer_parsing_and_detection():
    assert parse_layers("0-3,11") == frozenset({0, 1, 2, 3, 11})
    assert parse_layers([2, 5]) == frozenset({2, 5})
    for bad in ("a", "3-1", "1,,2", "-1"):
        with pytest.raises(MergeError):
            parse_layers(bad)
    assert layer_of("encoder.block.3.layer.0.SelfAttention.q.weight") == 3
    assert layer_of("bert.encoder.layer.5.attention.self.query.weight") == 5
    assert layer_of("model.layers.7.mlp.up_proj.weight") == 7
    assert layer_of("transformer.h.2.attn.c_attn.weight") == 2
    assert layer_of("shared.weight") is None
    with pytest.raises(MergeError, match="valid: only, except"):
        LayerSelection.parse("1", mode="add")


@pytest.mark.parametrize("mode", ["only", "except"])
def test_selection_touches_exactly_the_intended_tensors(t5_trio, mode):
    res = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.8, layers="1", mode=mode)
    ranker = raw(t5_trio["ranker"])
    changed = {k for k, v in res.state_dict.items() if not torch.equal(v, ranker[k])}
    in_layer_1 = {k for k in ranker if re.search(r"\.block\.1\.", k)}
    expected = in_layer_1 if mode == "only" else set(ranker) - in_layer_1
    assert changed == expected
    assert set(res.report.merged) == expected
    assert set(res.report.unchanged) == set(ranker) - expected


def test_name_patterns(bert_trio):
    res = merge(
        bert_trio["ranker"], bert_trio["domain"], bert_trio["pretrained"], alpha=1.0,
        include=["*attention*"], exclude=["*output*"],
    )  # fmt: skip
    ranker = raw(bert_trio["ranker"])
    changed = {k for k, v in res.state_dict.items() if not torch.equal(v, ranker[k])}
    assert changed and all("attention" in k and "output" not in k for k in changed)
    expected = {k for k in ranker if "attention" in k and "output" not in k}
    assert changed == expected
    # patterns also match names without the base prefix (bert.)
    res2 = merge(
        bert_trio["ranker"], bert_trio["domain"], bert_trio["pretrained"], 1.0, include=["embeddings.*"]
    )
    assert set(res2.report.merged) == {k for k in ranker if k.startswith("bert.embeddings.")}


def test_selection_matching_nothing_is_an_error(t5_trio, tmp_path):
    with pytest.raises(MergeError, match=r"layer\(s\) 7 not found.*layers 0-1"):
        merge(
            t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], 1.0, layers="1,7", out=tmp_path / "o"
        )
    with pytest.raises(MergeError, match="matches no tensor"):
        merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], 1.0, include=["nothing.*"])
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- alignment


def test_cross_encoder_prefix_and_head_alignment(bert_trio):
    res = merge(bert_trio["ranker"], bert_trio["domain"], bert_trio["pretrained"], alpha=0.5)
    r, d, p = raw(bert_trio["ranker"]), raw(bert_trio["domain"]), raw(bert_trio["pretrained"])
    assert set(res.report.unchanged) == {
        "bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias",
    }  # fmt: skip
    assert all("no counterpart" in why for why in res.report.unchanged.values())
    assert any("cls.predictions" in k for k in res.report.unpaired)  # the MLM head, reported
    k = "bert.encoder.layer.1.attention.self.query.weight"
    kk = k.removeprefix("bert.")
    assert torch.equal(res.state_dict[k], r[k] + 0.5 * (d[k] - p[kk]))
    assert torch.equal(res.state_dict["classifier.weight"], r["classifier.weight"])


def test_tied_weights_updated_once_and_stay_tied(t5_trio, tmp_path):
    # A ranker saved the old way: the tied embedding stored under all its names.
    ranker = tmp_path / "ranker"
    shutil.copytree(t5_trio["ranker"], ranker)
    sd = load_file(str(ranker / "model.safetensors"))
    for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
        sd[alias] = sd["shared.weight"].clone()
    save_file(sd, str(ranker / "model.safetensors"), metadata={"format": "pt"})
    res = merge(ranker, t5_trio["domain"], t5_trio["pretrained"], alpha=0.7)
    out = res.state_dict
    for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(out[alias], out["shared.weight"]), alias
        assert alias in res.report.merged
    assert not torch.equal(out["shared.weight"], sd["shared.weight"])


def _save_bin(src: Path, dest: Path, shards: int) -> None:
    """A PyTorch-pickle checkpoint (transformers 5 only writes safetensors), optionally sharded."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.safetensors*"))
    sd = raw(src)
    if shards == 1:
        torch.save(sd, dest / "pytorch_model.bin")
        return
    keys = sorted(sd)
    weight_map = {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {k: sd[k] for k in keys[i::shards]}
        torch.save(part, dest / name)
        weight_map.update(dict.fromkeys(part, name))
    (dest / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_bin_and_sharded_inputs_match_safetensors(t5_trio, tmp_path):
    ranker, domain, pre = tmp_path / "ranker", tmp_path / "domain", tmp_path / "pretrained"
    _save_bin(t5_trio["ranker"], ranker, shards=3)  # sharded .bin
    AutoModelForSeq2SeqLM.from_pretrained(t5_trio["domain"]).save_pretrained(domain, max_shard_size="20KB")
    assert (domain / "model.safetensors.index.json").exists()  # sharded safetensors
    _save_bin(t5_trio["pretrained"], pre, shards=1)  # single .bin
    assert Checkpoint(ranker).format == "bin" and Checkpoint(pre).format == "bin"
    a = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.6).state_dict
    b = merge(ranker, domain, pre, alpha=0.6).state_dict
    c = load_dir(merge(ranker, domain, pre, alpha=0.6, out=tmp_path / "o").path)  # (in pieces)
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]), k


# --------------------------------------------------------------------------- outputs


def test_merged_directory_loads_and_matches_naive_merge(t5_trio, tmp_path):
    alpha = 0.7
    res = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=alpha, out=tmp_path / "m",
                max_shard_size="30KB")  # fmt: skip
    index = json.loads((res.path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1, "expected several shards"
    for name in ("config.json", "tokenizer.json", "README.md", "taskrank_merge.json"):
        assert (res.path / name).exists(), name
    with safe_open(str(res.path / sorted(set(index["weight_map"].values()))[0]), "pt") as f:
        assert f.metadata()["format"] == "pt"

    # naive: three full models in memory, whole state dicts
    ranker = AutoModelForSeq2SeqLM.from_pretrained(t5_trio["ranker"])
    dom = AutoModelForSeq2SeqLM.from_pretrained(t5_trio["domain"]).state_dict()
    pre = AutoModelForSeq2SeqLM.from_pretrained(t5_trio["pretrained"]).state_dict()
    naive = {k: v + alpha * (dom[k] - pre[k]) for k, v in ranker.state_dict().items()}
    ranker.load_state_dict(naive)
    merged = AutoModelForSeq2SeqLM.from_pretrained(res.path)
    got_sd = merged.state_dict()
    for k, v in ranker.state_dict().items():
        assert torch.equal(got_sd[k], v), k
    ids = torch.tensor([[5, 9, 11, 20, 1]])
    dec = torch.tensor([[0]])
    with torch.no_grad():
        expected = ranker(input_ids=ids, decoder_input_ids=dec).logits
        got = merged(input_ids=ids, decoder_input_ids=dec).logits
    # same weights; BLAS may pick another kernel for differently aligned buffers
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_large_tensors_are_read_and_written_in_pieces(t5_trio, tmp_path, monkeypatch):
    monkeypatch.setattr(merging, "SPAN", 97)
    reads: dict[tuple[str, str], list[tuple[int, int] | None]] = {}
    original = Checkpoint._read
    monkeypatch.setattr(
        Checkpoint,
        "_read",
        lambda self, k, span: reads.setdefault((self.ref, k), []).append(span) or original(self, k, span),
    )
    res = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.7, out=tmp_path / "m")
    shape = Checkpoint(t5_trio["ranker"]).shape("shared.weight")
    size = shape[0] * shape[1]
    for role in ("ranker", "domain", "pretrained"):
        spans = reads[(str(t5_trio[role]), "shared.weight")]
        # read front to back in pieces of at most 97 elements, each element once
        assert spans == [(start, min(start + 97, size)) for start in range(0, size, 97)], role
    assert all(span is not None and span[1] - span[0] <= 97 for spans in reads.values() for span in spans)
    in_memory = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.7).state_dict
    on_disk = load_dir(res.path)
    assert on_disk.keys() == in_memory.keys()
    for k, v in in_memory.items():
        assert torch.equal(on_disk[k], v), k


class _WholeOnly:
    """A source of the minimal protocol: it cannot read part of a tensor."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors, self.name, self.config = tensors, "whole-only", {}
        self.reads: list[str] = []

    def keys(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, key: object) -> bool:
        return key in self.tensors

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.tensors[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        return self.tensors[key].dtype

    def get(self, key: str) -> torch.Tensor:
        self.reads.append(key)
        return self.tensors[key]


def test_a_source_that_cannot_read_pieces_is_read_once_per_tensor(t5_trio, tmp_path, monkeypatch):
    monkeypatch.setattr(merging, "SPAN", 97)
    ranker = _WholeOnly(raw(t5_trio["ranker"]))
    res = merge(ranker, t5_trio["domain"], t5_trio["pretrained"], alpha=0.7, out=tmp_path / "m")
    assert sorted(ranker.reads) == sorted(ranker.tensors)  # whole tensors, each read once
    assert res.report.inputs["ranker"] == {"ref": "whole-only", "format": "_WholeOnly"}  # on the card
    expected = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.7).state_dict
    for k, v in load_dir(res.path).items():
        assert torch.equal(v, expected[k]), k


def test_cross_encoder_output_loads_and_matches_naive(bert_trio, tmp_path):
    res = merge(
        bert_trio["ranker"], bert_trio["domain"], bert_trio["pretrained"], alpha=0.4, out=tmp_path / "m"
    )
    merged = AutoModelForSequenceClassification.from_pretrained(res.path)
    ranker = AutoModelForSequenceClassification.from_pretrained(bert_trio["ranker"])
    dom = BertForMaskedLM.from_pretrained(bert_trio["domain"]).bert.state_dict()
    pre = BertModel.from_pretrained(bert_trio["pretrained"]).state_dict()
    sd = ranker.state_dict()
    for k in list(sd):
        kk = k.removeprefix("bert.")
        if k.startswith("bert.") and kk in dom and kk in pre and not kk.startswith("pooler"):
            sd[k] = sd[k] + 0.4 * (dom[kk] - pre[kk])
    ranker.load_state_dict(sd)
    got_sd = merged.state_dict()
    for k, v in ranker.state_dict().items():
        assert torch.equal(got_sd[k], v), k
    ids = torch.tensor([[2, 10, 11, 3, 12, 3]])
    with torch.no_grad():
        torch.testing.assert_close(
            merged(input_ids=ids).logits, ranker(input_ids=ids).logits, rtol=1e-6, atol=1e-6
        )


def test_model_card_records_the_recipe(t5_trio, tmp_path):
    res = merge(
        t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.7, layers="0", out=tmp_path / "m"
    )
    card = (res.path / "README.md").read_text()
    assert "θ_ranker + 0.7·(θ_domain − θ_pretrained)" in card
    assert "layers 0 (only)" in card
    assert Checkpoint(t5_trio["domain"]).sha256() in card
    assert "taskrank version" in card
    assert "decoder.block.1.layer.0.SelfAttention.q.weight" in card  # listed as unchanged
    meta = json.loads((res.path / "taskrank_merge.json").read_text())
    assert meta["alpha"] == [0.7] and meta["selection"]["layers"] == [0]
    assert meta["inputs"]["ranker"]["sha256"] == Checkpoint(t5_trio["ranker"]).sha256()


def test_dtype_of_output(tmp_path):
    p = build_tiny("BertModel", tmp_path / "p", seed=0, dtype="bfloat16")
    d = derive_checkpoint(p, tmp_path / "d", noise=0.1, seed=3)
    r = derive_checkpoint(p, tmp_path / "r", noise=0.1, seed=4)
    res = merge(r, d, p, alpha=0.5, out=tmp_path / "keep")
    assert all(v.dtype == torch.bfloat16 for v in load_dir(res.path).values())
    res = merge(r, d, p, alpha=0.5, dtype="float16", out=tmp_path / "fp16")
    assert all(v.dtype == torch.float16 for v in load_dir(res.path).values())
    assert json.loads((res.path / "config.json").read_text())["dtype"] == "float16"
    # arithmetic happened in float32: bf16 inputs, result rounded once
    rr, dd, pp = raw(r), raw(d), raw(p)
    k = "encoder.layer.0.attention.self.query.weight"
    expected = (rr[k].float() + 0.5 * (dd[k].float() - pp[k].float())).to(torch.float16)
    assert torch.equal(load_dir(res.path)[k], expected)


def test_merge_returns_state_dict_in_memory(t5_trio):
    res = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.2)
    assert res.path is None and res.state_dict is not None
    assert set(res.state_dict) == set(Checkpoint(t5_trio["ranker"]).keys())


def test_negative_alpha_is_allowed(t5_trio):
    r, d, p = raw(t5_trio["ranker"]), raw(t5_trio["domain"]), raw(t5_trio["pretrained"])
    out = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=-0.5).state_dict
    k = "shared.weight"
    assert torch.equal(out[k], r[k] + (-0.5) * (d[k] - p[k]))


# --------------------------------------------------------------------------- sentence-transformers


def test_sentence_transformers_folder_round_trip(tmp_path):
    from sentence_transformers import SentenceTransformer

    pre = build_tiny("BertModel", tmp_path / "pre", words=["cell"], seed=0)
    ranker = derive_checkpoint(pre, tmp_path / "ranker", noise=0.05, seed=1)
    domain = derive_checkpoint(pre, tmp_path / "domain", architecture="BertForMaskedLM", noise=0.05, seed=2)
    (ranker / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))  # fmt: skip
    (ranker / "1_Pooling").mkdir()
    (ranker / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
    )
    (ranker / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 64, "do_lower_case": False})
    )
    res = merge(ranker, domain, pre, alpha=0.5, out=tmp_path / "merged")
    assert (res.path / "modules.json").exists() and (res.path / "1_Pooling" / "config.json").exists()
    model = SentenceTransformer(str(res.path), device="cpu")
    emb = model.encode(["cell"], convert_to_tensor=True)
    assert emb.shape == (1, 32)
    naive = SentenceTransformer(str(ranker), device="cpu")
    assert not torch.allclose(naive.encode(["cell"], convert_to_tensor=True), emb)


# --------------------------------------------------------------------------- α sweeps in place


def test_alpha_sweep_in_place(t5_trio, monkeypatch):
    model = AutoModelForSeq2SeqLM.from_pretrained(t5_trio["ranker"])
    original = {k: v.clone() for k, v in model.state_dict().items()}
    sweep = AlphaSweep(model, TaskVector.from_checkpoints(t5_trio["domain"], t5_trio["pretrained"]))
    monkeypatch.setattr(Checkpoint, "get", lambda *a: pytest.fail("checkpoint re-read during a sweep"))
    for alpha in (0.3, 1.5, -0.4, 0.7):
        sweep.set_alpha(alpha)
    monkeypatch.undo()
    expected = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.7).state_dict
    state = model.state_dict()
    for k, v in expected.items():
        assert torch.equal(state[k], v), k
    sweep.set_alpha(0.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k]), k
    # layer selection without reloading
    sweep.set_alpha(0.7, layers="1", mode="only")
    expected = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], 0.7, layers="1").state_dict
    state = model.state_dict()
    for k, v in expected.items():
        assert torch.equal(state[k], v), k
    assert model.shared.weight is model.get_input_embeddings().weight  # still tied
    with pytest.raises(MergeError, match="layer"):
        sweep.set_alpha(0.5, layers="9")
    with pytest.raises(MergeError, match="finite"):
        sweep.set_alpha(float("nan"))


def test_alpha_sweep_keeps_only_ranker_copy_and_vector(bert_trio):
    model = AutoModelForSequenceClassification.from_pretrained(bert_trio["ranker"])
    sweep = AlphaSweep(model, TaskVector.from_checkpoints(bert_trio["domain"], bert_trio["pretrained"]))
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kept = sum(t.numel() * t.element_size() for t in sweep._orig.values())
    vec = sum(t.numel() * t.element_size() for t in sweep._tau.values())
    assert kept <= model_bytes and vec <= model_bytes
    assert all(t.device.type == "cpu" for t in sweep._tau.values())
    assert "classifier.weight" not in sweep._orig  # untouched heads are not copied


def test_alpha_sweep_restores_after_non_finite(t5_trio):
    model = AutoModelForSeq2SeqLM.from_pretrained(t5_trio["ranker"])
    original = {k: v.clone() for k, v in model.state_dict().items()}
    sweep = AlphaSweep(model, TaskVector.from_checkpoints(t5_trio["domain"], t5_trio["pretrained"]))
    with pytest.raises(MergeError, match="non-finite"):
        sweep.set_alpha(1e39)  # finite as a float64, overflows float32
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k]), k


# --------------------------------------------------------------------------- bad input


def _variant(src: Path, dst: Path, **overrides) -> Path:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(src)
    arch = cfg.architectures[0]
    kwargs = {"hidden": cfg.d_model if hasattr(cfg, "d_model") else cfg.hidden_size}
    kwargs.update(overrides)
    return build_tiny(arch, dst, **kwargs)


def test_hidden_size_mismatch_names_tensor_and_shapes(t5_trio, tmp_path):
    wide = _variant(t5_trio["domain"], tmp_path / "wide", hidden=48, words=["x"])
    with pytest.raises(MergeError, match=r"tensor '.*' has shape \[.*\] in .* but \[.*\] in"):
        merge(t5_trio["ranker"], wide, t5_trio["pretrained"], 0.5, out=tmp_path / "o")
    deep = build_tiny("T5ForConditionalGeneration", tmp_path / "deep", layers=3)
    with pytest.raises(MergeError):
        merge(t5_trio["ranker"], deep, t5_trio["pretrained"], 0.5, out=tmp_path / "o")
    assert not (tmp_path / "o").exists() and not no_leftovers(tmp_path)


def test_vocabulary_rows_differ(tmp_path, tiny_words):
    pre = build_tiny("T5ForConditionalGeneration", tmp_path / "pre", words=tiny_words, seed=0)
    ranker = derive_checkpoint(pre, tmp_path / "ranker", noise=0.05, seed=1)
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "pre")
    n = model.config.vocab_size
    model.resize_token_embeddings(n + 4)
    model.save_pretrained(tmp_path / "domain")
    with pytest.raises(MergeError, match=rf"'shared.weight'.* {n + 4} rows.* {n} \[.*vocab-policy common"):
        merge(ranker, tmp_path / "domain", pre, 0.5, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    res = merge(ranker, tmp_path / "domain", pre, 0.5, vocab_policy="common")
    r, d, p = raw(ranker), raw(tmp_path / "domain"), raw(pre)
    assert res.state_dict["shared.weight"].shape == r["shared.weight"].shape
    expected = r["shared.weight"] + 0.5 * (d["shared.weight"][:n] - p["shared.weight"])
    assert torch.equal(res.state_dict["shared.weight"], expected)
    on_disk = load_dir(
        merge(ranker, tmp_path / "domain", pre, 0.5, vocab_policy="common", out=tmp_path / "o").path
    )
    assert torch.equal(on_disk["shared.weight"], expected)
    # a ranker with more rows than the vector: its extra rows stay as they are
    big = AutoModelForSeq2SeqLM.from_pretrained(ranker)
    big.resize_token_embeddings(n + 4)
    big.save_pretrained(tmp_path / "big")
    b = raw(tmp_path / "big")["shared.weight"]
    merged = load_dir(merge(tmp_path / "big", pre, pre, 0.5, vocab_policy="common", out=tmp_path / "b").path)
    assert torch.equal(merged["shared.weight"], b)  # a zero vector
    merged = load_dir(
        merge(tmp_path / "big", ranker, pre, 0.5, vocab_policy="common", out=tmp_path / "c").path
    )
    grown = b.clone()
    grown[:n] += 0.5 * (r["shared.weight"] - p["shared.weight"])
    assert torch.equal(merged["shared.weight"], grown) and not torch.equal(grown, b)


def test_missing_and_corrupt_files(t5_trio, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no weights in .*empty"):
        merge(t5_trio["ranker"], empty, t5_trio["pretrained"], 0.5)
    with pytest.raises(CheckpointError, match="does not exist"):
        merge(t5_trio["ranker"], tmp_path / "nope" / "x", t5_trio["pretrained"], 0.5)
    # truncated safetensors
    trunc = tmp_path / "trunc"
    shutil.copytree(t5_trio["domain"], trunc)
    f = trunc / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"truncated.*model\.safetensors.*tensor"):
        merge(t5_trio["ranker"], trunc, t5_trio["pretrained"], 0.5)
    # garbage header
    bad = tmp_path / "bad"
    shutil.copytree(t5_trio["domain"], bad)
    (bad / "model.safetensors").write_bytes((20).to_bytes(8, "little") + b"{not json at all!!!}" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="corrupt safetensors file .*not valid JSON"):
        merge(t5_trio["ranker"], bad, t5_trio["pretrained"], 0.5)
    # sharded index naming a missing shard
    shard = tmp_path / "shard"
    AutoModelForSeq2SeqLM.from_pretrained(t5_trio["domain"]).save_pretrained(shard, max_shard_size="20KB")
    victim = sorted(shard.glob("model-*.safetensors"))[0]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"missing file.*{victim.name}"):
        merge(t5_trio["ranker"], shard, t5_trio["pretrained"], 0.5)
    # a pickle that is not weights-only is refused
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"weight": torch.zeros(2), "payload": Path("x")}, evil / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="not weights-only"):
        merge(t5_trio["ranker"], evil, t5_trio["pretrained"], 0.5)
    # corrupt pickle
    pkl = tmp_path / "pkl"
    pkl.mkdir()
    (pkl / "pytorch_model.bin").write_bytes(b"not a zip nor a pickle")
    with pytest.raises(CheckpointError, match="cannot load PyTorch weights .*pytorch_model.bin"):
        merge(t5_trio["ranker"], pkl, t5_trio["pretrained"], 0.5)


def test_unmergeable_dtype(t5_trio, tmp_path):
    for role in ("ranker", "domain", "pretrained"):
        shutil.copytree(t5_trio[role], tmp_path / role)
        f = tmp_path / role / "model.safetensors"
        sd = load_file(str(f))
        sd["encoder.block.0.position_ids"] = torch.arange(8) + (1 if role == "domain" else 0)
        save_file(sd, str(f), metadata={"format": "pt"})
    with pytest.raises(
        MergeError, match="'encoder.block.0.position_ids' has dtype torch.int64, which cannot be merged"
    ):
        merge(tmp_path / "ranker", tmp_path / "domain", tmp_path / "pretrained", 0.5, out=tmp_path / "o")
    assert not (tmp_path / "o").exists() and not no_leftovers(tmp_path)
    # identical integer buffers are fine: kept, and reported
    f = tmp_path / "domain" / "model.safetensors"
    sd = load_file(str(f))
    sd["encoder.block.0.position_ids"] = torch.arange(8)
    save_file(sd, str(f), metadata={"format": "pt"})
    res = merge(tmp_path / "ranker", tmp_path / "domain", tmp_path / "pretrained", 0.5)
    assert "zero task vector" in res.report.unchanged["encoder.block.0.position_ids"]


def test_non_finite_alpha_and_results(t5_trio, tmp_path):
    for alpha in (float("nan"), float("inf")):
        with pytest.raises(MergeError, match="alpha must be finite"):
            merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha, out=tmp_path / "o")
    big = tmp_path / "big"
    shutil.copytree(t5_trio["domain"], big)
    sd = load_file(str(big / "model.safetensors"))
    sd["encoder.final_layer_norm.weight"][0] = 3e38
    save_file(sd, str(big / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MergeError, match="NaN/Inf in tensor 'encoder.final_layer_norm.weight' \\(overflow"):
        merge(t5_trio["ranker"], big, t5_trio["pretrained"], 10.0, out=tmp_path / "o")
    sd["encoder.final_layer_norm.weight"][0] = float("nan")
    save_file(sd, str(big / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        MergeError,
        match="NaN/Inf in tensor 'encoder.final_layer_norm.weight' \\(the domain/pretrained inputs hold NaN",
    ):
        merge(t5_trio["ranker"], big, t5_trio["pretrained"], 0.5, out=tmp_path / "o")
    assert not (tmp_path / "o").exists() and not no_leftovers(tmp_path)


def test_existing_output_refused_unless_overwrite(t5_trio, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(TaskrankError, match="already exists.*--overwrite"):
        merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], 0.5, out=out)
    assert (out / "keep.txt").read_text() == "precious"
    merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], 0.5, out=out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors.index.json").exists()
    assert not no_leftovers(tmp_path)


def test_interrupted_merge_leaves_no_output(t5_trio, tmp_path, monkeypatch):
    from taskrank import checkpoints

    written = []
    original = checkpoints.ShardedSafetensorsWriter.write_span

    def flaky(self, name, tensor):
        if len(written) == 10:
            raise KeyboardInterrupt
        written.append(name)
        original(self, name, tensor)

    monkeypatch.setattr(checkpoints.ShardedSafetensorsWriter, "write_span", flaky)
    with pytest.raises(KeyboardInterrupt):
        merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], 0.5, out=tmp_path / "o")
    assert len(written) == 10
    assert not (tmp_path / "o").exists() and not no_leftovers(tmp_path)


def test_in_memory_inputs_are_not_modified(t5_trio):
    r, d, p = raw(t5_trio["ranker"]), raw(t5_trio["domain"]), raw(t5_trio["pretrained"])
    copies = [{k: v.clone() for k, v in sd.items()} for sd in (r, d, p)]
    out = merge(r, d, p, alpha=0.5).state_dict
    for sd, copy in zip((r, d, p), copies, strict=True):
        for k, v in copy.items():
            assert torch.equal(sd[k], v), k
    k = "shared.weight"
    assert torch.equal(out[k], r[k] + 0.5 * (d[k] - p[k]))


def test_cli_summary_counts_and_names_the_tensors_outside_the_vector(bert_trio, tmp_path):
    """The domain model's MLM head has no counterpart in the bare pretrained encoder: the summary
    counts those tensors and names each, as the model card does (it once said "0 … without
    counterpart" and named none)."""
    from typer.testing import CliRunner

    from taskrank.cli import app

    out = tmp_path / "merged"
    args = ["merge", "--ranker", str(bert_trio["ranker"]), "--domain", str(bert_trio["domain"]),
            "--pretrained", str(bert_trio["pretrained"]), "--alpha", "0.5", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    section = card.split("## Tensors outside the task vector")[1]
    listed = re.findall(r"^- `(.+)`$", section, flags=re.MULTILINE)
    head = [name for name in listed if "cls.predictions" in name]
    assert len(head) >= 4  # the MLM head of the tiny BertForMaskedLM domain model
    assert f"{len(listed)} tensors outside the task vector" in result.output
    for name in listed:
        assert f"  outside the task vector: {name}\n" in result.output
