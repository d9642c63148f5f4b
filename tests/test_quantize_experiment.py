"""``scoring.quantize: int8`` in experiments and ``taskrank rerank --quantize int8`` (issue 16): the
settings int8 cannot serve are refused before any model is loaded; an α sweep in int8 scores
close to float32, each model state's compressed model (OpenVINO IR) is cached once and read on
the next run; the keys of every other config stay as they were; environment.json, the report
and the rerank summary state it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from _cli import run_cli
from _experiment_fixtures import config_dict, step_keys, write_tiny_beir
from taskrank.config import parse_config
from taskrank.errors import ConfigError, ModelError

pytestmark = pytest.mark.usefixtures("one_thread")

#: |int8 - float32| on the tiny cross-encoder (test_quantize.py measures it: 0.0010)
TOLERANCE = 5e-3
SYSTEMS = [
    {"name": "BM25", "type": "first-stage"},
    {"name": "ranker", "type": "ranker"},
    {"name": "TA", "type": "merge", "alpha": 0.5},
    {"name": "sweep", "type": "sweep", "alphas": [0.0, 0.5, 1.0]},
]
#: the model states of SYSTEMS: the ranker, α = 0.5 (the merge and a sweep point) and α = 1
STATES = 3


@pytest.fixture(scope="module")
def openvino():
    return pytest.importorskip("openvino"), pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_words) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("data"), tiny_words)


RANKER_ONLY = [{"name": "ranker", "type": "ranker"}]


def _config(
    data: Path, trio: dict[str, Path], out: Path, models: dict | None = None, systems=SYSTEMS, **scoring
):
    base = {"device": "cpu", "batch_size": 8, "max_length": 64, "top_k": 10}
    changes: dict[str, object] = {
        "scoring": {**base, **scoring},
        "systems": systems,
        "fusion": {"method": "none"},
    }
    raw = config_dict(data, trio, out, **changes)
    raw["models"] = {**raw["models"], "kind": "cross-encoder", **(models or {})}
    return parse_config(raw)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("scoring", "models", "message"),
    [
        (
            {"dtype": "bfloat16"},
            {},
            r"scoring.quantize int8 converts float32 weights; scoring.dtype bfloat16 cannot be used",
        ),
        ({"dtype": "float16"}, {}, r"scoring.dtype float16 cannot be used"),
        ({"device": "cuda"}, {}, r"scoring.quantize int8 runs on the CPU only; scoring.device is 'cuda'"),
        ({"device": "mps"}, {}, r"scoring.device is 'mps'"),
        ({}, {"kind": "query-likelihood"}, r"supports models.kind monot5, .* not 'query-likelihood'"),
        ({}, {"domain_kind": "query-likelihood"}, r"supports models.domain_kind .* not 'query-likelihood'"),
    ],
)
def test_settings_int8_cannot_serve_are_config_errors(tmp_path, data, bert_trio, scoring, models, message):
    with pytest.raises(ConfigError, match=message):
        _config(data, bert_trio, tmp_path / "o", models, quantize="int8", **scoring)


def test_an_unknown_mode_is_refused_and_none_is_the_default(tmp_path, data, bert_trio):
    with pytest.raises(ConfigError, match=r"scoring.quantize: Input should be 'none' or 'int8'"):
        _config(data, bert_trio, tmp_path / "o", quantize="int4")
    assert _config(data, bert_trio, tmp_path / "o").scoring.quantize == "none"
    # a dtype that int8 serves, and without int8 every dtype and device stays allowed
    assert (
        _config(data, bert_trio, tmp_path / "o", quantize="int8", dtype="float32").scoring.dtype == "float32"
    )
    assert _config(data, bert_trio, tmp_path / "o", dtype="bfloat16").scoring.quantize == "none"


def test_auto_means_float32_and_a_gpu_chosen_by_auto_is_refused(
    openvino, monkeypatch, tmp_path, data, bert_trio
):
    from taskrank import devices
    from taskrank.experiment import Experiment

    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: "amx_bf16")  # auto alone would be bf16
    exp = Experiment(_config(data, bert_trio, tmp_path / "o", quantize="int8", dtype="auto"), progress=False)
    exp.prepare()
    assert (exp.scoring.dtype, exp.scoring.dtype_reason) == (
        "float32",
        "auto: quantize int8 scores from float32 weights",
    )
    assert exp.steps.pool is None  # nothing loaded

    monkeypatch.setattr(devices, "resolve_device", lambda device: torch.device("cuda", 0))
    exp = Experiment(_config(data, bert_trio, tmp_path / "g", quantize="int8", device="auto"), progress=False)
    with pytest.raises(ConfigError, match=r"runs on the CPU only; scoring.device 'auto' chose cuda:0"):
        exp.prepare()


def test_a_missing_openvino_is_named_before_any_model_is_loaded(monkeypatch, tmp_path, data, bert_trio):
    import sys

    from taskrank.experiment import Experiment

    monkeypatch.setitem(sys.modules, "openvino", None)
    exp = Experiment(_config(data, bert_trio, tmp_path / "o", quantize="int8"), progress=False)
    with pytest.raises(ModelError, match=r"needs OpenVINO and NNCF .*taskrank\[openvino\]"):
        exp.prepare()


# --------------------------------------------------------------------------- keys


SCORING_INPUTS = {"kind", "options", "tokenizer", "max_length", "top_k", "dtype", "device"}


def test_only_int8_keys_hold_quantize(openvino, tmp_path, data, bert_trio):
    plain = _config(data, bert_trio, tmp_path / "o")
    none = _config(data, bert_trio, tmp_path / "o", quantize="none")
    int8 = _config(data, bert_trio, tmp_path / "o", quantize="int8")
    keys = {"plain": step_keys(plain), "none": step_keys(none), "int8": step_keys(int8)}
    assert keys["plain"] == keys["none"]
    assert plain.fingerprint() == none.fingerprint() != int8.fingerprint()
    for name in ("ranker", "merge"):
        key, inputs = keys["plain"][name]
        assert set(inputs["scoring"]) == SCORING_INPUTS  # the inputs of before issue 16
        key8, inputs8 = keys["int8"][name]
        assert key8 != key
        assert inputs8["scoring"]["quantize"]["mode"] == "int8"
        assert {"openvino", "nncf"} <= set(inputs8["scoring"]["quantize"])
        assert inputs8["model"] == inputs["model"]  # the same weights, scored otherwise


def test_the_ir_key_follows_the_step_caches_version(openvino, monkeypatch, tmp_path, data, bert_trio):
    """A new CACHE_VERSION (taskrank's merge or scoring computed otherwise) gives new re-ranking
    keys; the IR made from the weights merged the old way must not be read for them."""
    from taskrank.experiment import Experiment, ModelState, cache
    from taskrank.experiment.models import ir_inputs

    exp = Experiment(_config(data, bert_trio, tmp_path / "o", quantize="int8"), progress=False)
    exp.prepare()
    state = ModelState.merged(0.5)

    def ir_key() -> str:
        return cache.digest(ir_inputs(state, exp.config, exp.steps.ckpts, exp.steps.scoring))

    before = ir_key()
    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
    assert ir_key() != before


def test_on_ray_environment_json_claims_no_int8_counts_the_driver_cannot_know(
    openvino, tmp_path, data, bert_trio
):
    from taskrank.experiment import Experiment

    config = _config(data, bert_trio, tmp_path / "o", systems=RANKER_ONLY, quantize="int8")
    config = config.model_copy(update={"execution": config.execution.model_copy(update={"engine": "ray"})})
    exp = Experiment(config, progress=False)
    exp.prepare()  # the workers would make the int8 models: the driver's pool never does
    env = exp._environment()
    assert env["quantize"].startswith("int8 (OpenVINO ")
    assert env["int8_models"] == {"states": "on the Ray workers"}  # not "converted: 0"


# --------------------------------------------------------------------------- experiments


def _count_conversions(monkeypatch) -> list[int]:
    from taskrank.rerankers import quantize

    calls: list[int] = []
    convert = quantize._convert

    def counting(*args, **kwargs):
        calls.append(1)
        return convert(*args, **kwargs)

    monkeypatch.setattr(quantize, "_convert", counting)
    return calls


def _runs(exp) -> dict[str, dict]:
    from taskrank.experiment import ModelState

    states = {"ranker": ModelState("ranker"), "0.5": ModelState.merged(0.5), "1": ModelState.merged(1.0)}
    return {name: exp.rerank(state, split) for name, state in states.items() for split in [exp.data.test]}


def test_an_int8_sweep_is_close_to_float32_and_its_models_are_cached_once(
    openvino, monkeypatch, tmp_path, data, bert_trio
):
    from taskrank.experiment import Experiment

    reference = Experiment(_config(data, bert_trio, tmp_path / "fp32"), progress=False)
    reference.run()
    conversions = _count_conversions(monkeypatch)
    out = tmp_path / "int8"
    exp = Experiment(_config(data, bert_trio, out, quantize="int8", dtype="auto"), progress=False)
    result = exp.run()
    assert result.stats["model_loads"] == ["ranker"]  # one torch model, moved in place
    assert len(conversions) == STATES  # once per model state, though α = 0.5 is scored twice
    folders = sorted((out / "cache" / "openvino").iterdir())
    assert len(folders) == STATES
    assert all({p.name for p in f.iterdir()} == {"model.xml", "model.bin", "manifest.json"} for f in folders)

    int8, fp32 = _runs(exp), _runs(reference)
    differs = False
    for name in fp32:
        for qid, docs in fp32[name].items():
            assert int8[name][qid].keys() == docs.keys()
            for did, score in docs.items():
                assert abs(int8[name][qid][did] - score) <= TOLERANCE, (name, qid, did)
                differs |= int8[name][qid][did] != score
    assert differs  # int8 really ran
    assert fp32["0.5"] != fp32["ranker"] and int8["0.5"] != int8["ranker"]  # the sweep moved the weights
    # each state's int8 scores are its own weights', not another state's (a stale compiled model)
    for name in int8:
        for other in fp32.keys() - {name}:
            gaps = [abs(s - fp32[other][q][d]) for q, docs in int8[name].items() for d, s in docs.items()]
            assert max(gaps) > TOLERANCE, (name, other)

    env = json.loads((out / "environment.json").read_text())
    assert (
        env["dtype"] == "float32" and env["dtype_reason"] == "auto: quantize int8 scores from float32 weights"
    )
    assert env["quantize"].startswith("int8 (OpenVINO ") and ", NNCF " in env["quantize"]
    made = env["int8_models"]
    # each state converted once; a state scored again later (dev, then test) is read from the cache
    assert made["converted"] == STATES and made["from_cache"] == len(made["states"]) - STATES
    converted = [s["model"] for s in made["states"] if not s["from_cache"]]
    assert sorted(converted) == ["ranker", "α=0.5", "α=1"]
    assert made["seconds"] > 0
    report = (out / "report.md").read_text()
    assert (
        f"dtype float32 (auto: quantize int8 scores from float32 weights), {env['quantize']}, batch" in report
    )
    assert f"- quantize: {env['quantize']}" in report.splitlines()
    scoring = json.loads((out / "results.json").read_text())["scoring"]
    assert scoring["quantize"] == env["quantize"]
    fp32_env = json.loads((tmp_path / "fp32" / "environment.json").read_text())
    assert fp32_env["quantize"] == "none" and "int8_models" not in fp32_env

    # the next run that scores (its step cache gone) reads the IR of each state: no conversion
    shutil.rmtree(out / "cache" / "rerank")
    again = Experiment(_config(data, bert_trio, out, quantize="int8", dtype="auto"), progress=False)
    again.run()
    assert len(conversions) == STATES
    made = json.loads((out / "environment.json").read_text())["int8_models"]
    assert made["converted"] == 0 and made["from_cache"] == len(made["states"]) >= STATES
    assert all(s["from_cache"] for s in made["states"])
    assert _runs(again) == int8  # the cached model scores exactly as the one converted


def test_a_damaged_ir_is_reported_and_converted_again(
    openvino, monkeypatch, caplog, tmp_path, data, bert_trio
):
    from taskrank.experiment import Experiment

    config = _config(data, bert_trio, tmp_path / "o", systems=RANKER_ONLY, quantize="int8")
    Experiment(config, progress=False).run()
    (folder,) = (tmp_path / "o" / "cache" / "openvino").iterdir()
    data_file = folder / "model.bin"
    data_file.write_bytes(data_file.read_bytes()[:-16])  # truncated
    shutil.rmtree(tmp_path / "o" / "cache" / "rerank")
    conversions = _count_conversions(monkeypatch)
    with caplog.at_level("WARNING", logger="taskrank.rerankers.quantize"):
        Experiment(config, progress=False).run()
    assert len(conversions) == 1
    assert f"cached OpenVINO model {folder} is not used: model.bin does not match its sha256" in caplog.text
    assert folder.is_dir() and folder.joinpath("manifest.json").is_file()  # replaced, whole


# --------------------------------------------------------------------------- the CLI


def _candidates(data: Path, tmp_path: Path) -> Path:
    from taskrank.data import load_beir, write_run

    beir = load_beir(data, split="test", progress=False)
    candidates = {q: {d: float(-i) for i, d in enumerate(list(beir.corpus)[:5])} for q in beir.queries}
    write_run(candidates, tmp_path / "c.trec")
    return tmp_path / "c.trec"


def test_rerank_quantize_int8_runs_close_to_float32(openvino, monkeypatch, capsys, tmp_path, data, bert_trio):
    from taskrank.data import read_run

    candidates = _candidates(data, tmp_path)

    def rerank(out: Path, *extra: str) -> tuple[dict, str]:
        code, stdout, err = run_cli(
            monkeypatch, capsys, "rerank", "--model", bert_trio["ranker"], "--kind", "cross-encoder",
            "--dataset", data, "--candidates", candidates, "--out", out, "--top-k", 5, "--device", "cpu",
            *extra,
        )  # fmt: skip
        assert code == 0, err
        return read_run(out), stdout

    fp32, _ = rerank(tmp_path / "fp32.trec")
    int8, summary = rerank(tmp_path / "int8.trec", "--quantize", "int8", "--dtype", "auto")
    assert "float32 (auto: quantize int8 scores from float32 weights), int8 (OpenVINO " in summary
    assert int8.keys() == fp32.keys()
    errors = [abs(int8[q][d] - fp32[q][d]) for q in fp32 for d in fp32[q]]
    assert max(errors) <= TOLERANCE and max(errors) > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kind", "cross-encoder", "--quantize", "int4"], "'int4'"),
        (["--kind", "query-likelihood", "--quantize", "int8"], "quantize int8 supports kinds"),
        (
            ["--kind", "cross-encoder", "--quantize", "int8", "--dtype", "bfloat16"],
            "dtype bfloat16 cannot be",
        ),
    ],
)
def test_rerank_refuses_what_int8_cannot_serve(
    monkeypatch, capsys, tmp_path, data, bert_trio, extra, message
):
    code, _, err = run_cli(
        monkeypatch, capsys, "rerank", "--model", bert_trio["ranker"], "--dataset", data,
        "--candidates", _candidates(data, tmp_path), "--out", tmp_path / "r.trec", "--device", "cpu", *extra,
    )  # fmt: skip
    assert code == 2 and message in err, err
    assert not (tmp_path / "r.trec").exists()


def test_run_quantize_overrides_the_config_and_is_recorded(
    openvino, monkeypatch, capsys, tmp_path, data, bert_trio
):
    import yaml

    from taskrank.config import dump_config, load_config

    config = _config(data, bert_trio, tmp_path / "o", systems=RANKER_ONLY)
    file = tmp_path / "x.yaml"
    file.write_text(dump_config(config))
    code, _, err = run_cli(monkeypatch, capsys, "run", str(file), "--quantize", "int8", "--no-progress")
    assert code == 0, err
    assert load_config(tmp_path / "o" / "config.yaml").scoring.quantize == "int8"
    assert json.loads((tmp_path / "o" / "environment.json").read_text())["quantize"].startswith("int8 (")
    raw = yaml.safe_load(file.read_text())
    raw["models"]["kind"] = "query-likelihood"
    file.write_text(yaml.safe_dump(raw))
    code, _, err = run_cli(monkeypatch, capsys, "run", str(file), "--quantize", "int8", "--dry-run")
    assert code == 2 and "supports models.kind" in err, err


# --------------------------------------------------------------------------- Ray


def test_a_ray_probe_resolves_auto_to_float32_under_int8(monkeypatch):
    from taskrank import devices
    from taskrank.experiment import ray_data

    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: "amx_bf16")
    assert ray_data._probe("cpu", "auto")["dtype"] == "bfloat16"
    report = ray_data._probe("cpu", "auto", "int8")
    assert (report["dtype"], report["dtype_reason"]) == (
        "float32",
        "auto: quantize int8 scores from float32 weights",
    )


def test_an_int8_experiment_on_ray_workers_scores_as_the_local_one(openvino, tmp_path, data, bert_trio):
    ray = pytest.importorskip("ray")
    from taskrank.experiment import Experiment

    systems = [{"name": "ranker", "type": "ranker"}, {"name": "TA", "type": "merge", "alpha": 0.5}]
    local = Experiment(
        _config(data, bert_trio, tmp_path / "local", systems=systems, quantize="int8"), progress=False
    )
    local.run()
    config = _config(data, bert_trio, tmp_path / "ray", systems=systems, quantize="int8")
    config = config.model_copy(update={"execution": config.execution.model_copy(update={"engine": "ray"})})
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = Experiment(config, progress=False)
        on_ray.run()
    finally:
        ray.shutdown()
    assert len(list((tmp_path / "ray" / "cache" / "openvino").iterdir())) == 2  # the workers cached theirs
    env = json.loads((tmp_path / "ray" / "environment.json").read_text())
    assert env["quantize"].startswith("int8 (") and env["int8_models"]["states"] == "on the Ray workers"
    for name in ("ranker", "TA"):
        want = (tmp_path / "local" / "runs" / "test" / f"{name}.trec").read_text().split("\n")
        got = (tmp_path / "ray" / "runs" / "test" / f"{name}.trec").read_text().split("\n")
        assert [line.split()[:3] for line in got if line] == [line.split()[:3] for line in want if line]
        scores = [float(a.split()[4]) - float(b.split()[4]) for a, b in zip(got, want, strict=True) if a]
        assert max(map(abs, scores)) <= TOLERANCE / 5
