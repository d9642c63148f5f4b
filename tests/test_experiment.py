"""The experiment runner end to end on a tiny dataset and the tiny T5 trio: results folder,
one model load per sweep, in-memory merges equal on-disk merges, resume after a kill,
cache invalidation, and every bad input refused before heavy work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transformers
import yaml

from _experiment_fixtures import config_dict, make_config, write_tiny_beir
from taskrank.config import parse_config
from taskrank.errors import CheckpointError, ConfigError, DataError, ModelError
from taskrank.experiment import Experiment, plan_experiment, run_experiment
from taskrank.rerankers.base import Reranker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny_words) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("beir") / "tiny", tiny_words)


class Counter:
    """Counts model loads (transformers from_pretrained) and re-ranking passes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> None:
        self.loads: list[str] = []
        self.reranks = 0
        self.fail_after = fail_after
        original_load = transformers.AutoModelForSeq2SeqLM.from_pretrained
        original_rerank = Reranker.rerank
        counter = self

        def load(cls, path, *args, **kwargs):
            counter.loads.append(str(path))
            return original_load(path, *args, **kwargs)

        def rerank(self, *args, **kwargs):
            if counter.fail_after is not None and counter.reranks >= counter.fail_after:
                raise KeyboardInterrupt("injected kill")
            counter.reranks += 1
            return original_rerank(self, *args, **kwargs)

        monkeypatch.setattr(transformers.AutoModelForSeq2SeqLM, "from_pretrained", classmethod(load))
        monkeypatch.setattr(Reranker, "rerank", rerank)


def rerank_entries(config) -> dict[str, int]:
    folder = config.cache_path() / "rerank"
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")} if folder.is_dir() else {}


def to_run(config) -> int:
    experiment = Experiment(config, progress=False)
    experiment.prepare()
    return sum(1 for s in experiment.plan() if s.step == "rerank" and s.cached is False)


# --------------------------------------------------------------------------- the full run


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_data, t5_trio):
    """One full run (shared by the result-folder tests), with its counts."""
    mp = pytest.MonkeyPatch()
    counter = Counter(mp)
    try:
        config = make_config(tiny_data, t5_trio, tmp_path_factory.mktemp("run") / "out")
        result = run_experiment(config, progress=False)
    finally:
        mp.undo()
    return config, result, counter


def test_results_folder_holds_everything(finished):
    config, result, _ = finished
    out = result.output
    assert yaml.safe_load((out / "config.yaml").read_text()) == config.model_dump(mode="json")
    env = json.loads((out / "environment.json").read_text())
    assert env["taskrank"] and env["torch"] and env["transformers"] and env["device"] == "cpu"
    assert env["seed"] == config.seed
    runs = sorted(p.name for p in (out / "runs" / "test").glob("*.trec"))
    assert runs == sorted(["BM25.trec", "ranker.trec", "domain.trec", "TA_α=0.5.trec", "sweep.trec"])
    assert sorted(p.name for p in (out / "runs" / "test" / "sweep").glob("*.trec")) == [
        "alpha=0.5.trec",
        "alpha=0.trec",
        "alpha=1.trec",
    ]
    assert sorted(p.name for p in (out / "runs" / "test" / "ablation").glob("*.trec")) == [
        "except-layer-0.trec",
        "except-layer-1.trec",
        "only-layer-0.trec",
        "only-layer-1.trec",
    ]
    first = (out / "runs" / "test" / "ranker.trec").read_text().splitlines()[0].split()
    assert len(first) == 6 and first[1] == "Q0" and first[3] == "1"
    metrics = json.loads((out / "metrics" / "test.json").read_text())
    assert set(metrics) == {"BM25", "ranker", "domain", "TA α=0.5", "sweep"}
    per_query = metrics["ranker"]["per_query"]["ndcg@10"]
    assert len(per_query) == 8
    assert metrics["ranker"]["mean"]["ndcg@10"] == pytest.approx(sum(per_query.values()) / 8)
    report = result.report.read_text()
    for system in config.systems:
        assert system.name in report, f"{system.name} missing from report.md"
    assert "Best α =" in report and "BM25 0" in report and " · model " in report
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC
    assert len(list((out / "plots").glob("*.png"))) == 2
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name], "temporary files left behind"


