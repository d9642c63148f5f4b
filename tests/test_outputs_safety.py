"""Nothing lost, nothing clobbered: ``--overwrite`` deletes only what taskrank wrote (its
manifest), an output that appears meanwhile is never replaced, a results folder in use is
locked, temporaries of killed processes are recognised and removed, and outputs get the
modes the umask gives."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from _cli import run_cli as cli
from _experiment_fixtures import config_dict, make_config, write_tiny_beir
from taskrank import atomic
from taskrank.atomic import atomic_dir, atomic_file, write_json
from taskrank.errors import ConfigError, TaskrankError
from taskrank.experiment import run_experiment

BM25_ONLY = [{"name": "first", "type": "first-stage"}]
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny_words) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("beir") / "tiny", tiny_words)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def manifest(out: Path) -> set[str]:
    return set(json.loads((out / ".taskrank-manifest.json").read_text())["paths"])


def results_files(out: Path) -> set[str]:
    """Every file of a results folder but the bookkeeping (step cache, lock, manifest)."""
    skip = {"cache", ".taskrank.lock", ".taskrank-manifest.json"}
    return {p for p in snapshot(out) if p.split("/")[0] not in skip}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------- 1. the manifest


def test_overwrite_in_a_project_folder_deletes_nothing(
    tmp_path, tiny_data, t5_trio, tiny_words, monkeypatch, capsys
):
    """``output: .`` in a folder holding the dataset, the config and notes: refused, with or
    without --overwrite, naming a file; every file intact."""
    project = tmp_path / "project"
    write_tiny_beir(project / "data", tiny_words)
    (project / "notes.txt").write_text("my notes\n")
    data = config_dict(Path("data"), t5_trio, Path("."), systems=BM25_ONLY)
    (project / "exp.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    before = snapshot(project)
    monkeypatch.chdir(project)
    for extra in ((), ("--overwrite",)):
        code, _, err = cli(monkeypatch, capsys, "run", "exp.yaml", "--no-progress", *extra)
        assert code == 2, err
        assert "data/corpus.jsonl" in err and "did not write" in err
        assert len(err.strip().splitlines()) == 1
        assert snapshot(project) == before


def test_overwrite_replaces_only_what_taskrank_wrote(tmp_path, tiny_data, t5_trio):
    out = tmp_path / "out"
    first = make_config(tiny_data, t5_trio, out, systems=BM25_ONLY)
    run_experiment(first, progress=False)
    assert manifest(out) == results_files(out)  # every file written is listed
    assert "runs/test/first.trec" in manifest(out)
    cache_before = snapshot(out / "cache")
    other = make_config(tiny_data, t5_trio, out, systems=[{"name": "second", "type": "first-stage"}])
    result = run_experiment(other, overwrite=True, progress=False)
    assert result.stats["status"] == "overwrite"
    files = results_files(out)
    assert "runs/test/second.trec" in files and "runs/test/first.trec" not in files
    assert manifest(out) == files
    cache_after = snapshot(out / "cache")
    assert {k: cache_after[k] for k in cache_before} == cache_before, "the step cache was touched"


def test_a_file_added_to_results_blocks_overwrite(tmp_path, tiny_data, t5_trio):
    out = tmp_path / "out"
    run_experiment(make_config(tiny_data, t5_trio, out, systems=BM25_ONLY), progress=False)
    (out / "runs" / "test" / "mine.trec").write_text("q Q0 d 1 1.0 me\n")
    before = snapshot(out)
    other = make_config(tiny_data, t5_trio, out, systems=[{"name": "second", "type": "first-stage"}])
    with pytest.raises(ConfigError, match=r"holds .*runs/test/mine\.trec, which taskrank did not write"):
        run_experiment(other, overwrite=True, progress=False)
    assert snapshot(out) == before


def test_a_killed_run_knows_what_it_wrote(tmp_path, tiny_data, t5_trio, monkeypatch):
    out = tmp_path / "out"
    import taskrank.report

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the report")

    monkeypatch.setattr(taskrank.report, "write_report", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(make_config(tiny_data, t5_trio, out, systems=BM25_ONLY), progress=False)
    monkeypatch.undo()
    written = results_files(out)
    assert {"experiment.json", "config.yaml", "runs/test/first.trec", "results.json"} <= written
    assert manifest(out) == written
    other = make_config(tiny_data, t5_trio, out, systems=[{"name": "second", "type": "first-stage"}])
    run_experiment(other, overwrite=True, progress=False)
    assert "runs/test/first.trec" not in results_files(out)


def test_a_resumed_run_keeps_the_files_a_user_added(tmp_path, tiny_data, t5_trio, monkeypatch):
    """A run killed before its report, resumed after the user put files in its folder: files
    elsewhere are left alone, and one at a path the run writes is refused, not replaced."""
    out = tmp_path / "out"
    config = make_config(tiny_data, t5_trio, out, systems=BM25_ONLY)
    import taskrank.report

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the report")

    monkeypatch.setattr(taskrank.report, "write_report", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=False)
    monkeypatch.undo()
    (out / "notes.txt").write_text("my notes\n")
    (out / "report.md").write_text("my own report\n")
    with pytest.raises(ConfigError, match=rf"{out / 'report.md'} is not a file taskrank wrote there"):
        run_experiment(config, progress=False)
    assert (out / "report.md").read_text() == "my own report\n"
    (out / "report.md").rename(tmp_path / "my-report.md")
    assert run_experiment(config, progress=False).stats["status"] == "resume"
    assert (out / "notes.txt").read_text() == "my notes\n"
    assert "notes.txt" not in manifest(out) and "report.md" in manifest(out)


@pytest.mark.parametrize("link", [False, True], ids=["subfolder", "link to elsewhere"])
def test_a_cache_dir_inside_the_output_is_bookkeeping(tmp_path, tiny_data, t5_trio, link):
    """A ``cache_dir`` in the results folder under another name than ``cache`` (a subfolder, or
    a link to a folder elsewhere) is neither listed in the manifest nor deleted by --overwrite,
    and blocks neither a first run nor --overwrite."""
    out = tmp_path / "out"
    cache = out / "work" / "steps"
    real = cache
    if link:
        real = tmp_path / "fast-disk" / "steps"
        real.mkdir(parents=True)
        cache.parent.mkdir(parents=True)
        cache.symlink_to(real)
    first = make_config(tiny_data, t5_trio, out, systems=BM25_ONLY, cache_dir=str(cache))
    run_experiment(first, progress=False)
    assert manifest(out) == {p for p in results_files(out) if not p.startswith("work/")}
    cache_before = snapshot(real)
    assert any(p.startswith("bm25-index/") for p in cache_before) and any(
        p.startswith("first-stage/") for p in cache_before
    )
    systems = [{"name": "second", "type": "first-stage"}]
    other = make_config(tiny_data, t5_trio, out, systems=systems, cache_dir=str(cache))
    assert run_experiment(other, overwrite=True, progress=False).stats["status"] == "overwrite"
    cache_after = snapshot(real)
    assert {k: cache_after[k] for k in cache_before} == cache_before, "the step cache was touched"
    same = make_config(tiny_data, t5_trio, out, systems=BM25_ONLY, cache_dir=str(out))
    with pytest.raises(ConfigError, match=r"cache_dir .* is the output folder itself"):
        run_experiment(same, overwrite=True, progress=False)


def test_a_folder_of_an_older_version_is_not_cleared(tmp_path, tiny_data, t5_trio):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (out / "experiment.json").write_text(json.dumps({"name": "old", "fingerprint": "0" * 16}))
    (out / "runs" / "old.trec").write_text("q Q0 d 1 1.0 old\n")
    before = snapshot(out)
    config = make_config(tiny_data, t5_trio, out, systems=BM25_ONLY)
    with pytest.raises(ConfigError, match="older taskrank that kept no list of its files"):
        run_experiment(config, overwrite=True, progress=False)
    assert snapshot(out) == before


def test_a_manifest_pointing_outside_the_folder_is_refused(tmp_path, tiny_data, t5_trio):
    out = tmp_path / "out"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps({"name": "old", "fingerprint": "0" * 16}))
    (out / ".taskrank-manifest.json").write_text(json.dumps({"paths": ["experiment.json", "../victim.txt"]}))
    with pytest.raises(ConfigError, match=r"'\.\./victim\.txt' is not a path inside"):
        run_experiment(
            make_config(tiny_data, t5_trio, out, systems=BM25_ONLY), overwrite=True, progress=False
        )
    assert victim.read_text() == "keep" and (out / "experiment.json").is_file()


# --------------------------------------------------------------------------- 2. an output that appears


@pytest.fixture(params=["renameat2", "portable"])
def rename_path(request, monkeypatch):
    if request.param == "portable":
        monkeypatch.setattr(atomic, "_renameat2", None, raising=False)
    elif sys.platform == "linux":
        assert atomic._renameat2 is not None, "renameat2 should be found in the C library on Linux"
    else:
        pytest.skip("renameat2 is Linux only")
    return request.param


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_an_output_that_appears_meanwhile_is_kept(tmp_path, rename_path):
    out = tmp_path / "out"
    appeared = f"output {out} appeared while this command ran"
    with pytest.raises(TaskrankError, match=appeared), atomic_dir(out) as tmp:
        (tmp / "mine.txt").write_text("mine")
        out.mkdir()  # another process writes the same output meanwhile
        (out / "theirs.txt").write_text("theirs")
    assert snapshot(out) == {"theirs.txt": b"theirs"}
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_an_output_that_appears_meanwhile(tmp_path, rename_path):
    out = tmp_path / "out"
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "mine.txt").write_text("mine")
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")
    assert snapshot(out) == {"mine.txt": b"mine"}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", [".", "..", "/"])
def test_the_current_folder_its_parent_or_the_root_is_no_output(tmp_path, monkeypatch, name):
    """Even with overwrite: a one-line refusal, not a traceback, and nothing swapped or left behind."""
    monkeypatch.chdir(tmp_path / ".." if name == ".." else tmp_path)
    before = sorted(os.listdir())
    refusal = f"output {re.escape(name)} is not a folder of its own"
    with pytest.raises(TaskrankError, match=refusal), atomic_dir(name, overwrite=True):
        pass
    assert sorted(os.listdir()) == before


def test_two_merges_into_one_output_keep_the_first_finished(tmp_path, t5_trio, monkeypatch):
    """Merges at α 0.3 and 0.9 into one --out, the 0.9 one finishing while the 0.3 one writes:
    the 0.3 one fails naming the output, which keeps the 0.9 merge whole."""
    from taskrank.arithmetic import merge, merging

    out = tmp_path / "merged"
    copy = merging.copy_non_weight_files
    nested: list[str] = []

    def copy_then_race(src, dst):
        if not nested:  # the first call: the α 0.3 merge; the racing one copies normally
            nested.append("started")
            merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.9, out=out)
        return copy(src, dst)

    monkeypatch.setattr(merging, "copy_non_weight_files", copy_then_race)
    with pytest.raises(TaskrankError, match=f"output {out} appeared while this command ran"):
        merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.3, out=out)
    assert nested, "the racing merge did not run"
    assert json.loads((out / "taskrank_merge.json").read_text())["alpha"] == [0.9]
    from transformers import AutoModelForSeq2SeqLM

    AutoModelForSeq2SeqLM.from_pretrained(out)  # whole and loadable
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- 3. the lock


HOLD = textwrap.dedent(
    """
    import os, signal, sys
    from taskrank.locking import lock_folder
    with lock_folder(sys.argv[1], "output"):
        print("locked", flush=True)
        if sys.argv[2] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.readline()
    """
)


def hold_lock(folder: Path, how: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if how != "die":
        assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_folder_in_use_is_refused_naming_the_holder(tmp_path, tiny_data, t5_trio):
    out = tmp_path / "out"
    out.mkdir()
    config = make_config(tiny_data, t5_trio, out, systems=BM25_ONLY)
    holder = hold_lock(out, "wait")
    try:
        with pytest.raises(
            ConfigError, match=rf"output {out} is in use by another taskrank run \(pid {holder.pid} "
        ):
            run_experiment(config, progress=False)
        assert not (out / "experiment.json").exists()
    finally:
        holder.communicate("\n", timeout=30)
    assert run_experiment(config, progress=False).report.is_file()  # released when the holder ends


def test_the_lock_of_a_killed_process_does_not_block(tmp_path, tiny_data, t5_trio):
    out = tmp_path / "out"
    out.mkdir()
    holder = hold_lock(out, "die")
    assert holder.wait(timeout=60) == -signal.SIGKILL
    assert (out / ".taskrank.lock").is_file()
    assert run_experiment(
        make_config(tiny_data, t5_trio, out, systems=BM25_ONLY), progress=False
    ).report.is_file()


def test_the_lock_is_released_on_an_exception(tmp_path, tiny_data, t5_trio, monkeypatch):
    from taskrank.locking import lock_folder

    out = tmp_path / "out"
    import taskrank.report

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(taskrank.report, "write_report", fail)
    with pytest.raises(RuntimeError, match="boom"):
        run_experiment(make_config(tiny_data, t5_trio, out, systems=BM25_ONLY), progress=False)
    with lock_folder(out):  # free again
        assert json.loads((out / ".taskrank.lock").read_text())["pid"] == os.getpid()


# --------------------------------------------------------------------------- 4. stale temporaries


def fake_temp(parent: Path, name: str, host: str, pid: int, folder: bool = True) -> Path:
    path = parent / f".{name}.tmp-{host}-{pid}-0123abcd"
    if folder:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"x" * 2_000_000)
    else:
        path.write_bytes(b"x" * 100)
    return path


def test_stale_temporaries_of_killed_processes_are_removed(tmp_path, caplog):
    if re.sub(r"[^A-Za-z0-9._-]", "_", HOST) != HOST:
        pytest.skip("a host name with unusual characters")
    dead = dead_pid()
    stale = fake_temp(tmp_path, "out", HOST, dead)
    live = fake_temp(tmp_path, "out", HOST, os.getpid())
    elsewhere = fake_temp(tmp_path, "out", "other-host.example", dead)
    unrelated = fake_temp(tmp_path, "another", HOST, dead)
    with caplog.at_level(logging.WARNING, logger="taskrank.atomic"), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("x")
    assert not stale.exists()
    assert live.is_dir() and elsewhere.is_dir() and unrelated.is_dir()
    assert (tmp_path / "out" / "f").is_file()
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(stale) in m and f"killed process {dead}" in m and "2.0 MB" in m for m in messages), (
        messages
    )


def test_a_file_output_removes_the_temporary_a_killed_command_left(tmp_path, monkeypatch, capsys, caplog):
    """``taskrank fuse -o F`` killed mid-write leaves ``.F.tmp-<host>-<pid>-…``; the next command
    into F removes it and says so; a live process's temporary stays."""
    if re.sub(r"[^A-Za-z0-9._-]", "_", HOST) != HOST:
        pytest.skip("a host name with unusual characters")
    from taskrank.data import write_run

    first = tmp_path / "bm25.trec"
    write_run({"q1": {"d1": 2.0, "d2": 1.0}}, first)
    dead = dead_pid()
    stale = fake_temp(tmp_path, "fused.trec", HOST, dead, folder=False)
    live = fake_temp(tmp_path, "fused.trec", HOST, os.getpid(), folder=False)
    with caplog.at_level(logging.WARNING, logger="taskrank.atomic"):
        code, _, err = cli(
            monkeypatch, capsys, "fuse", str(first), str(first), "-o", str(tmp_path / "fused.trec")
        )
    assert code == 0, err
    assert not stale.exists() and live.is_file() and (tmp_path / "fused.trec").is_file()
    assert any(
        str(stale) in r.getMessage() and f"killed process {dead}" in r.getMessage() for r in caplog.records
    )


