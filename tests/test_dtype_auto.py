"""``dtype: auto`` (issue 16): bfloat16 where the hardware computes in it natively, float32
elsewhere, detected rather than guessed; the α sweeps in that dtype; the dtype used, and why, in
the cache keys, environment.json and the report.

The detection is mocked both ways, so every test passes on a CPU with AMX as on one without."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from _experiment_fixtures import config_dict, step_keys, write_tiny_beir
from taskrank import devices
from taskrank.config import parse_config
from taskrank.errors import ConfigError, MergeError
from taskrank.rerankers import load_reranker

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
NO_BF16 = "auto: the CPU has neither AMX nor avx512_bf16, where bfloat16 is emulated and slower"


def _cpu_has(monkeypatch: pytest.MonkeyPatch, feature: str | None) -> None:
    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: feature)


# --------------------------------------------------------------------------- detection


def _torch_reports(monkeypatch, *, amx: bool, avx: bool, granted: bool) -> None:
    caps = {"amx_bf16": amx, "amx_tile": amx, "avx512_bf16": avx, "avx512_f": True}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps, raising=False)
    monkeypatch.setattr(torch.cpu, "_init_amx", lambda: granted, raising=False)


@pytest.mark.parametrize(
    ("amx", "avx", "granted", "expected"),
    [
        (True, True, True, "amx_bf16"),
        (True, True, False, "avx512_bf16"),  # AMX on the chip, but the kernel refuses its tile state
        (True, False, False, None),
        (False, True, True, "avx512_bf16"),
        (False, False, True, None),  # avx512f alone (this project's build machine): bf16 is emulated
    ],
)
def test_the_cpu_detection_follows_what_torch_reports(monkeypatch, amx, avx, granted, expected):
    _torch_reports(monkeypatch, amx=amx, avx=avx, granted=granted)
    assert devices.cpu_bf16_feature() == expected


def test_an_older_torch_is_asked_through_its_private_queries(monkeypatch):
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert devices.cpu_bf16_feature() == "avx512_bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_init_amx", lambda: True, raising=False)
    assert devices.cpu_bf16_feature() == "amx_bf16"


def test_without_torch_queries_the_kernels_cpu_flags_decide(monkeypatch, tmp_path):
    for name in ("get_capabilities", "_is_amx_tile_supported", "_is_avx512_bf16_supported", "_init_amx"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(devices, "PROC_CPUINFO", cpuinfo)
    assert devices.cpu_bf16_feature() is None  # no such file (not Linux): nothing known, float32
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert devices.cpu_bf16_feature() is None
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert devices.cpu_bf16_feature() == "amx_bf16"


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="Linux only")
def test_on_this_machine_the_detection_agrees_with_the_kernels_flags():
    line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    flags = set(line.split(":", 1)[1].split())
    found = devices.cpu_bf16_feature()
    assert (found is not None) == bool(flags & {"amx_bf16", "avx512_bf16"})
    assert found is None or found in flags


# --------------------------------------------------------------------------- auto


def test_auto_on_the_cpu_is_bfloat16_only_with_native_bf16(monkeypatch):
    _cpu_has(monkeypatch, "amx_bf16")
    choice = devices.choose_dtype("auto", CPU)
    assert (choice.name, choice.reason) == ("bfloat16", "auto: the CPU has amx_bf16")
    assert choice.describe() == "bfloat16 (auto: the CPU has amx_bf16)"
    assert devices.resolve_dtype("auto", CPU) is torch.bfloat16
    _cpu_has(monkeypatch, "avx512_bf16")
    assert devices.choose_dtype("AUTO", CPU).reason == "auto: the CPU has avx512_bf16"
    _cpu_has(monkeypatch, None)
    choice = devices.choose_dtype("auto", CPU)
    assert (choice.name, choice.reason) == ("float32", NO_BF16)
    assert devices.resolve_dtype("auto", CPU) is torch.float32


def test_auto_on_a_gpu_asks_for_native_bf16_whatever_the_cpu_has(monkeypatch):
    cuda = torch.device("cuda")
    asked: list[dict[str, object]] = []
    answer = {"value": True}

    def supported(**kwargs: object) -> bool:
        asked.append(kwargs)
        return answer["value"]

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    _cpu_has(monkeypatch, None)
    assert devices.choose_dtype("auto", cuda) == devices.DtypeChoice(
        "bfloat16", "auto: the GPU supports bfloat16"
    )
    assert asked == [{"including_emulation": False}]  # an emulated bf16 (pre-Ampere) is no reason
    _cpu_has(monkeypatch, "amx_bf16")
    answer["value"] = False
    assert devices.choose_dtype("auto", cuda) == devices.DtypeChoice(
        "float32", "auto: the GPU has no native bfloat16"
    )


def test_auto_elsewhere_and_for_training_is_float32(monkeypatch):
    from taskrank.adapt.loop import compute_dtype

    _cpu_has(monkeypatch, "amx_bf16")
    assert devices.choose_dtype("auto", torch.device("mps")).name == "float32"
    # adapt and train keep their auto (bfloat16 autocast on a GPU only): scoring's detection is not theirs
    assert devices.choose_dtype("auto", CPU, training=True).name == "float32"
    assert compute_dtype("auto", CPU) == "float32"


def test_a_dtype_given_or_none_is_not_auto(monkeypatch):
    _cpu_has(monkeypatch, "amx_bf16")
    assert devices.choose_dtype(None, CPU) == devices.DtypeChoice("float32", "the default")
    assert devices.resolve_dtype(None, CPU) is None  # a model in memory keeps its dtype
    assert devices.choose_dtype("fp32", CPU) == devices.DtypeChoice("float32", "as asked")
    assert devices.choose_dtype(torch.bfloat16, CPU) == devices.DtypeChoice("bfloat16", "as asked")
    assert not devices.choose_dtype("bf16", CPU).auto
    with pytest.raises(ConfigError, match="float16 is not supported on the CPU"):
        devices.choose_dtype("half", CPU)


@pytest.fixture
def data(tmp_path, tiny_words):
    return write_tiny_beir(tmp_path / "data", tiny_words)


def test_scoring_dtype_takes_auto_and_names_the_choices(tmp_path, data, t5_trio):
    scoring = {"device": "cpu", "max_length": 64, "top_k": 10}
    config = parse_config(config_dict(data, t5_trio, tmp_path / "o", scoring={**scoring, "dtype": "auto"}))
    assert config.scoring.dtype == "auto"
    assert parse_config(config_dict(data, t5_trio, tmp_path / "o", scoring=scoring)).scoring.dtype is None
    with pytest.raises(ConfigError, match="'auto', 'float32', 'bfloat16' or 'float16'"):
        parse_config(config_dict(data, t5_trio, tmp_path / "o", scoring={**scoring, "dtype": "float64"}))


# --------------------------------------------------------------------------- bf16 scores


def _pairs(words: tuple[str, ...], n: int = 40) -> list[tuple[str, str]]:
    rng = random.Random(7)
    return [(" ".join(rng.sample(words, 2)), " ".join(rng.sample(words, 8))) for _ in range(n)]


@pytest.fixture(scope="module")
def scorers(t5_trio, bert_trio, tmp_path_factory):
    return {
        "monot5": t5_trio["ranker"],
        "cross-encoder": _lively_head(bert_trio["ranker"], tmp_path_factory.mktemp("ce") / "lively"),
        "bi-encoder": bert_trio["pretrained"],
    }


def _lively_head(ranker: Path, out: Path) -> Path:
    """The bert_trio ranker with its head centred and scaled 5×: its scores lie within 0.006 of
    each other, too close to have any well-separated pair whose order bfloat16 must keep."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(ranker)
    with torch.no_grad():
        model.classifier.bias.zero_()
        model.classifier.weight.mul_(5)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(ranker).save_pretrained(out)
    return out