def test_table_rows_and_values(finished):
    _, result, _ = finished
    rows = {r["name"]: r for r in result.results["systems"]}
    assert list(rows) == ["BM25", "ranker", "domain", "TA α=0.5", "sweep"]
    for row in rows.values():
        assert 0.0 <= row["mean"]["ndcg@10"] <= 1.0
    sweep = result.results["sweeps"]["sweep"]
    assert sweep["alphas"] == [0.0, 0.5, 1.0]
    assert sweep["best_alpha"] in sweep["alphas"]
    best = sweep["alphas"].index(sweep["best_alpha"])
    assert sweep["dev"][best] == max(sweep["dev"])
    # the sweep's test row is its best α's test value
    assert rows["sweep"]["mean"]["ndcg@10"] == pytest.approx(sweep["test"][best])
    # α = 0 in the sweep is the ranker itself
    assert sweep["test"][0] == pytest.approx(rows["ranker"]["mean"]["ndcg@10"])
    ablation = result.results["ablations"]["ablation"]
    assert ablation["layers"] == [0, 1] and len(ablation["only"]) == 2 and len(ablation["except"]) == 2
    assert ablation["full"] == pytest.approx(rows["TA α=0.5"]["mean"]["ndcg@10"])
    assert result.results["baselines"] == ["BM25", "ranker", "domain"]
    assert set(result.results["significance"]["marks"]) == set(rows)


def test_whole_run_loads_each_model_once(finished):
    config, result, counter = finished
    ranker = str(config.models.ranker)
    domain = str(config.models.domain)
    assert counter.loads.count(ranker) == 1, counter.loads
    assert counter.loads.count(domain) == 1, counter.loads
    assert len(counter.loads) == 2
    assert result.stats["model_loads"] == ["domain", "ranker"]


def test_in_memory_merge_scores_equal_an_on_disk_merge(finished, tmp_path, t5_trio):
    from taskrank.arithmetic import merge
    from taskrank.data import load_beir
    from taskrank.rerankers import load_reranker

    config, _, _ = finished
    merged = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], 0.5, out=tmp_path / "m").path
    experiment = Experiment(config, progress=False)
    experiment.prepare()
    from taskrank.experiment import ModelState

    cached = experiment.rerank(ModelState.merged(0.5), experiment.data.test)  # from the cache
    test = load_beir(config.dataset.path, "test", progress=False)
    reranker = load_reranker(merged, "monot5", device="cpu", max_length=64)
    fresh = reranker.rerank(
        experiment.first_stage(experiment.data.test), test.corpus, test.queries, 10, False
    )
    for qid, docs in fresh.items():
        for did, score in docs.items():
            assert cached[qid][did] == pytest.approx(score, abs=1e-5)


def test_second_run_recomputes_nothing(finished, monkeypatch):
    config, first, _ = finished
    counter = Counter(monkeypatch)
    again = run_experiment(config, progress=False)
    assert counter.reranks == 0 and counter.loads == []
    assert again.stats["status"] == "resume"
    assert again.results["systems"] == first.results["systems"]


def test_dry_run_after_a_run_says_everything_is_cached(finished):
    config, _, _ = finished
    text = plan_experiment(config)
    assert "(resume)" in text
    assert not [line for line in text.splitlines() if line.strip().startswith("to run")]
    assert "total: 0 step(s) to run" in text


# --------------------------------------------------------------------------- resume


def test_killed_run_resumes_without_recomputing(tmp_path, tiny_data, t5_trio, monkeypatch):
    config = make_config(tiny_data, t5_trio, tmp_path / "out")
    total = to_run(config)
    killer = Counter(monkeypatch, fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=False)
    before = rerank_entries(config)
    assert len(before) == 3 and killer.reranks == 3
    monkeypatch.undo()
    counter = Counter(monkeypatch)
    result = run_experiment(config, progress=False)
    assert counter.reranks == total - 3
    after = rerank_entries(config)
    assert {k: after[k] for k in before} == before, "a finished step was written again"
    assert len(after) == total
    assert result.stats["status"] == "resume"