def test_a_run_removes_stale_temporaries_in_its_folder_and_cache(tmp_path, tiny_data, t5_trio, caplog):
    if re.sub(r"[^A-Za-z0-9._-]", "_", HOST) != HOST:
        pytest.skip("a host name with unusual characters")
    out = tmp_path / "out"
    config = make_config(tiny_data, t5_trio, out, systems=BM25_ONLY)
    run_experiment(config, progress=False)
    dead = dead_pid()
    stale_file = fake_temp(out, "results.json", HOST, dead, folder=False)
    (out / "cache" / "first-stage").mkdir(parents=True, exist_ok=True)
    stale_entry = fake_temp(out / "cache" / "first-stage", "abc.json", HOST, dead, folder=False)
    live = fake_temp(out, "report.md", HOST, os.getpid(), folder=False)
    with caplog.at_level(logging.WARNING, logger="taskrank.atomic"):
        run_experiment(config, progress=False)
    assert not stale_file.exists() and not stale_entry.exists() and live.exists()
    removed = [r.getMessage() for r in caplog.records if "removed stale temporary file" in r.getMessage()]
    assert len(removed) == 2 and all(f"killed process {dead}" in m for m in removed), removed


# --------------------------------------------------------------------------- 5. the umask


@pytest.fixture(params=[(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)], ids=["umask022", "umask077"])
def umask(request):
    mask, folder_mode, file_mode = request.param
    before = os.umask(mask)
    yield folder_mode, file_mode
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_merge_outputs_follow_the_umask(tmp_path, t5_trio, umask):
    from taskrank.arithmetic import merge

    folder_mode, file_mode = umask
    out = tmp_path / "merged"
    merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.5, out=out)
    assert mode(out) == folder_mode
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and {p.name: mode(p) for p in files} == {p.name: file_mode for p in files}


def test_atomic_files_and_results_follow_the_umask(tmp_path, tiny_data, t5_trio, umask):
    folder_mode, file_mode = umask
    write_json(tmp_path / "r.json", {"a": 1})
    assert mode(tmp_path / "r.json") == file_mode
    with atomic_file(tmp_path / "b.bin", "wb") as handle:
        handle.write(b"x")
    assert mode(tmp_path / "b.bin") == file_mode
    out = tmp_path / "out"
    run_experiment(make_config(tiny_data, t5_trio, out, systems=BM25_ONLY), progress=False)
    assert mode(out / "results.json") == file_mode and mode(out / "runs" / "test" / "first.trec") == file_mode
    index = [p for p in (out / "cache" / "bm25-index").iterdir() if not p.name.startswith(".")]
    assert index and all(mode(p) == folder_mode for p in index), "the BM25 index folder"
    assert all(mode(f) == file_mode for p in index for f in p.iterdir())
