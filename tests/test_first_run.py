"""The first run a newcomer sees (issue 12, items 10–12): every long step says what it does, no
kernel is compiled on the first run, stderr holds no stray debug lines or warnings, and torch
scores on the threads this process may use (``--threads``, ``scoring.threads``), recorded in
``environment.json``."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _cli import run_cli
from _experiment_fixtures import config_dict, make_config, write_tiny_beir
from taskrank import threads as threads_module
from taskrank.data import write_run
from taskrank.errors import ConfigError
from taskrank.experiment import run_experiment
from taskrank.rerankers.base import Reranker
from taskrank.threads import available_cpus, cgroup_cpu_limit, resolve_threads

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "src" / "taskrank" / "demo_data"
# what must never reach a user's stderr (issue 12, item 11)
NOISE = re.compile(r"DEBUG|NumbaTypeSafetyWarning|Warning:|project\.license")


def taskrank_process(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, list[tuple[float, str]]]:
    """Run ``taskrank ARGS`` as a user would: a new process whose output is not a terminal. Returns
    the exit status and the lines of stdout and stderr together (one pipe, so in the order they
    were written; rich draws its bars on stdout), each with the seconds since the start at which
    it arrived."""
    cmd = [sys.executable, "-c", "from taskrank.cli import entry; entry()", *args]
    start = time.perf_counter()
    process = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert process.stdout is not None
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in process.stdout]
    return process.wait(timeout=60), lines


def fresh_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a newcomer's first run: empty numba and matplotlib caches."""
    numba, mpl = tmp_path / "numba-cache", tmp_path / "mpl-config"
    numba.mkdir()
    mpl.mkdir()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba), "MPLCONFIGDIR": str(mpl)}
    env.pop("OMP_NUM_THREADS", None)
    return env


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- items 10 and 11


def test_first_demo_names_every_long_step_compiles_nothing_and_writes_no_noise(tmp_path):
    env = fresh_env(tmp_path)
    out = tmp_path / "demo"
    code, lines = taskrank_process(["demo", "--quick", "--out", str(out), "--threads", "1"], tmp_path, env)
    text = "\n".join(line for _, line in lines)
    assert code == 0, text
    assert "| system |" in text
    # nothing compiled: the metrics are trec_eval's C code, not numba kernels (60-110 s before)
    assert files_in(tmp_path / "numba-cache") == []
    assert not NOISE.search(text), [line for _, line in lines if NOISE.search(line)]

    # a line before each long step, in order, the first one at once
    steps = [
        "» taskrank demo:",
        "» building the tiny pretrained T5",
        "» training the ranker on the general queries",
        "train monot5",
        "» adapting the pretrained model",
        "adapt",
        "» running the experiment",
        "monoT5 · ranker · dev split",
        "monoT5 · ranker · test split",
    ]
    seen = [next((i for i, (_, line) in enumerate(lines) if line.startswith(s)), None) for s in steps]
    assert None not in seen, dict(zip(steps, seen, strict=True))
    assert seen == sorted(seen), dict(zip(steps, seen, strict=True))
    assert seen[0] == 0 and lines[0][0] < 15.0, lines[:2]
    times = [0.0] + [t for t, _ in lines]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) < 30.0, lines

    # each scoring bar names the model state and the split: no two bars read alike
    bars = [re.sub(r" ━.*", "", line) for _, line in lines if line.startswith("monoT5 ·")]
    assert len(bars) == len(set(bars)) > 2, bars
    assert "monoT5 · TA α=0.5 · test split" in bars and "monoT5 · domain model · test split" in bars
    # a system whose name is not its model state's is named too (the sweep, the ablation)
    assert any(bar.startswith("monoT5 · TA dev-tuned α: TA α=") for bar in bars), bars
    assert "monoT5 · layer ablation: TA α=0.5, only layers 1 · test split" in bars, bars
    assert json.loads((out / "results" / "environment.json").read_text())["threads"] == 1


def test_retrieve_and_evaluate_compile_nothing_and_keep_stderr_clean(tmp_path):
    env = fresh_env(tmp_path)
    run, index, qrels = tmp_path / "bm25.trec", tmp_path / "index", DEMO_DATA / "qrels" / "test.tsv"
    args = ["retrieve", "-d", str(DEMO_DATA), "--out", str(run), "-k", "30", "--index-cache", str(index)]
    code, lines = taskrank_process(args, tmp_path, env)
    assert code == 0, lines
    code, more = taskrank_process(
        ["evaluate", str(run), "--qrels", str(qrels), "-m", "ndcg@10,p@10"], tmp_path, env
    )
    assert code == 0, more
    # the demo's BM25 row, as trec_eval gives it
    assert any("| bm25 | **0.7647** | **0.5750** |" in line for _, line in more), more
    assert files_in(tmp_path / "numba-cache") == []
    noisy = [line for _, line in lines + more if NOISE.search(line)]
    assert noisy == []