def test_sigkilled_subprocess_resumes_without_recomputing(tmp_path, tiny_data, t5_trio, monkeypatch):
    config_file = tmp_path / "exp.yaml"
    data = config_dict(tiny_data, t5_trio, tmp_path / "out")
    config_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    config = parse_config(data)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    code = "from taskrank.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "run", str(config_file), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and len(rerank_entries(config)) < 2:
            time.sleep(0.05)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = rerank_entries(config)
    assert before, "the subprocess was killed before it cached any step"
    for file in (config.cache_path() / "rerank").glob("*.json"):
        json.loads(file.read_text())  # every entry on disk is whole
    pending = to_run(config)
    assert pending > 0, "the subprocess finished before it was killed"
    counter = Counter(monkeypatch)
    run_experiment(config, progress=False)
    assert counter.reranks == pending
    after = rerank_entries(config)
    assert {k: after[k] for k in before} == before


def test_changed_alpha_recomputes_only_that_merge(tmp_path, tiny_data, t5_trio, monkeypatch):
    systems = [
        {"name": "BM25", "type": "first-stage"},
        {"name": "ranker", "type": "ranker"},
        {"name": "TA", "type": "merge", "alpha": 0.5},
    ]
    config = make_config(tiny_data, t5_trio, tmp_path / "out", systems=systems)
    run_experiment(config, progress=False)
    systems[2]["alpha"] = 0.7
    changed = make_config(tiny_data, t5_trio, tmp_path / "out", systems=systems)
    with pytest.raises(ConfigError, match="holds a different experiment"):
        run_experiment(changed, progress=False)
    counter = Counter(monkeypatch)
    result = run_experiment(changed, overwrite=True, progress=False)
    assert counter.reranks == 2  # α = 0.7 on dev (fusion tuning) and on test; the ranker is cached
    assert result.stats["status"] == "overwrite"
    assert (
        json.loads((tmp_path / "out" / "experiment.json").read_text())["fingerprint"] == changed.fingerprint()
    )


# --------------------------------------------------------------------------- variants


def test_fixed_fusion_oracle_sweep_without_dev(tmp_path, tiny_data, t5_trio):
    data = config_dict(tiny_data, t5_trio, tmp_path / "out")
    data["dataset"].pop("dev")
    data["systems"] = [
        {"name": "BM25", "type": "first-stage"},
        {"name": "ranker", "type": "ranker"},
        {"name": "oracle", "type": "sweep", "alphas": [0.0, 1.0], "select_on": "test"},
    ]
    data["fusion"] = {"method": "tuned", "weights": [0.3, 0.7]}
    result = run_experiment(parse_config(data), progress=False)
    sweep = result.results["sweeps"]["oracle"]
    assert sweep["dev"] is None and sweep["select_on"] == "test"
    assert result.results["fusion_weights"]["ranker"] == {
        "weights": [0.3, 0.7],
        "source": "fixed: no dev set to tune on",
    }
    assert "an oracle" in result.report.read_text()


def test_no_fusion_and_run_file_first_stage(tmp_path, tiny_data, t5_trio):
    from taskrank.data import load_beir, write_run
    from taskrank.retrieval import bm25_search

    test = load_beir(tiny_data, "test", progress=False)
    run = bm25_search(test.corpus, test.queries, k=10, progress=False)
    write_run(run, tmp_path / "bm25.trec")
    data = config_dict(tiny_data, t5_trio, tmp_path / "out")
    data["dataset"].pop("dev")
    data["first_stage"] = {"kind": "run", "k": 10, "run": str(tmp_path / "bm25.trec")}
    data["systems"] = [{"name": "first", "type": "first-stage"}, {"name": "ranker", "type": "ranker"}]
    data["fusion"] = {"method": "none"}
    result = run_experiment(parse_config(data), progress=False)
    ranker = json.loads((result.output / "metrics" / "test.json").read_text())["ranker"]
    assert result.results["fusion_weights"]["ranker"]["weights"] is None
    assert 0 <= ranker["mean"]["ndcg@10"] <= 1


# --------------------------------------------------------------------------- bad input


def refused(config, monkeypatch, error, match, **kwargs):
    counter = Counter(monkeypatch)
    with pytest.raises(error, match=match):
        run_experiment(config, progress=False, **kwargs)
    assert counter.loads == [] and counter.reranks == 0, "heavy work started before the error"