#: The largest |bf16 − fp32| allowed. monoT5: the tiny random T5 (hidden size 32) carries a 1 %
#: relative error to its last hidden state in bfloat16, which gives up to 0.018 on these pairs
#: (median 0.005); the issue's 1e-2 holds for the two BERT families (0.006 and 0.0007 here).
TOLERANCE = {"monot5": 2e-2, "cross-encoder": 1e-2, "bi-encoder": 1e-2}


@pytest.mark.parametrize("kind", ["monot5", "cross-encoder", "bi-encoder"])
def test_bf16_scores_are_close_to_fp32_and_keep_the_order_of_separated_ones(
    monkeypatch, scorers, tiny_words, kind
):
    pairs = _pairs(tiny_words)
    fp32 = np.asarray(load_reranker(scorers[kind], kind, device="cpu").score(pairs))
    _cpu_has(monkeypatch, "amx_bf16")
    auto = load_reranker(scorers[kind], kind, device="cpu", dtype="auto")
    assert {p.dtype for p in auto.model.parameters()} == {torch.bfloat16}  # auto chose bfloat16
    bf16 = np.asarray(auto.score(pairs))
    tol = TOLERANCE[kind]
    assert np.abs(bf16 - fp32).max() <= tol
    gaps = fp32[:, None] - fp32[None, :]
    separated = np.abs(gaps) > tol  # not implied by the bound above: each of two scores may move by tol
    assert separated.sum() >= 100, "too few well-separated scores to test their order"
    assert np.array_equal(np.sign(gaps[separated]), np.sign((bf16[:, None] - bf16[None, :])[separated]))

    _cpu_has(monkeypatch, None)  # without native bf16, auto is float32: the same scores, bit for bit
    same = load_reranker(scorers[kind], kind, device="cpu", dtype="auto").score(pairs)
    assert np.array_equal(np.asarray(same), fp32)


