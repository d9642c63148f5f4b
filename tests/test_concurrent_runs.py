"""Two ``taskrank run`` processes started at once on one results folder and one step cache:
either both finish with the correct results, or the second is refused naming the first's pid;
the folder never mixes two experiments, and the shared cache stays whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _experiment_fixtures import config_dict, write_tiny_beir
from taskrank.config import parse_config
from taskrank.data import read_qrels, read_run
from taskrank.evaluation import evaluate

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
CODE = "from taskrank.cli import main; main()"
BOOKKEEPING = {"cache", ".taskrank.lock", ".taskrank-manifest.json"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny_words) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("beir") / "tiny", tiny_words)


def experiment(tmp_path: Path, tiny_data, t5_trio, name: str, out: Path, cache: Path, systems) -> Path:
    data = config_dict(tiny_data, t5_trio, out, systems=systems, cache_dir=str(cache))
    data["fusion"] = {"method": "fixed"}
    file = tmp_path / f"{name}.yaml"
    file.write_text(yaml.safe_dump(data, allow_unicode=True))
    return file


def start(config_file: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CODE, "run", str(config_file), "--no-progress"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out, err))
    return results


def files(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.relative_to(out).parts[0] not in BOOKKEEPING
    }


def check_folder(out: Path, config_file: Path) -> dict[str, bytes]:
    """The folder holds exactly the results of ``config_file``'s experiment, consistent with
    each other; returns its files."""
    config = parse_config(yaml.safe_load(config_file.read_text()))
    content = files(out)
    assert json.loads(content["experiment.json"])["fingerprint"] == config.fingerprint()
    assert yaml.safe_load(content["config.yaml"]) == config.model_dump(mode="json")
    results = json.loads(content["results.json"])
    assert results["experiment"] == config.fingerprint()
    names = [s.name for s in config.systems]
    assert [row["name"] for row in results["systems"]] == names
    rerankers = [s.name for s in config.systems if s.type != "first-stage"]  # fused, and the model alone
    expected = [f"runs/test/{n}.trec" for n in names] + [f"runs/test/model/{n}.trec" for n in rerankers]
    assert sorted(p for p in content if p.startswith("runs/")) == sorted(expected)
    qrels = read_qrels(Path(config.dataset.path) / "qrels" / "test.tsv")
    for row in results["systems"]:
        run = read_run(out / "runs" / "test" / f"{row['name']}.trec")
        assert evaluate(run, qrels, ["ndcg@10"]).mean["ndcg@10"] == pytest.approx(row["mean"]["ndcg@10"])
    manifest = set(json.loads((out / ".taskrank-manifest.json").read_text())["paths"])
    assert manifest == set(content), "the manifest lists exactly the files of the folder"
    return content


def check_cache(cache: Path) -> None:
    entries = [p for p in cache.rglob("*.json") if "bm25-index" not in p.parts]
    assert entries
    for entry in entries:
        json.loads(entry.read_text())  # whole: no torn or interleaved write
    assert not [p for p in cache.rglob("*") if ".tmp-" in p.name], "temporaries left in the cache"


SYSTEMS = [
    {"name": "BM25", "type": "first-stage"},
    {"name": "ranker", "type": "ranker"},
    {"name": "TA", "type": "merge", "alpha": 0.5},
]


def reference(tmp_path: Path, config_file: Path) -> tuple[str, dict[str, bytes]]:
    """The table and files of the experiment run alone, in this process, on one thread as the
    subprocesses are (OMP_NUM_THREADS=1: scores bit for bit equal), with a cache of its own."""
    from taskrank.experiment import run_experiment

    data = yaml.safe_load(config_file.read_text())
    data.update(output=str(tmp_path / "ref"), cache_dir=str(tmp_path / "ref-cache"))
    data.setdefault("scoring", {})["threads"] = 1  # not part of the experiment's fingerprint
    result = run_experiment(parse_config(data), progress=False)
    return result.table, files(tmp_path / "ref")


def test_one_experiment_twice_at_once(tmp_path, tiny_data, t5_trio):
    """Twice into one output and one cache, and a third time into another output sharing the
    cache: every run that finishes has the correct results; one refused names the other's pid."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    file = experiment(tmp_path, tiny_data, t5_trio, "exp", out, cache, SYSTEMS)
    elsewhere = experiment(tmp_path, tiny_data, t5_trio, "elsewhere", tmp_path / "out2", cache, SYSTEMS)
    procs = [start(file), start(file), start(elsewhere)]
    outcomes = finish(procs)
    table, expected = reference(tmp_path, file)
    same = outcomes[:2]
    assert 0 in [code for code, _, _ in same], same
    for (code, printed, err), other in zip(same, reversed(procs[:2]), strict=True):
        if code == 0:
            assert printed.split("\nreport:")[0].rstrip() == table.rstrip(), printed
        else:
            assert code == 2, err
            assert len(err.strip().splitlines()) == 1, err
            assert f"is in use by another taskrank run (pid {other.pid} " in err
    code, printed, err = outcomes[2]
    assert code == 0, err
    assert printed.split("\nreport:")[0].rstrip() == table.rstrip()
    for folder, config_file in ((out, file), (tmp_path / "out2", elsewhere)):
        content = check_folder(folder, config_file)
        for name in ("results.json", "metrics/test.json", *[f"runs/test/{s['name']}.trec" for s in SYSTEMS]):
            assert content[name] == expected[name], (folder, name)
    check_cache(cache)


def test_two_experiments_into_one_new_output(tmp_path, tiny_data, t5_trio):
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = experiment(tmp_path, tiny_data, t5_trio, "a", out, cache, SYSTEMS[:2])
    second = experiment(
        tmp_path, tiny_data, t5_trio, "b", out, cache, [SYSTEMS[0], {"name": "domain", "type": "domain"}]
    )
    procs = [start(first), start(second)]
    outcomes = finish(procs)
    codes = [code for code, _, _ in outcomes]
    assert sorted(codes) == [0, 2], outcomes
    winner = codes.index(0)
    _, _, err = outcomes[1 - winner]
    assert len(err.strip().splitlines()) == 1, err
    assert (
        f"is in use by another taskrank run (pid {procs[winner].pid} " in err
        or "holds a different experiment" in err
    ), err
    check_folder(out, (first, second)[winner])
    check_cache(cache)
