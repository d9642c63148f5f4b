"""The command line's error contract: a user-facing failure is one line ``error: ...`` naming the
path, value or id at fault, with exit status 2; a bug in taskrank is a traceback and a line asking
for a report (status 1); an interrupt is ``interrupted`` and status 130.

Each case runs ``taskrank`` in this process (its ``main``), as a user would type it."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml

from _cli import run_cli as taskrank
from _data_fixtures import make_beir, write_jsonl
from taskrank.cli import BUG_LINE
from taskrank.config import dump_config, load_config, parse_config
from taskrank.data import load_corpus, load_queries, read_qrels, read_run, write_run
from taskrank.errors import ConfigError, DataError


def assert_one_line_error(code: int, err: str, *names: object) -> str:
    """Exit status 2, stderr one line ``error: ...`` holding every one of ``names``."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for name in names:
        assert str(name) in lines[0], (name, err)
    return lines[0]


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    return make_beir(tmp_path / "beir")


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file that outputs and caches are asked to go under."""
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    path = tmp_path / "bm25.trec"
    write_run({"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d2": 3.0, "d3": 1.0}}, path)
    return path


def experiment(tmp_path: Path, beir: Path, **changes: object) -> Path:
    """A BM25-only experiment YAML (no model needed) with ``changes`` applied."""
    data: dict = {
        "name": "contract",
        "output": str(tmp_path / "results"),
        "dataset": {"path": str(beir), "split": "test"},
        "first_stage": {"kind": "bm25", "k": 10},
        "scoring": {"top_k": 10, "device": "cpu"},
        "systems": [{"name": "BM25", "type": "first-stage"}],
        "metrics": ["ndcg@10"],
    }
    data.update(changes)
    file = tmp_path / "exp.yaml"
    file.write_text(yaml.safe_dump(data))
    return file


def command_writing(name: str, out: Path, tmp_path: Path, beir: Path, runs: Path, trio: dict) -> list[object]:
    """The arguments of command ``name`` writing its output to ``out``."""
    if name == "merge":
        models = ["-r", trio["ranker"], "-d", trio["domain"], "-p", trio["pretrained"], "-a", "0.5"]
        return ["merge", *models, "-o", out, "-q"]
    if name == "retrieve":
        return ["retrieve", "-d", beir, "-o", out, "-q", "--index-cache", tmp_path / "idx"]
    if name == "fuse":
        return ["fuse", runs, runs, "-o", out, "-q"]
    if name == "rerank":
        ranker = ["-m", trio["ranker"], "-k", "cross-encoder", "--device", "cpu"]
        return ["rerank", *ranker, "-d", beir, "-c", runs, "-o", out, "-q"]
    if name == "evaluate":
        return ["evaluate", runs, "--qrels", beir, "-o", out]
    if name == "demo":
        return ["demo", "--quick", "--no-progress", "--out", out]
    assert name == "run"
    return ["run", experiment(tmp_path, beir, output=str(out)), "--no-progress"]


WRITERS = ("merge", "retrieve", "fuse", "rerank", "evaluate", "demo", "run")


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("name", WRITERS)
def test_an_output_under_a_file(name, monkeypatch, capsys, tmp_path, beir, runs, a_file, bert_trio):
    out = a_file / "out"
    code, _, err = taskrank(monkeypatch, capsys, *command_writing(name, out, tmp_path, beir, runs, bert_trio))
    assert_one_line_error(code, err, a_file)
    assert a_file.read_text() == "not a folder\n"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("name", WRITERS)
def test_an_output_under_proc(name, monkeypatch, capsys, tmp_path, beir, runs, bert_trio):
    out = Path("/proc/taskrank-output")
    code, _, err = taskrank(monkeypatch, capsys, *command_writing(name, out, tmp_path, beir, runs, bert_trio))
    assert_one_line_error(code, err, out)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("name", WRITERS)
def test_an_output_in_a_read_only_folder(name, monkeypatch, capsys, tmp_path, beir, runs, bert_trio):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        out = folder / "out"
        args = command_writing(name, out, tmp_path, beir, runs, bert_trio)
        code, _, err = taskrank(monkeypatch, capsys, *args)
        assert_one_line_error(code, err, out)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_the_demo_resumes_into_a_writable_folder_whose_parent_is_read_only(monkeypatch, tmp_path):
    """The demo writes inside its --out folder, so that folder, not its parent, must take new
    entries (say /scratch/$USER under a read-only /scratch). Root ignores permission bits, so
    the read-only parent is played by mkdtemp refusing it."""
    import tempfile

    from taskrank.atomic import check_output

    parent = tmp_path / "read-only"
    out = parent / "demo"
    out.mkdir(parents=True)
    made = tempfile.mkdtemp

    def mkdtemp(*args, dir=None, **kwargs):
        if Path(dir) == parent:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(parent))
        return made(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    check_output(out, False, folder=True, existing_ok=True)  # resumed into: accepted
    assert list(out.iterdir()) == []  # the probe is gone
    with pytest.raises(ConfigError, match="nothing can be created in"):
        check_output(parent / "new", False, folder=True, existing_ok=True)  # made in the parent


def test_fuse_out_is_a_folder(monkeypatch, capsys, tmp_path, runs):
    folder = tmp_path / "runs"
    (folder / "keep").mkdir(parents=True)
    for extra in ((), ("--overwrite",)):
        code, _, err = taskrank(monkeypatch, capsys, "fuse", runs, runs, "-o", folder, *extra)
        assert "is a folder" in assert_one_line_error(code, err, folder)
    assert (folder / "keep").is_dir()


def test_a_full_disk_met_through_an_open_file_names_the_output(monkeypatch, capsys, tmp_path, runs):
    """A write or sync through an open file fails without a file name: the output is named."""
    out = tmp_path / "fused.trec"

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("taskrank.atomic.os.fsync", full)
    code, _, err = taskrank(monkeypatch, capsys, "fuse", runs, runs, "-o", out)
    assert os.strerror(errno.ENOSPC) in assert_one_line_error(code, err, out)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".fused")] == []


def test_a_full_disk_or_any_os_error_is_one_line_naming_the_path(monkeypatch, capsys, tmp_path, runs):
    out = tmp_path / "fused.trec"

    def full(run, path, tag="taskrank"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("taskrank.data.write_run", full)
    code, _, err = taskrank(monkeypatch, capsys, "fuse", runs, runs, "-o", out)
    assert os.strerror(errno.ENOSPC) in assert_one_line_error(code, err, out)


# --------------------------------------------------------------------------- caches


def test_retrieve_index_cache_is_a_file(monkeypatch, capsys, tmp_path, beir, a_file):
    out = tmp_path / "bm25.trec"
    code, _, err = taskrank(
        monkeypatch, capsys, "retrieve", "-d", beir, "-o", out, "-q", "--index-cache", a_file
    )
    assert_one_line_error(code, err, a_file)
    assert not out.exists()


def test_retrieve_download_cache_is_a_file(monkeypatch, capsys, tmp_path, a_file):
    # a BEIR name: the download cache is made before anything is fetched, so nothing is
    code, _, err = taskrank(
        monkeypatch,
        capsys,
        "retrieve",
        "-d",
        "scifact",
        "-o",
        tmp_path / "r.trec",
        "-q",
        "--cache-dir",
        a_file,
    )
    assert_one_line_error(code, err, a_file)


def test_experiment_cache_dir_is_a_file(monkeypatch, capsys, tmp_path, beir, a_file):
    file = experiment(tmp_path, beir, cache_dir=str(a_file))
    code, _, err = taskrank(monkeypatch, capsys, "run", file, "--no-progress")
    assert_one_line_error(code, err, a_file)
    assert a_file.read_text() == "not a folder\n"


def test_experiment_dataset_cache_dir_is_a_file(monkeypatch, capsys, tmp_path, beir, a_file):
    file = experiment(tmp_path, beir, dataset={"path": "scifact", "split": "test", "cache_dir": str(a_file)})
    code, _, err = taskrank(monkeypatch, capsys, "run", file, "--no-progress")
    assert_one_line_error(code, err, a_file)


# --------------------------------------------------------------------------- checkpoints


def _rerank(monkeypatch, capsys, model: Path, beir: Path, runs: Path, out: Path) -> tuple[int, str, str]:
    return taskrank(
        monkeypatch, capsys, "rerank", "-m", model, "-k", "cross-encoder", "--device", "cpu",
        "-d", beir, "-c", runs, "-o", out, "-q",
    )  # fmt: skip


def test_rerank_a_truncated_safetensors_file(monkeypatch, capsys, tmp_path, beir, runs, bert_trio):
    model = Path(shutil.copytree(bert_trio["ranker"], tmp_path / "truncated"))
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    code, _, err = _rerank(monkeypatch, capsys, model, beir, runs, tmp_path / "out.trec")
    assert "truncated" in assert_one_line_error(code, err, weights)
    assert not (tmp_path / "out.trec").exists()


def test_rerank_a_safetensors_header_claiming_2_to_the_62_bytes(
    monkeypatch, capsys, tmp_path, beir, runs, bert_trio
):
    model = Path(shutil.copytree(bert_trio["ranker"], tmp_path / "huge-header"))
    weights = model / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[:8] = (2**62).to_bytes(8, "little")
    weights.write_bytes(bytes(raw))
    start = time.perf_counter()
    code, _, err = _rerank(monkeypatch, capsys, model, beir, runs, tmp_path / "out.trec")
    assert str(2**62) in assert_one_line_error(code, err, weights)
    assert time.perf_counter() - start < 30  # refused from the header, nothing allocated


def test_rerank_a_pickle_that_weights_only_refuses(monkeypatch, capsys, tmp_path, beir, runs, bert_trio):
    import datetime

    model = Path(shutil.copytree(bert_trio["ranker"], tmp_path / "pickled"))
    (model / "model.safetensors").unlink()
    weights = model / "pytorch_model.bin"
    # not a state dict of tensors: an object weights_only=True does not unpickle
    torch.save({"weights": torch.zeros(2), "saved": datetime.date(2024, 1, 1)}, weights)
    code, _, err = _rerank(monkeypatch, capsys, model, beir, runs, tmp_path / "out.trec")
    assert "weights-only" in assert_one_line_error(code, err, weights)


def test_adapt_a_truncated_pretrained_checkpoint(monkeypatch, capsys, tmp_path, bert_trio):
    model = Path(shutil.copytree(bert_trio["pretrained"], tmp_path / "truncated"))
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 100)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "text": "cell protein gene virus"}])
    out = tmp_path / "domain"
    code, _, err = taskrank(
        monkeypatch, capsys, "adapt", "-p", model, "-c", corpus, "-o", out, "--steps", "2", "--device", "cpu",
        "--quiet",
    )  # fmt: skip
    assert "truncated" in assert_one_line_error(code, err, weights)
    assert not out.exists()


# --------------------------------------------------------------------------- data


def test_retrieve_a_corpus_whose_texts_are_all_empty(monkeypatch, capsys, tmp_path):
    dataset = make_beir(tmp_path / "empty", docs={"d1": ("", ""), "d2": ("", "   "), "d3": ("", "a the")})
    out, cache = tmp_path / "r.trec", tmp_path / "index"
    code, _, err = taskrank(
        monkeypatch, capsys, "retrieve", "-d", dataset, "-o", out, "-q", "--index-cache", cache
    )
    assert "none of its 3 documents" in assert_one_line_error(code, err, dataset)
    corpus = tmp_path / "empty" / "corpus.jsonl"
    queries = tmp_path / "empty" / "queries.jsonl"
    code, _, err = taskrank(
        monkeypatch, capsys, "retrieve", "--corpus", corpus, "--queries", queries, "-o", out, "-q",
        "--index-cache", cache,
    )  # fmt: skip
    assert_one_line_error(code, err, corpus)


def test_run_on_a_corpus_whose_texts_are_all_empty(monkeypatch, capsys, tmp_path):
    dataset = make_beir(tmp_path / "empty", docs={"d1": ("", ""), "d2": ("", "   "), "d3": ("", "a the")})
    config = experiment(tmp_path, dataset)
    code, _, err = taskrank(monkeypatch, capsys, "run", config, "--no-progress")
    assert "none of its 3 documents" in assert_one_line_error(code, err, dataset)


SPACED = ("d 1", "d\t1", "d\n1", " d1", "d1\u00a0")


@pytest.mark.parametrize("doc_id", SPACED)
def test_corpus_ids_with_whitespace_are_refused_at_load(tmp_path, doc_id):
    corpus = write_jsonl(
        tmp_path / "corpus.jsonl", [{"_id": "d0", "text": "x"}, {"_id": doc_id, "text": "y"}]
    )
    with pytest.raises(DataError) as err:
        load_corpus(corpus)
    assert f"{corpus}:2:" in str(err.value) and repr(doc_id) in str(err.value)


def test_query_ids_with_whitespace_are_refused_at_load(tmp_path):
    jsonl = write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q 1", "text": "cell"}])
    tsv = tmp_path / "topics.tsv"
    tsv.write_text("q0\tvirus\nq 1\tcell\n")
    xml = tmp_path / "topics.xml"
    xml.write_text('<topics>\n<topic number="q 1"><query>cell</query></topic>\n</topics>\n')
    for file, line in ((jsonl, 1), (tsv, 2), (xml, 2)):
        with pytest.raises(DataError) as err:
            load_queries(file)
        assert f"{file}:{line}:" in str(err.value) and "'q 1'" in str(err.value), file


def test_qrels_and_run_ids_with_spaces_are_refused_not_shifted(tmp_path):
    # split on all whitespace, "q1<TAB>d 1<TAB>1" would read as the TREC line 'q1 d 1 1': document '1'
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq1\td 1\t1\n")
    with pytest.raises(DataError) as err:
        read_qrels(qrels)
    assert f"{qrels}:3:" in str(err.value) and "'d 1'" in str(err.value)
    run = tmp_path / "run.tsv"
    run.write_text("q1\tQ0\td0\t1\t2.0\tx\nq1\tQ0\tdoc one\t2\t1.0\tx\n")
    with pytest.raises(DataError) as err:
        read_run(run)
    assert f"{run}:2:" in str(err.value) and "'doc one'" in str(err.value)


def test_ids_with_spaces_fail_before_any_scoring(monkeypatch, capsys, tmp_path):
    dataset = make_beir(tmp_path / "spaced", docs={"d1": ("", "aspirin fever"), "doc 2": ("", "virus cell")})
    out = tmp_path / "bm25.trec"
    code, _, err = taskrank(
        monkeypatch, capsys, "retrieve", "-d", dataset, "-o", out, "--index-cache", tmp_path
    )
    assert_one_line_error(code, err, dataset / "corpus.jsonl:2", "'doc 2'")
    assert not out.exists()


# --------------------------------------------------------------------------- YAML


def test_yaml_aliases_are_refused_naming_the_line(monkeypatch, capsys, tmp_path, beir):
    file = tmp_path / "exp.yaml"
    file.write_text(
        "name: aliased\n"
        f"output: {tmp_path / 'out'}\n"
        "dataset:\n"
        f"  path: &data {beir}\n"
        "systems:\n"
        "  - {name: BM25, type: first-stage}\n"
        "description: *data\n"
    )
    code, _, err = taskrank(monkeypatch, capsys, "run", file, "--dry-run")
    assert "anchor &data" in assert_one_line_error(code, err, f"{file}: line 4")


def test_billion_laughs_is_refused_before_expansion(tmp_path):
    lines = ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    file = tmp_path / "laughs.yaml"
    file.write_text("\n".join(lines) + "\n")
    assert len(file.read_bytes()) < 1000  # 9^9 = 387 million "lol"s once expanded
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"{file}: line 1: YAML anchor &l0"):
        load_config(file)
    assert time.perf_counter() - start < 2


def test_the_config_copied_into_a_results_folder_loads_again(tmp_path, beir):
    # load_config refuses anchors and aliases, so dump_config must never write one
    config = parse_config(
        {"name": "x", "output": "out", "dataset": {"path": str(beir)},
         "systems": [{"name": "BM25", "type": "first-stage"}, {"name": "B2", "type": "first-stage"}]}
    )  # fmt: skip
    text = dump_config(config)
    assert "&" not in text and "*" not in text
    file = tmp_path / "config.yaml"
    file.write_text(text)
    assert load_config(file) == config


# --------------------------------------------------------------------------- bugs and interrupts


def test_a_bug_shows_its_traceback_and_asks_for_a_report(monkeypatch, capsys, tmp_path, runs):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("taskrank.data.read_run", broken)
    code, _, err = taskrank(monkeypatch, capsys, "fuse", runs, runs, "-o", tmp_path / "f.trec")
    assert code == 1
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert err.strip().splitlines()[-1] == BUG_LINE
    assert BUG_LINE == "this is a bug in taskrank; please report it with the traceback above"


def test_an_interrupt_is_one_line_and_status_130(monkeypatch, capsys, tmp_path, runs):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("taskrank.data.read_run", interrupted)
    out = tmp_path / "f.trec"
    code, stdout, err = taskrank(monkeypatch, capsys, "fuse", runs, runs, "-o", out)
    assert (code, err, stdout) == (130, "interrupted\n", "")
    assert not out.exists()


def test_the_readme_states_the_exit_statuses():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Exit status") :]
    for status in ("`0`", "`1`", "`2`", "`130`"):
        assert status in section.split("\n## ")[0], status
    assert BUG_LINE in readme


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("name", ["fuse", "retrieve", "rerank", "evaluate"])
def test_a_file_output_that_is_a_pipe_or_device_is_refused_even_with_overwrite(
    name, monkeypatch, capsys, tmp_path, beir, runs, bert_trio
):
    # the output is renamed into place: run as root, "-o /dev/null --overwrite" replaced /dev/null
    # with a run file. A named pipe stands for the device here, where replacing it harms nothing.
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    args = command_writing(name, pipe, tmp_path, beir, runs, bert_trio)
    code, _, err = taskrank(monkeypatch, capsys, *args, "--overwrite")
    assert "is not a regular file" in assert_one_line_error(code, err, pipe)
    assert pipe.is_fifo()