# --------------------------------------------------------------------------- the α sweeps


def test_a_bf16_sweep_is_the_fp32_merge_loaded_in_bf16(t5_trio, tmp_path):
    from taskrank.arithmetic import AlphaSweep, TaskVector, merge

    def bf16(path: Path) -> torch.nn.Module:
        return load_reranker(path, "monot5", device="cpu", dtype="bfloat16").model

    vector = TaskVector.from_checkpoints(t5_trio["domain"], t5_trio["pretrained"])
    model = bf16(t5_trio["ranker"])
    sweep = AlphaSweep(model, vector, originals=t5_trio["ranker"])
    merged = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.5, out=tmp_path / "m")
    expected = bf16(merged.path).state_dict()
    sweep.set_alpha(0.5)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    sweep.set_alpha(0.0)  # back to the ranker as loaded in bfloat16, bit for bit
    ranker = bf16(t5_trio["ranker"]).state_dict()
    assert all(torch.equal(tensor, ranker[name]) for name, tensor in model.state_dict().items())

    naive = bf16(t5_trio["ranker"])  # from the ranker's bfloat16 rounding: not the merge
    AlphaSweep(naive, vector).set_alpha(0.5)
    assert any(not torch.equal(tensor, expected[name]) for name, tensor in naive.state_dict().items())


def test_originals_that_are_not_the_models_checkpoint_are_refused(t5_trio):
    from taskrank.arithmetic import AlphaSweep, TaskVector

    model = load_reranker(t5_trio["ranker"], "monot5", device="cpu", dtype="bfloat16").model
    vector = TaskVector.from_checkpoints(t5_trio["domain"], t5_trio["pretrained"])
    with pytest.raises(MergeError, match="the originals given are not the model's checkpoint"):
        AlphaSweep(model, vector, originals=t5_trio["domain"])


# --------------------------------------------------------------------------- experiments


def _experiment_config(data: Path, trio: dict[str, Path], out: Path, dtype: str | None):
    scoring: dict[str, object] = {"device": "cpu", "batch_size": 32, "max_length": 64, "top_k": 10}
    if dtype is not None:
        scoring["dtype"] = dtype
    systems = [
        {"name": "BM25", "type": "first-stage"},
        {"name": "ranker", "type": "ranker"},
        {"name": "TA", "type": "merge", "alpha": 0.5},
    ]
    return parse_config(
        config_dict(data, trio, out, scoring=scoring, systems=systems, fusion={"method": "none"})
    )


#: The inputs of a merge's key and of its scoring before issue 16: a float32 merge's keys keep them.
MERGE_INPUTS = {"ranker", "domain", "pretrained", "alpha", "layers", "mode", "vocab_policy"}
SCORING_INPUTS = {"kind", "options", "tokenizer", "max_length", "top_k", "dtype", "device"}


def test_the_keys_hold_the_resolved_dtype_and_float32_keys_are_unchanged(
    monkeypatch, tmp_path, data, t5_trio
):
    keys = {
        dtype: step_keys(_experiment_config(data, t5_trio, tmp_path / "o", dtype))
        for dtype in (None, "float32")
    }
    _cpu_has(monkeypatch, None)
    keys["auto without bf16"] = step_keys(_experiment_config(data, t5_trio, tmp_path / "o", "auto"))
    _cpu_has(monkeypatch, "amx_bf16")
    keys["auto with bf16"] = step_keys(_experiment_config(data, t5_trio, tmp_path / "o", "auto"))
    keys["bfloat16"] = step_keys(_experiment_config(data, t5_trio, tmp_path / "o", "bfloat16"))

    # no dtype, float32, and auto where it means float32: one cache, with the inputs of before
    assert keys[None] == keys["float32"] == keys["auto without bf16"]
    key, inputs = keys[None]["merge"]
    assert set(inputs["model"]) == MERGE_INPUTS and set(inputs["scoring"]) == SCORING_INPUTS
    assert (inputs["scoring"]["dtype"], inputs["scoring"]["device"]) == ("float32", "cpu")
    # auto where it means bfloat16: bfloat16's keys, which name bfloat16, never "auto"
    assert keys["auto with bf16"] == keys["bfloat16"]
    for name in ("ranker", "merge"):
        key, inputs = keys["bfloat16"][name]
        assert key != keys[None][name][0]
        assert inputs["scoring"]["dtype"] == "bfloat16"
        assert "auto" not in json.dumps(inputs)
    # a bf16 merge is made from float32 originals now (it was from bf16 ones): a key of its own
    assert keys["bfloat16"]["merge"][1]["model"]["originals"] == "float32"
    assert "originals" not in keys["bfloat16"]["ranker"][1]["model"]