def test_missing_dataset(tmp_path, t5_trio, monkeypatch):
    config = make_config(tmp_path / "no-such-data", t5_trio, tmp_path / "out")
    refused(config, monkeypatch, DataError, r"dataset\.path .*no-such-data")


def test_missing_dev_split(tmp_path, tiny_data, t5_trio, monkeypatch):
    data = config_dict(tiny_data, t5_trio, tmp_path / "out")
    data["dataset"]["dev"] = {"split": "validation"}
    refused(parse_config(data), monkeypatch, DataError, r"dataset\.dev\.split 'validation'")


def test_missing_checkpoint(tmp_path, tiny_data, t5_trio, monkeypatch):
    trio = {**t5_trio, "domain": tmp_path / "nowhere"}
    config = make_config(tiny_data, trio, tmp_path / "out")
    refused(config, monkeypatch, CheckpointError, r"models\.domain: .*nowhere")


def test_layer_past_the_models_depth(tmp_path, tiny_data, t5_trio, monkeypatch):
    systems = [
        {"name": "BM25", "type": "first-stage"},
        {"name": "TA", "type": "merge", "alpha": 0.5, "layers": "0-2"},
    ]
    config = make_config(tiny_data, t5_trio, tmp_path / "out", systems=systems)
    refused(
        config,
        monkeypatch,
        ConfigError,
        r"systems\[1\] \('TA'\): layer 2 is past the model's depth: .* has 2 layers",
    )
    systems[1] = {"name": "abl", "type": "ablation", "alpha": 0.5, "layers": [1, 5]}
    config = make_config(tiny_data, t5_trio, tmp_path / "out", systems=systems)
    refused(config, monkeypatch, ConfigError, "layer 5 is past the model's depth")


def test_kind_that_does_not_fit_the_checkpoint(tmp_path, tiny_data, t5_trio, monkeypatch):
    data = config_dict(tiny_data, t5_trio, tmp_path / "out")
    data["models"]["kind"] = "cross-encoder"
    refused(parse_config(data), monkeypatch, ModelError, r"models\.ranker .*kind 'cross-encoder'")


