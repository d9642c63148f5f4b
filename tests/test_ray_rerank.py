"""``taskrank rerank --engine ray``: the candidate run streamed through Ray Data on a local 2-CPU
cluster that the tests start themselves. Its output file equals the local command's byte for byte
(scores are written with ``repr``), for every scoring family; each bad input gets its error."""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from pathlib import Path

import pytest

from _cli import run_cli
from taskrank.data import read_run, write_run

ray = pytest.importorskip("ray")

pytest.importorskip("ray.data")  # pyarrow and pandas: the ray[data] extra

TOP_K = 12
BATCH = "4"  # many batches of different widths: a plan that differs from the local one shows


@pytest.fixture(scope="module")
def beir(tmp_path_factory, tiny_words) -> tuple[Path, Path]:
    """A BEIR folder whose documents hold 3 to 30 words (batches of many widths), two documents
    with the same text and a query whose text is a document's (a bi-encoder encodes each text once),
    and a candidate run of 20 documents for each of 10 queries, with tied scores."""
    rng = random.Random(7)
    root = tmp_path_factory.mktemp("ray-rerank") / "beir"
    (root / "qrels").mkdir(parents=True)
    texts = [" ".join(rng.sample(tiny_words, rng.randint(3, 30))) for _ in range(50)]
    texts[7] = texts[3]
    queries = {f"q{i}": " ".join(rng.sample(tiny_words, rng.randint(1, 4))) for i in range(10)}
    queries["q9"] = texts[5]
    with open(root / "corpus.jsonl", "w") as handle:
        for i, text in enumerate(texts):
            title = "" if i % 3 else rng.choice(tiny_words)
            handle.write(json.dumps({"_id": f"d{i}", "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as handle:
        for qid, text in queries.items():
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    qrels = "".join(f"{qid}\td{i * 5}\t1\n" for i, qid in enumerate(queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    run = {q: {f"d{d}": float(rng.randint(0, 6)) for d in rng.sample(range(50), 20)} for q in queries}
    write_run(run, root.parent / "bm25.trec")
    return root, root.parent / "bm25.trec"


def rerank(monkeypatch, capsys, model, kind, beir, out: Path, *extra: str) -> tuple[int, str, str]:
    dataset, candidates = beir
    args = ["rerank", "-m", model, "-k", kind, "-d", dataset, "-c", candidates, "-o", out]
    return run_cli(
        monkeypatch, capsys, *args, "--top-k", TOP_K, "--batch-size", BATCH, "--device", "cpu", *extra
    )


MODELS = [
    ("cross-encoder", "bert_trio", "ranker"),
    ("bi-encoder", "bert_trio", "pretrained"),
    ("monot5", "t5_trio", "ranker"),
    ("query-likelihood", "llama_trio", "ranker"),
]


# -- errors first: they need no cluster, or none started yet ------------------------------------


def test_without_ray_installed_the_error_names_the_extra(monkeypatch, capsys, tmp_path, beir, bert_trio):
    monkeypatch.setitem(sys.modules, "ray", None)
    code, _, err = rerank(
        monkeypatch,
        capsys,
        bert_trio["ranker"],
        "cross-encoder",
        beir,
        tmp_path / "r.trec",
        "--engine",
        "ray",
    )
    assert code == 2 and "--engine ray needs Ray" in err and "pip install 'taskrank[ray]'" in err
    assert not (tmp_path / "r.trec").exists()


def test_an_unreachable_address_is_named_within_30_seconds(monkeypatch, capsys, tmp_path, beir, bert_trio):
    if ray.is_initialized():
        ray.shutdown()
    start = time.monotonic()
    code, _, err = rerank(
        monkeypatch, capsys, bert_trio["ranker"], "cross-encoder", beir, tmp_path / "r.trec",
        "--address", "ray://127.0.0.1:9",
    )  # fmt: skip
    assert code == 2 and "--address 'ray://127.0.0.1:9': cannot reach a Ray cluster there" in err
    assert time.monotonic() - start < 30


def test_an_unknown_engine_is_refused(monkeypatch, capsys, tmp_path, beir, bert_trio):
    code, _, err = rerank(
        monkeypatch,
        capsys,
        bert_trio["ranker"],
        "cross-encoder",
        beir,
        tmp_path / "r.trec",
        "--engine",
        "dask",
    )
    assert code == 2 and "--engine 'dask': valid engines are local and ray" in err


def test_help_shows_the_engine_and_its_options(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "rerank", "--help")
    assert code == 0
    for option in ("--engine", "--address", "--workers", "--cpus-per-worker", "--gpus-per-worker"):
        assert option in out


# -- on the cluster -------------------------------------------------------------------------------


@pytest.fixture
def bars(monkeypatch) -> list[dict[str, float]]:
    """Every progress bar the Ray path draws: its total and how far it was advanced."""
    from taskrank.experiment import ray_data

    drawn, real = [], ray_data.progress_bar

    @contextlib.contextmanager
    def recorded(total, description, enabled, **kwargs):
        with real(total, description, enabled, **kwargs) as bar:
            seen = {"total": total, "advanced": 0}
            drawn.append(seen)
            advance = bar.advance
            bar.advance = lambda n=1, **fields: (
                seen.__setitem__("advanced", seen["advanced"] + n),
                advance(n),
            )
            yield bar

    monkeypatch.setattr(ray_data, "progress_bar", recorded)
    return drawn


def units(kind: str, beir) -> int:
    """What the bar counts: the pairs, or the distinct texts a bi-encoder encodes."""
    from taskrank.data import doc_text, load_beir, top_k

    data = load_beir(beir[0], progress=False)
    cut = top_k(read_run(beir[1]), TOP_K)
    if kind != "bi-encoder":
        return sum(len(docs) for docs in cut.values())
    texts = {data.queries[q] for q in cut} | {doc_text(data.corpus[d]) for docs in cut.values() for d in docs}
    return len(texts)


@pytest.mark.parametrize(("kind", "trio", "member"), MODELS, ids=[m[0] for m in MODELS])
def test_ray_writes_the_local_run_byte_for_byte_with_one_bar(
    cluster, request, monkeypatch, capsys, tmp_path, beir, bars, kind, trio, member
):
    model = request.getfixturevalue(trio)[member]
    local, remote = tmp_path / "local.trec", tmp_path / "ray.trec"
    assert rerank(monkeypatch, capsys, model, kind, beir, local, "--threads", "1", "-q")[0] == 0
    code, out, err = rerank(
        monkeypatch, capsys, model, kind, beir, remote, "--threads", "1", "--engine", "ray", "--workers", "2"
    )
    assert code == 0, err
    assert remote.read_text() == local.read_text()
    assert sum(len(docs) for docs in read_run(local).values()) == 10 * TOP_K
    # one bar over all the work, the workers and their devices announced before it
    assert bars == [{"total": units(kind, beir), "advanced": units(kind, beir)}]
    assert "Ray: 2 worker(s): " in err and err.count(" cpu") >= 2
    assert err.index("Ray: 2 worker(s)") < err.index("token lengths of ")
    assert "on Ray: 2 worker(s)" in out


def test_shards_of_queries_would_not_give_the_local_scores(beir, bert_trio):
    """Why the Ray path follows the local batch plan: scored in two shards of queries, the same
    pairs get other floats (batches of other sizes and widths)."""
    from taskrank.data import load_beir
    from taskrank.rerankers import load_reranker

    data = load_beir(beir[0], progress=False)
    run = read_run(beir[1])
    reranker = load_reranker(bert_trio["ranker"], "cross-encoder", device="cpu", batch_size=int(BATCH))
    whole = reranker.rerank(run, data.corpus, data.queries, top_k=TOP_K, progress=False)
    shards = {}
    for part in (dict(list(run.items())[:5]), dict(list(run.items())[5:])):
        shards.update(reranker.rerank(part, data.corpus, data.queries, top_k=TOP_K, progress=False))
    assert whole != shards
    assert all(abs(whole[q][d] - shards[q][d]) < 1e-5 for q in whole for d in whole[q])


def test_texts_are_packed_and_read_back():
    from taskrank.experiment.ray_plan import Texts, build_work

    texts = Texts(["α-helix", "", "naïve query", "plain"])
    assert len(texts) == 4 and [texts[i] for i in range(4)] == ["α-helix", "", "naïve query", "plain"]
    assert len(Texts([])) == 0
    work = build_work(
        [("q1", "d1"), ("q2", "d2"), ("q1", "d3")],
        {"d1": "x", "d2": "q", "d3": "x"},
        {"q1": "q", "q2": "r"},
        True,
    )
    assert [work.texts[i] for i in range(len(work.texts))] == ["q", "r", "x"]  # a local bi-encoder's order
    assert work.left.tolist() == [0, 1, 0] and work.right.tolist() == [2, 0, 2] and work.units == 3


def test_more_gpus_per_worker_than_any_node_has_is_refused_before_any_work(
    cluster, monkeypatch, capsys, tmp_path, beir, bert_trio
):
    out = tmp_path / "r.trec"
    code, _, err = rerank(
        monkeypatch, capsys, bert_trio["ranker"], "cross-encoder", beir, out, "--engine", "ray",
        "--gpus-per-worker", "1",
    )  # fmt: skip
    assert code == 2 and "--gpus-per-worker 1 is more than any node of the Ray cluster has" in err
    assert not out.exists()


def test_workers_with_other_versions_are_refused_naming_both(
    cluster, monkeypatch, capsys, tmp_path, beir, bert_trio
):
    from taskrank.experiment import ray_data

    real = ray_data.process_versions
    monkeypatch.setattr(ray_data, "process_versions", lambda: {**real(), "torch": "0.0.1"})
    code, _, err = rerank(
        monkeypatch,
        capsys,
        bert_trio["ranker"],
        "cross-encoder",
        beir,
        tmp_path / "r.trec",
        "--engine",
        "ray",
    )
    assert code == 2 and "the driver torch 0.0.1" in err and "runs torch " in err


def test_auto_dtype_is_resolved_on_the_workers_and_named(
    cluster, monkeypatch, capsys, tmp_path, beir, bert_trio
):
    from taskrank.devices import choose_dtype

    here = choose_dtype("auto").describe()  # what auto means on this machine, e.g. "float32 (auto: …)"
    local, remote = tmp_path / "local.trec", tmp_path / "ray.trec"
    model = bert_trio["ranker"]
    code, out, err = rerank(
        monkeypatch, capsys, model, "cross-encoder", beir, local, "--threads", "1", "--dtype", "auto"
    )
    assert code == 0, err
    assert f"on cpu, {here}, 1 CPU thread(s)" in out
    code, out, err = rerank(
        monkeypatch, capsys, model, "cross-encoder", beir, remote, "--threads", "1", "--dtype", "auto",
        "--engine", "ray", "--workers", "2",
    )  # fmt: skip
    assert code == 0, err
    assert remote.read_text() == local.read_text()
    assert f"; dtype {here}" in err and out.rstrip().split("; wrote")[0].endswith(here)


def test_workers_whose_auto_dtypes_differ_are_refused_naming_both():
    from types import SimpleNamespace

    from taskrank.config import ExecutionConfig
    from taskrank.errors import ConfigError
    from taskrank.experiment import ray_data

    driver = ray_data.process_versions()
    amx = {"dtype": "bfloat16", "dtype_reason": "auto: the CPU has amx_bf16"}
    old = {"dtype": "float32", "dtype_reason": "auto: the CPU has neither"}
    reports = [
        {**driver, "host": "amx-node", "device": "cpu", **amx},
        {**driver, "host": "old-node", "device": "cpu", **old},
    ]

    class FakeRay:
        exceptions = SimpleNamespace(RayError=RuntimeError)

        def remote(self, **_resources):
            return lambda fn: SimpleNamespace(remote=lambda *args: args)

        def get(self, refs):
            return reports[: len(refs)]

    pool = ray_data._Pool(FakeRay(), 2, ExecutionConfig(engine="ray"))
    spec = ray_data.RerankerSpec("m", "cross-encoder", device="cpu", dtype="auto")
    with pytest.raises(ConfigError, match="amx-node scores in bfloat16 .*old-node in float32"):
        ray_data._check_workers(pool, spec, progress=False)
    reports[1] = {**reports[0], "host": "amx-node-2"}
    assert ray_data._check_workers(pool, spec, progress=False) == (
        ["amx-node cpu", "amx-node-2 cpu"],
        "bfloat16 (auto: the CPU has amx_bf16)",
    )


def test_int8_on_ray_writes_the_local_int8_run(cluster, monkeypatch, capsys, tmp_path, beir, bert_trio):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    local, remote = tmp_path / "local.trec", tmp_path / "ray.trec"
    model = bert_trio["ranker"]
    common = ("--threads", "1", "--quantize", "int8")
    code, out, err = rerank(monkeypatch, capsys, model, "cross-encoder", beir, local, *common)
    assert code == 0, err
    assert "int8" in out
    code, out, err = rerank(
        monkeypatch,
        capsys,
        model,
        "cross-encoder",
        beir,
        remote,
        *common,
        "--engine",
        "ray",
        "--workers",
        "2",
    )
    assert code == 0, err
    assert "int8" in out and "on Ray: 2 worker(s)" in out
    assert remote.read_text() == local.read_text()  # the same batches, the same compiled model


def test_more_workers_than_the_cluster_can_place_still_finishes(
    cluster, monkeypatch, capsys, tmp_path, beir, bert_trio
):
    local, remote = tmp_path / "local.trec", tmp_path / "ray.trec"
    model = bert_trio["ranker"]
    assert rerank(monkeypatch, capsys, model, "cross-encoder", beir, local, "--threads", "1", "-q")[0] == 0
    code, _, err = rerank(
        monkeypatch,
        capsys,
        model,
        "cross-encoder",
        beir,
        remote,
        "--threads",
        "1",
        "--engine",
        "ray",
        "--workers",
        "3",
    )  # 3 workers of 1 CPU on a 2-CPU cluster: the pool runs with the workers it can place
    assert code == 0, err
    assert remote.read_text() == local.read_text()