def test_a_run_in_auto_states_the_dtype_and_why_and_sweeps_from_fp32(monkeypatch, tmp_path, data, t5_trio):
    from taskrank.arithmetic import merge
    from taskrank.experiment import Experiment, ModelState

    _cpu_has(monkeypatch, "amx_bf16")
    out = tmp_path / "out"
    exp = Experiment(_experiment_config(data, t5_trio, out, "auto"), progress=False)
    result = exp.run()

    env = json.loads((out / "environment.json").read_text())
    assert (env["dtype"], env["dtype_reason"]) == ("bfloat16", "auto: the CPU has amx_bf16")
    assert env["threads"] == exp.steps.threads >= 1
    scoring = json.loads((out / "results.json").read_text())["scoring"]
    assert (scoring["dtype"], scoring["dtype_reason"]) == ("bfloat16", "auto: the CPU has amx_bf16")
    report = (out / "report.md").read_text()
    assert ", dtype bfloat16 (auto: the CPU has amx_bf16), batch size 32" in report
    lines = report.splitlines()
    assert "- dtype: bfloat16" in lines and "- dtype_reason: auto: the CPU has amx_bf16" in lines
    assert f"- threads: {env['threads']}" in lines
    assert result.stats["model_loads"] == ["ranker"]  # one load: the merge was made in place

    # the in-place merge scores as the float32 merge on disk, loaded in bfloat16
    merged = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.5, out=tmp_path / "m")
    reranker = load_reranker(
        merged.path, "monot5", device="cpu", dtype="bfloat16", batch_size=32, max_length=64
    )
    split = exp.data.test
    expected = reranker.rerank(
        exp.first_stage(split), exp.data.corpus, split.queries, top_k=10, progress=False
    )
    assert exp.rerank(ModelState.merged(0.5), split) == expected


def test_a_run_in_auto_without_native_bf16_says_float32_and_why(monkeypatch, tmp_path, data, t5_trio):
    from taskrank.experiment import Experiment

    _cpu_has(monkeypatch, None)
    out = tmp_path / "out"
    Experiment(_experiment_config(data, t5_trio, out, "auto"), progress=False).run()
    env = json.loads((out / "environment.json").read_text())
    assert (env["dtype"], env["dtype_reason"]) == ("float32", NO_BF16)
    assert f", dtype float32 ({NO_BF16}), batch size 32" in (out / "report.md").read_text()


def test_the_demo_scores_in_auto(tmp_path):
    from taskrank.demo import demo_config

    config = demo_config(tmp_path, {role: tmp_path / role for role in ("pretrained", "ranker", "domain")})
    assert config.scoring.dtype == "auto"


def test_rerank_takes_dtype_auto(monkeypatch, capsys, tmp_path, data, bert_trio):
    from _cli import run_cli
    from taskrank.data import load_beir, read_run, write_run

    beir = load_beir(data, split="test", progress=False)
    candidates = {q: {d: float(-i) for i, d in enumerate(list(beir.corpus)[:5])} for q in beir.queries}
    write_run(candidates, tmp_path / "c.trec")

    def rerank(out: Path) -> dict:
        args = ["--dataset", data, "--candidates", tmp_path / "c.trec", "--out", out, "--top-k", 5]
        code, _, err = run_cli(
            monkeypatch, capsys, "rerank", "--model", bert_trio["ranker"], "--kind", "cross-encoder",
            *args, "--device", "cpu", "--dtype", "auto", "--quiet",
        )  # fmt: skip
        assert code == 0, err
        return read_run(out)

    def library(dtype: str | None) -> dict:
        reranker = load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu", dtype=dtype)
        return reranker.rerank(candidates, beir.corpus, beir.queries, top_k=5, progress=False)

    _cpu_has(monkeypatch, "amx_bf16")
    assert _close(rerank(tmp_path / "bf16.trec"), library("bfloat16"))
    _cpu_has(monkeypatch, None)
    assert _close(rerank(tmp_path / "fp32.trec"), library(None))
    assert not _close(library("bfloat16"), library(None))  # (the two dtypes do score differently)


def _close(a: dict, b: dict) -> bool:
    """The same documents per query, with scores equal as a TREC run writes them."""
    return a.keys() == b.keys() and all(
        a[q].keys() == b[q].keys() and all(abs(a[q][d] - b[q][d]) < 1e-6 for d in a[q]) for q in a
    )


def test_float16_on_the_cpu_is_refused_before_any_model_is_loaded(tmp_path, data, t5_trio):
    from taskrank.experiment import Experiment

    exp = Experiment(_experiment_config(data, t5_trio, tmp_path / "o", "float16"), progress=False)
    with pytest.raises(ConfigError, match=r"^scoring.dtype: dtype float16 is not supported on the CPU"):
        exp.prepare()