def test_output_holding_something_else(tmp_path, tiny_data, t5_trio, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    config = make_config(tiny_data, t5_trio, out, systems=[{"name": "BM25", "type": "first-stage"}])
    refused(config, monkeypatch, ConfigError, r"holds files taskrank did not write \(.*notes\.txt")
    assert (out / "notes.txt").read_text() == "mine"
    # --overwrite replaces only what taskrank wrote: a file it did not write is refused, and kept
    with pytest.raises(ConfigError, match=r"holds .*notes\.txt, which taskrank did not write"):
        run_experiment(config, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert run_experiment(config, overwrite=True, progress=False).report.is_file()


def test_output_that_is_a_file(tmp_path, tiny_data, t5_trio, monkeypatch):
    (tmp_path / "out").write_text("x")
    config = make_config(tiny_data, t5_trio, tmp_path / "out")
    refused(config, monkeypatch, ConfigError, "exists and is not a folder")


def test_dry_run_plans_without_scoring(tmp_path, tiny_data, t5_trio, monkeypatch):
    config = make_config(tiny_data, t5_trio, tmp_path / "out")
    counter = Counter(monkeypatch)
    text = plan_experiment(config)
    assert counter.loads == [] and counter.reranks == 0
    assert not (tmp_path / "out").exists(), "a dry run wrote the output folder"
    for system in config.systems:
        assert f"- {system.name} (" in text
    assert "(new)" in text and "model depth: 2 layers" in text
    assert "to run  rerank TA α=0.5: α=0.5 on dev, ≤40 pairs" in text  # the sweep's α=0.5 is the same step
    assert "to run  first-stage bm25 test" in text


def test_dry_run_lists_the_dev_first_stage_only_when_dev_is_scored(tmp_path, tiny_data, t5_trio):
    systems = [{"name": "BM25", "type": "first-stage"}, {"name": "ranker", "type": "ranker"}]
    config = make_config(tiny_data, t5_trio, tmp_path / "out", systems=systems, fusion={"method": "fixed"})
    text = plan_experiment(config)
    assert "first-stage bm25 test" in text and "first-stage bm25 dev" not in text  # nothing uses dev
    assert "total: 2 step(s) to run" in text
    run_experiment(config, progress=False)
    assert len(list((config.cache_path() / "first-stage").glob("*.json"))) == 1  # test only, as planned
    assert "total: 0 step(s) to run" in plan_experiment(config)
    tuned = make_config(tiny_data, t5_trio, tmp_path / "tuned", systems=systems)
    assert "first-stage bm25 dev" in plan_experiment(tuned)  # the fusion weights are tuned on dev


def test_sweep_without_test_plot_scores_test_at_the_chosen_alpha_only(
    tmp_path, tiny_data, t5_trio, monkeypatch
):
    systems = [{"name": "sweep", "type": "sweep", "alphas": [0.0, 0.5, 1.0], "plot_test": False}]
    config = make_config(tiny_data, t5_trio, tmp_path / "out", systems=systems)
    plan = Experiment(config, progress=False)
    plan.prepare()
    steps = plan.plan()
    assert [s.label for s in steps if s.cached is None] == ["sweep: test at the chosen α"]
    counter = Counter(monkeypatch)
    result = run_experiment(config, progress=False)
    assert counter.reranks == 3 + 1  # every α on dev, then the chosen one on test
    sweep = result.results["sweeps"]["sweep"]
    best = sweep["alphas"].index(sweep["best_alpha"])
    assert [v is not None for v in sweep["test"]] == [i == best for i in range(3)]


# --------------------------------------------------------------------------- handlers and plan order


def test_every_system_class_has_a_handler():
    from taskrank.config.systems import SYSTEM_CLASSES
    from taskrank.experiment.systems import HANDLERS

    assert {cls.__name__ for cls in HANDLERS} == {cls.__name__ for cls in SYSTEM_CLASSES}
    assert set(HANDLERS) == set(SYSTEM_CLASSES)


def test_dry_run_lists_the_reranks_in_the_order_the_run_does_them(tmp_path, tiny_data, t5_trio, monkeypatch):
    from taskrank.experiment.cache import StepCache
    from taskrank.experiment.plan import needed

    systems = [
        {"name": "ranker", "type": "ranker"},
        {"name": "domain", "type": "domain"},  # scored first by the run, whatever its place
        {"name": "ablation", "type": "ablation", "alpha": 0.5, "modes": ["except", "only"]},
        {"name": "sweep", "type": "sweep", "alphas": [0.0, 1.0]},
    ]
    config = make_config(tiny_data, t5_trio, tmp_path / "out", systems=systems)
    experiment = Experiment(config, progress=False)
    experiment.prepare()
    steps = experiment.steps
    planned = list(dict.fromkeys(steps.rerank_key(n.state, n.split) for n in needed(steps)))
    done: list[str] = []
    original = StepCache.put

    def put(self, step, key, value, inputs=None):
        if step == "rerank":
            done.append(key)
        return original(self, step, key, value, inputs)

    monkeypatch.setattr(StepCache, "put", put)
    result = run_experiment(config, progress=False)
    assert done == planned
    ablation = result.results["ablations"]["ablation"]
    assert list(ablation["variants"]["fused"])[2:] == ["only", "except"]  # reported in that order
    text = plan_experiment(make_config(tiny_data, t5_trio, tmp_path / "plan", systems=systems))
    assert text.index("rerank domain:") < text.index("rerank ranker:")
    assert text.index("only layers 1 on test") < text.index("except layers 0 on test")


def test_preparing_again_keeps_the_loaded_model(tmp_path, tiny_data, t5_trio, monkeypatch):
    from taskrank.experiment import ModelState

    systems = [{"name": "ranker", "type": "ranker"}, {"name": "TA", "type": "merge", "alpha": 0.5}]
    config = make_config(tiny_data, t5_trio, tmp_path / "out", systems=systems, fusion={"method": "fixed"})
    counter = Counter(monkeypatch)
    experiment = Experiment(config, progress=False)
    experiment.prepare()
    experiment.rerank(ModelState("ranker"), experiment.data.test)
    pool = experiment.steps.pool
    result = experiment.run()  # prepares again: the merge is made on the ranker already loaded
    assert experiment.steps.pool is pool
    assert counter.loads == [str(config.models.ranker)]
    assert result.stats["model_loads"] == ["ranker"]