def test_pyproject_builds_without_the_license_deprecation(tmp_path):
    """setuptools warned three times at install: "project.license as a TOML table is deprecated"."""
    (tmp_path / "src" / "taskrank").mkdir(parents=True)
    (tmp_path / "src" / "taskrank" / "__init__.py").write_text("")
    for name in ("pyproject.toml", "README.md"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    (tmp_path / "meta").mkdir()
    script = "from setuptools import build_meta as b; print(b.prepare_metadata_for_build_wheel('meta'))"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "project.license" not in done.stdout + done.stderr
    metadata = next((tmp_path / "meta").glob("*.dist-info")) / "METADATA"
    assert "License-Expression: Apache-2.0" in metadata.read_text()


# --------------------------------------------------------------------------- item 12: the resolver


@pytest.fixture
def fake_cgroups(tmp_path, monkeypatch):
    """An empty cgroup tree and /proc/self/cgroup under tmp_path, and an affinity of 8 CPUs."""
    root = tmp_path / "cgroup"
    root.mkdir()
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/\n")
    monkeypatch.setattr(threads_module, "CGROUP_ROOT", root)
    monkeypatch.setattr(threads_module, "PROC_CGROUP", proc)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads_module, "_IGNORED", set())  # each test sees its own warnings
    return root, proc


def test_cgroup_v2_quota_caps_the_affinity(fake_cgroups):
    root, _ = fake_cgroups
    assert cgroup_cpu_limit() is None and available_cpus() == 8  # no quota: the affinity mask
    (root / "cpu.max").write_text("max 100000\n")
    assert available_cpus() == 8
    (root / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: rounded up
    assert cgroup_cpu_limit() == 1.5 and available_cpus() == 2 and resolve_threads(None) == 2


def test_cgroup_v2_limit_of_a_parent_cgroup_applies(fake_cgroups):
    root, proc = fake_cgroups
    proc.write_text("0::/jobs/me\n")
    (root / "jobs" / "me").mkdir(parents=True)
    (root / "jobs" / "me" / "cpu.max").write_text("max 100000\n")
    (root / "jobs" / "cpu.max").write_text("300000 100000\n")
    assert available_cpus() == 3


def test_cgroup_v1_quota_and_period(fake_cgroups):
    root, proc = fake_cgroups
    proc.write_text("4:cpu,cpuacct:/\n3:memory:/x\n")
    v1 = root / "cpu,cpuacct"
    v1.mkdir()
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert available_cpus() == 8
    (v1 / "cpu.cfs_quota_us").write_text("200000\n")
    assert available_cpus() == 2


def test_affinity_below_the_quota_wins(fake_cgroups, monkeypatch):
    root, _ = fake_cgroups
    (root / "cpu.max").write_text("400000 100000\n")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert available_cpus() == 1


def test_resolve_threads_explicit_environment_and_refusals(fake_cgroups, monkeypatch, caplog):
    root, _ = fake_cgroups
    (root / "cpu.max").write_text("200000 100000\n")
    assert resolve_threads(3) == 3  # asked for: kept, even above the quota
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a user's own setting is kept
    assert resolve_threads(None) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert resolve_threads(None) == 2
    assert "ignoring OMP_NUM_THREADS='many'" in caplog.text
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match=r"threads must be an integer >= 1"):
            resolve_threads(bad)  # type: ignore[arg-type]


def test_omp_num_threads_garbage_is_ignored_once_and_never_crashes(fake_cgroups, monkeypatch, caplog):
    root, _ = fake_cgroups
    (root / "cpu.max").write_text("200000 100000\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # OpenMP's nested form: the outer level counts
    assert resolve_threads(None) == 4
    for garbage in ("\u00b2", "\u0663", "0", "-1", "1.5", ",", "2 3"):  # "²" and "٣" pass str.isdigit
        monkeypatch.setenv("OMP_NUM_THREADS", garbage)
        assert resolve_threads(None) == 2, garbage
    caplog.clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    for _ in range(5):  # a run resolves the threads at every scoring pass
        assert resolve_threads(None) == 2
    assert caplog.text.count("ignoring OMP_NUM_THREADS='many'") == 1


# --------------------------------------------------------------------------- item 12: applied


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny_words) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("beir") / "tiny", tiny_words)


