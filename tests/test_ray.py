"""The Ray engine (``execution.engine: ray``) on a local 2-CPU cluster that the tests start
themselves (no dashboard, nothing pre-started): the same runs and metrics as the local engine,
a killed worker retried, a restart reusing the cache, and each bad input's error."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from _experiment_fixtures import config_dict, write_tiny_beir
from taskrank.config import parse_config
from taskrank.errors import ConfigError
from taskrank.experiment import run_experiment
from taskrank.experiment.distributed import check_versions

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_words) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("ray") / "data", tiny_words)


def config(data: Path, trio, out: Path, **execution):
    base = config_dict(data, trio, out)
    base["systems"] = [
        {"name": "BM25", "type": "first-stage"},
        {"name": "ranker", "type": "ranker"},
        {"name": "sweep", "type": "sweep", "alphas": [0.0, 0.5, 1.0]},
    ]
    base["execution"] = execution
    return parse_config(base)


def outputs(result) -> dict[str, str]:
    """Every run file and the metrics of a results folder."""
    out = result.output
    files = {str(p.relative_to(out)): p.read_text() for p in sorted((out / "runs").rglob("*.trec"))}
    results = json.loads((out / "results.json").read_text())
    files["metrics"] = json.dumps([results["systems"], results["sweeps"]], sort_keys=True)
    return files


@pytest.fixture(scope="module")
def local(tmp_path_factory, data, t5_trio):
    return run_experiment(config(data, t5_trio, tmp_path_factory.mktemp("local") / "out"), progress=False)


def test_ray_gives_the_local_runs_and_metrics(cluster, tmp_path, data, t5_trio, local):
    result = run_experiment(config(data, t5_trio, tmp_path / "out", engine="ray", workers=2), progress=False)
    assert outputs(result) == outputs(local)
    assert result.stats["pairs_scored"] == local.stats["pairs_scored"] > 0
    env = json.loads((result.output / "environment.json").read_text())
    assert env["engine"] == "ray"


def test_a_worker_killed_mid_step_is_retried_and_nothing_changes(
    cluster, tmp_path, data, t5_trio, local, monkeypatch
):
    from taskrank.experiment import distributed

    engines, killed, real_rerank, real_wait = [], [], distributed.RayEngine.rerank, ray.wait

    def remember(self, *args, **kwargs):
        engines.append(self)
        return real_rerank(self, *args, **kwargs)

    def kill_once(refs, **kwargs):
        if engines and not killed:  # the worker handed the first chunk of the first step dies holding it
            killed.append(engines[-1].actors[-1])
            ray.kill(killed[0], no_restart=False)
        return real_wait(refs, **kwargs)

    monkeypatch.setattr(distributed.RayEngine, "rerank", remember)
    monkeypatch.setattr(ray, "wait", kill_once)
    result = run_experiment(config(data, t5_trio, tmp_path / "out", engine="ray", workers=2), progress=False)
    assert killed and outputs(result) == outputs(local)
    assert result.stats["pairs_scored"] == local.stats["pairs_scored"]  # no chunk counted twice


def test_a_rerun_on_ray_reuses_the_local_cache(cluster, tmp_path, data, t5_trio, local):
    cached = config(data, t5_trio, tmp_path / "out", engine="ray", workers=1)
    cached = cached.model_copy(update={"cache_dir": str(local.output / "cache")})
    result = run_experiment(cached, progress=False)
    assert result.stats["pairs_scored"] == 0 and outputs(result) == outputs(local)


def test_without_ray_installed_the_error_names_the_extra(tmp_path, data, t5_trio, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'taskrank\[ray\]'"):
        run_experiment(config(data, t5_trio, tmp_path / "out", engine="ray"), progress=False)


def test_an_unreachable_address_is_named_within_30_seconds(tmp_path, data, t5_trio):
    if ray.is_initialized():
        ray.shutdown()
    start = time.monotonic()
    with pytest.raises(ConfigError, match="execution.address 'ray://127.0.0.1:9'"):
        run_experiment(
            config(data, t5_trio, tmp_path / "out", engine="ray", address="ray://127.0.0.1:9"),
            progress=False,
        )
    assert time.monotonic() - start < 30


def test_a_host_and_port_where_nothing_listens_is_named_at_once(tmp_path, data, t5_trio):
    """Ray itself retries such an address for minutes; taskrank tries a TCP connection first."""
    import socket

    if ray.is_initialized():
        ray.shutdown()
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(
        ConfigError, match=rf"execution.address '127.0.0.1:{port}': cannot reach a Ray cluster"
    ):
        run_experiment(
            config(data, t5_trio, tmp_path / "out", engine="ray", address=f"127.0.0.1:{port}"),
            progress=False,
        )
    assert time.monotonic() - start < 30 and not ray.is_initialized()


def test_an_error_a_worker_raises_comes_back_as_one_line(cluster, tmp_path, data, t5_trio):
    import torch

    from taskrank.errors import ModelError
    from taskrank.experiment.distributed import RayEngine

    if torch.cuda.is_available():
        pytest.skip("the worker needs a machine without CUDA to fail")
    cfg = config(data, t5_trio, tmp_path / "out", engine="ray", workers=1)
    cfg = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"device": "cuda"})})
    with pytest.raises(ModelError, match="CUDA is not available") as raised:
        RayEngine(cfg, None, None, threads=1, progress=False)  # the worker resolves the device first
    assert "\n" not in str(raised.value)


def test_more_gpus_per_worker_than_any_node_has_is_refused_before_any_work(cluster, tmp_path, data, t5_trio):
    with pytest.raises(ConfigError, match="gpus_per_worker 1 is more than any node of the Ray cluster has"):
        run_experiment(
            config(data, t5_trio, tmp_path / "out", engine="ray", gpus_per_worker=1), progress=False
        )
    assert not list((tmp_path / "out").rglob("*.trec"))


def test_more_workers_than_the_cluster_can_place_is_an_error_not_a_hang(
    cluster, tmp_path, data, t5_trio, monkeypatch
):
    from taskrank.experiment import distributed

    monkeypatch.setattr(distributed, "PLACEMENT_TIMEOUT", 5)
    cfg = config(data, t5_trio, tmp_path / "out", engine="ray", workers=3)  # 3 × 1 CPU on 2 CPUs
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"execution.workers 3: only 2 Ray worker\(s\) started within 5 s"):
        run_experiment(cfg, progress=False)
    assert time.monotonic() - started < 60
    assert not list((tmp_path / "out").rglob("*.trec"))
    assert cluster.is_initialized()  # the tests' cluster: taskrank stops only a cluster it started
    deadline = time.monotonic() + 20  # the workers it started are gone: their CPUs come back
    while cluster.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.available_resources().get("CPU", 0) == 2


def test_workers_with_other_versions_are_refused_naming_both():
    driver = {"taskrank": "0.1.0", "torch": "2.13.0", "host": "a"}
    check_versions(driver, [dict(driver, host="b")])
    with pytest.raises(ConfigError, match="runs torch 2.12.0, the driver torch 2.13.0"):
        check_versions(driver, [dict(driver, host="b", torch="2.12.0")])


def test_a_restart_after_the_driver_is_killed_reuses_the_cache(
    cluster, tmp_path, data, t5_trio, local, monkeypatch
):
    from taskrank.experiment import distributed

    real, steps_done = distributed.RayEngine.rerank, []

    def killed_after_two(self, *args, **kwargs):
        if len(steps_done) == 2:
            raise KeyboardInterrupt  # the driver stops: two steps are in the cache
        steps_done.append((args[0], args[-1]))  # (model state, bar label naming the split)
        return real(self, *args, **kwargs)

    ray_config = config(data, t5_trio, tmp_path / "out", engine="ray", workers=2)
    monkeypatch.setattr(distributed.RayEngine, "rerank", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(ray_config, progress=False)
    monkeypatch.undo()
    scored = []
    monkeypatch.setattr(
        distributed.RayEngine,
        "rerank",
        lambda self, *a, **k: scored.append((a[0], a[-1])) or real(self, *a, **k),
    )
    result = run_experiment(ray_config, progress=False)
    assert result.stats["status"] == "resume" and outputs(result) == outputs(local)
    assert not set(scored) & set(steps_done) and len(scored) > 0  # only the missing steps ran


def test_workers_scoring_on_another_device_than_the_keys_name_are_refused(
    cluster, tmp_path, data, t5_trio, monkeypatch
):
    from taskrank.experiment import distributed

    real = distributed.Worker.versions
    monkeypatch.setattr(distributed.Worker, "versions", lambda self: {**real(self), "device": "cuda:0"})
    with pytest.raises(ConfigError, match="resolves to cpu here but to cuda:0 on the Ray worker"):
        run_experiment(config(data, t5_trio, tmp_path / "out", engine="ray", workers=1), progress=False)
    # the refused worker is not left behind: its CPU comes back (or the cluster it started is gone)
    deadline = time.monotonic() + 20
    while ray.is_initialized() and time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) == ray.cluster_resources().get("CPU"):
            break
        time.sleep(0.2)
    else:
        assert not ray.is_initialized(), "a refused worker still holds its CPU"


def test_one_bar_counts_every_step_from_the_planned_total_and_the_workers_come_first(
    cluster, tmp_path, data, t5_trio, monkeypatch, caplog
):
    import contextlib
    import logging

    from taskrank.experiment import distributed

    bars, real = [], distributed.progress_bar

    @contextlib.contextmanager
    def recorded(total, description, enabled, *, completed=0, **kwargs):
        seen = {"total": total, "completed": completed, "advanced": 0}
        bars.append(seen)
        with real(total, description, enabled, completed=completed, **kwargs) as bar:
            advance = bar.advance
            bar.advance = lambda n=1, **f: (seen.__setitem__("advanced", seen["advanced"] + n), advance(n))
            yield bar

    monkeypatch.setattr(distributed, "progress_bar", recorded)
    caplog.set_level(logging.INFO, logger="taskrank.progress")
    result = run_experiment(config(data, t5_trio, tmp_path / "out", engine="ray", workers=2), progress=False)
    scored = result.stats["pairs_scored"]
    assert len(bars) > 1 and sum(b["advanced"] for b in bars) == scored
    # one count over all steps: each step's bar starts where the last one ended, against one total
    assert [b["completed"] for b in bars] == [sum(b["advanced"] for b in bars[:i]) for i in range(len(bars))]
    assert {b["total"] for b in bars} == {bars[0]["total"]} and bars[0]["total"] >= scored
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Ray: 2 worker(s): ") and m.count(" cpu") == 2 for m in messages)


@pytest.fixture(scope="module")
def varied(tmp_path_factory, tiny_words) -> Path:
    """The tiny dataset with documents of 3 to 30 words: batches of many widths and sizes, where
    shards of queries scored apart would get other floats than one local pass over the step."""
    import random

    root = write_tiny_beir(tmp_path_factory.mktemp("ray-varied") / "data", tiny_words)
    rng = random.Random(5)
    lines = (root / "corpus.jsonl").read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    for doc in docs:
        doc["text"] = " ".join(rng.sample(tiny_words, rng.randint(3, 30)))
    (root / "corpus.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    return root


@pytest.mark.parametrize("kind", ["bi-encoder", "cross-encoder"])
def test_ray_gives_the_local_runs_bit_for_bit_on_documents_of_many_lengths(
    cluster, tmp_path, varied, bert_trio, kind
):
    def run(out: Path, **execution):
        cfg = config_dict(varied, bert_trio, out)
        cfg["models"]["kind"] = kind
        cfg["scoring"]["batch_size"] = 4
        cfg["systems"] = [{"name": "sweep", "type": "sweep", "alphas": [0.0, 0.5]}]
        cfg["execution"] = execution
        return run_experiment(parse_config(cfg), progress=False)

    local = run(tmp_path / "local")
    assert outputs(run(tmp_path / "ray", engine="ray", workers=2)) == outputs(local)