@pytest.fixture
def threads_while_scoring(monkeypatch):
    """torch's thread count at each re-ranking pass, with the process itself on 2 threads."""
    seen: list[int] = []
    original = Reranker.rerank

    def rerank(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Reranker, "rerank", rerank)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield seen
    torch.set_num_threads(before)


SMALL = [{"name": "BM25", "type": "first-stage"}, {"name": "ranker", "type": "ranker"}]


def test_scoring_threads_reach_torch_and_environment_json(
    tmp_path, tiny_data, t5_trio, threads_while_scoring
):
    config = make_config(
        tiny_data, t5_trio, tmp_path / "out", systems=SMALL, fusion={"method": "none"},
        scoring={"device": "cpu", "batch_size": 32, "max_length": 64, "top_k": 10, "threads": 1},
    )  # fmt: skip
    result = run_experiment(config, progress=False)
    assert threads_while_scoring == [1]  # the ranker on the test split
    assert torch.get_num_threads() == 2  # restored after scoring
    assert json.loads((result.output / "environment.json").read_text())["threads"] == 1


def test_run_threads_option_overrides_and_the_default_is_the_usable_cores(
    tmp_path, tiny_data, t5_trio, threads_while_scoring, monkeypatch, capsys
):
    import yaml

    data = config_dict(tiny_data, t5_trio, tmp_path / "out", systems=SMALL, fusion={"method": "none"})
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True))
    environment = tmp_path / "out" / "environment.json"

    code, _, err = run_cli(monkeypatch, capsys, "run", str(config), "--no-progress", "--threads", "1")
    assert code == 0, err
    assert threads_while_scoring == [1]
    assert json.loads(environment.read_text())["threads"] == 1

    # the same folder resumes with another thread count (a machine setting, not the experiment);
    # without --threads or scoring.threads: the cores this process may use
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads_module, "available_cpus", lambda: 3)
    code, _, err = run_cli(monkeypatch, capsys, "run", str(config), "--no-progress")
    assert code == 0, err
    assert threads_while_scoring == [1]  # every step cached
    assert json.loads(environment.read_text())["threads"] == 3
    config.write_text(yaml.safe_dump({**data, "output": str(tmp_path / "again")}, allow_unicode=True))
    code, _, err = run_cli(monkeypatch, capsys, "run", str(config), "--no-progress")
    assert code == 0, err
    assert threads_while_scoring == [1, 3]
    assert json.loads((tmp_path / "again" / "environment.json").read_text())["threads"] == 3


def test_rerank_threads_option_reaches_torch(
    tmp_path, tiny_data, t5_trio, threads_while_scoring, monkeypatch, capsys
):
    candidates = tmp_path / "candidates.trec"
    write_run({f"q{i}": {f"d{j}": float(10 - j) for j in range(5)} for i in range(8)}, candidates)
    out = tmp_path / "reranked.trec"
    args = ["rerank", "-m", t5_trio["ranker"], "-k", "monot5", "-d", tiny_data, "-c", candidates, "-o", out]
    code, stdout, err = run_cli(monkeypatch, capsys, *args, "--device", "cpu", "--threads", "1")
    assert code == 0, err
    assert threads_while_scoring == [1] and torch.get_num_threads() == 2
    assert "on cpu, float32 (the default), 1 CPU thread(s)" in stdout
    code, _, err = run_cli(monkeypatch, capsys, *args, "--overwrite", "--threads", "0")
    assert code == 2 and "--threads" in err


# --------------------------------------------------------------------------- item 13


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not found"
    return match.group(1)


def test_the_demo_time_stated_is_the_benchmarked_one(monkeypatch, capsys):
    """README and `taskrank demo --help` state the medians that benchmarks/demo.md records."""
    page = (ROOT / "benchmarks" / "demo.md").read_text()
    cold, warm, rerun = (
        found(rf"median {kind} .*?: +([\d.]+) s", page) for kind in ("cold", "warm", "rerun")
    )
    code, out, _ = run_cli(monkeypatch, capsys, "demo", "--help")
    assert code == 0
    stated = {"help": found(r"about (\d+) s on 2 CPU cores", " ".join(out.split()))}
    for name in ("README.md", "docs/experiments.md"):
        text = " ".join((ROOT / name).read_text().split())
        assert f"{cold} s with empty caches, {warm} s with warm ones, and {rerun} s to rerun" in text, name
        stated[name] = found(r"about (\d+) seconds on two CPU cores", text)
    for where, seconds in stated.items():
        assert abs(float(seconds) - float(cold)) <= 0.15 * float(cold), where
