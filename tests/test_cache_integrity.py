"""Stale or wrong cached results are never taken as good (issue 11, items 6 and 7): step cache
entries carry the key they were made for and a checksum of their value, and checkpoint
fingerprints are remembered by stat data that a weight swap cannot keep (inode, ctime)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import taskrank.checkpoints
from _experiment_fixtures import make_config, write_tiny_beir
from taskrank.checkpoints import hashing
from taskrank.experiment import plan_experiment, run_experiment
from taskrank.experiment.cache import ENTRY_FORMAT, FingerprintMemo, StepCache, checksum
from taskrank.rerankers.base import Reranker

RUN = {f"q{i}": {f"d{j}": float(i - j) / 7 for j in range(5)} for i in range(40)}


@pytest.fixture(autouse=True)
def fresh_hash_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """File hashes known to neither this process nor the disk store."""
    monkeypatch.setenv("TASKRANK_CACHE", str(tmp_path / "taskrank-cache"))
    monkeypatch.setattr(hashing, "_DONE", {})


def warnings_about(caplog: pytest.LogCaptureFixture, file: Path) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(file) in r.getMessage()
    ]


# --------------------------------------------------------------------------- step cache entries


@pytest.fixture
def cache(tmp_path: Path) -> StepCache:
    return StepCache(tmp_path / "cache")


def stored(cache: StepCache, step: str = "rerank", value: object = RUN) -> tuple[str, Path]:
    key = cache.key(step, {"model": "sha256:abc", "alpha": 0.5})
    cache.put(step, key, value, {"model": "sha256:abc", "alpha": 0.5})
    return key, cache.path(step, key)


def test_an_entry_records_its_step_key_and_checksum(cache: StepCache) -> None:
    key, file = stored(cache)
    entry = json.loads(file.read_text())
    assert entry["format"] == ENTRY_FORMAT and entry["step"] == "rerank" and entry["key"] == key
    assert entry["checksum"] == checksum(RUN) and entry["checksum"].startswith("sha256:")
    assert cache.has("rerank", key)
    assert cache.get("rerank", key) == RUN
    assert (cache.hits, cache.misses, cache.invalid) == (1, 0, 0)


def test_nan_scores_round_trip(cache: StepCache) -> None:
    key, _ = stored(cache, value={"q1": {"d1": math.nan, "d2": 0.5}})
    value = cache.get("rerank", key)
    assert value is not None and math.isnan(value["q1"]["d1"]) and value["q1"]["d2"] == 0.5


def test_queries_removed_from_an_entry_are_detected(cache: StepCache, caplog) -> None:
    key, file = stored(cache)
    entry = json.loads(file.read_text())
    entry["value"] = {q: docs for q, docs in list(RUN.items())[:5]}  # 35 of 40 queries gone
    file.write_text(json.dumps(entry))  # valid JSON, the old checksum kept
    with caplog.at_level(logging.WARNING):
        assert cache.get("rerank", key) is None
    (message,) = warnings_about(caplog, file)
    assert "does not match its checksum" in message
    assert (cache.hits, cache.misses, cache.invalid) == (0, 1, 1)
    assert not cache.has("rerank", key)
    cache.put("rerank", key, RUN)  # the step computed again rewrites it
    assert cache.get("rerank", key) == RUN


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda e: e.update(value=[1, 2, 3]), "does not match its checksum"),
        (lambda e: [1, 2, 3], "holds a JSON list"),
        (lambda e: "text", "holds a JSON str"),
        (lambda e: {k: v for k, v in e.items() if k != "checksum"}, "no checksum"),
        (lambda e: {k: e[k] for k in ("step", "inputs", "value")}, "no checksum"),  # the format before
        (lambda e: {k: v for k, v in e.items() if k != "key"}, "lacks key"),
        (lambda e: {k: v for k, v in e.items() if k != "value"}, "lacks value"),
        (lambda e: e.update(format=1), "format is 1"),
        (lambda e: e.update(step="first-stage"), "made for first-stage/"),
    ],
)
def test_a_damaged_entry_is_a_miss_not_a_crash(cache: StepCache, caplog, change, reason) -> None:
    key, file = stored(cache)
    entry = json.loads(file.read_text())
    result = change(entry)
    file.write_text(json.dumps(entry if result is None else result))
    with caplog.at_level(logging.WARNING):
        assert cache.get("rerank", key) is None
    (message,) = warnings_about(caplog, file)
    assert reason in message and "computing that step again" in message


@pytest.mark.parametrize("raw", [b'{"format": 2, "step": "rer', b"\xff\xfe not text", b"", b"[" * 100_000])
def test_an_unparsable_entry_is_a_miss(cache: StepCache, caplog, raw: bytes) -> None:
    key, file = stored(cache)
    file.write_bytes(raw)
    with caplog.at_level(logging.WARNING):
        assert cache.get("rerank", key) is None
    assert warnings_about(caplog, file)


def test_an_entry_copied_to_another_keys_file_is_detected(cache: StepCache, caplog) -> None:
    key, file = stored(cache)
    other = cache.key("rerank", {"model": "sha256:abc", "alpha": 0.7})
    cache.path("rerank", other).write_bytes(file.read_bytes())
    with caplog.at_level(logging.WARNING):
        assert cache.get("rerank", other) is None
    (message,) = warnings_about(caplog, cache.path("rerank", other))
    assert f"made for rerank/{key}" in message
    assert cache.get("rerank", key) == RUN  # the original is still good


# --------------------------------------------------------------------------- fingerprint memo


def swapped_weights(file: Path, seed: int) -> bytes:
    """Different weights of exactly the same size as ``file`` (same tensors, other values)."""
    tensors = load_file(str(file))
    generator = torch.Generator().manual_seed(seed)
    changed = {k: v + torch.randn(v.shape, generator=generator) for k, v in tensors.items()}
    scratch = file.with_name(f"scratch-{seed}.bin")
    save_file(changed, str(scratch), metadata={"format": "pt"})
    data = scratch.read_bytes()
    scratch.unlink()
    assert len(data) == file.stat().st_size and data != file.read_bytes()
    return data


def swap_keeping_size_and_mtime(file: Path, data: bytes, *, in_place: bool) -> None:
    """Put ``data`` in ``file`` with the old size and mtime: ``cp -p`` onto it (in place) or
    ``rsync -t`` (a new file renamed over it)."""
    before = file.stat()
    if in_place:
        time.sleep(0.05)  # past the kernel's clock tick, which timestamps move by
        with open(file, "r+b") as handle:
            handle.write(data)
        target = file
    else:
        target = file.with_name(file.name + ".rsync-tmp")
        target.write_bytes(data)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    if not in_place:
        os.replace(target, file)
    after = file.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


@pytest.fixture
def ckpt(tmp_path: Path, t5_trio: dict[str, Path]) -> Path:
    folder = tmp_path / "ranker"
    shutil.copytree(t5_trio["ranker"], folder)
    return folder


@pytest.mark.parametrize("in_place", [False, True], ids=["rsync -t", "cp -p"])
def test_a_weight_swap_keeping_size_and_mtime_changes_the_fingerprint(
    ckpt: Path, tmp_path: Path, caplog, monkeypatch, in_place: bool
) -> None:
    memo_file = tmp_path / "fingerprints.json"
    memo = FingerprintMemo(memo_file)
    first = memo.fingerprint(ckpt)
    memo.flush()
    weights = ckpt / "model.safetensors"
    swap_keeping_size_and_mtime(weights, swapped_weights(weights, seed=1), in_place=in_place)
    expected = "sha256:" + hashing._digest(weights)
    # a later run: the memo from disk, the hash store from disk (nothing known in memory)
    monkeypatch.setattr(hashing, "_DONE", {})
    with caplog.at_level(logging.INFO, logger="taskrank"):
        second = FingerprintMemo(memo_file).fingerprint(ckpt)
    assert second == expected != first
    assert any("same sizes and modification times" in r.getMessage() for r in caplog.records)
    assert memo.fingerprint(ckpt) == expected  # the same memo object in the same process, too


def test_an_unchanged_checkpoint_is_not_hashed_again(ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    memo_file = tmp_path / "fingerprints.json"
    memo = FingerprintMemo(memo_file)
    first = memo.fingerprint(ckpt)
    memo.flush()

    def refuse(path: object) -> str:
        raise AssertionError(f"fingerprinted again: {path}")

    monkeypatch.setattr(taskrank.checkpoints, "fingerprint", refuse)
    assert FingerprintMemo(memo_file).fingerprint(ckpt) == first


@pytest.mark.parametrize(
    "content", ["[1, 2]", '{"KEY": [1]}', '{"KEY": {"stamp": 1}}', "{not json", '"text"']
)
def test_a_damaged_memo_is_ignored(ckpt: Path, tmp_path: Path, content: str) -> None:
    memo_file = tmp_path / "fingerprints.json"
    expected = FingerprintMemo(tmp_path / "elsewhere.json").fingerprint(ckpt)
    memo_file.write_text(content.replace("KEY", str(ckpt.resolve())))
    assert FingerprintMemo(memo_file).fingerprint(ckpt) == expected


def test_a_memo_of_an_older_taskrank_is_not_trusted(ckpt: Path, tmp_path: Path) -> None:
    """Stamps of name, size and mtime only (the old format) no longer match."""
    weights = ckpt / "model.safetensors"
    st = weights.stat()
    memo_file = tmp_path / "fingerprints.json"
    stale = {
        "stamp": [["model.safetensors", st.st_size, st.st_mtime_ns]],
        "fingerprint": "sha256:" + "0" * 64,
    }
    memo_file.write_text(json.dumps({str(ckpt.resolve()): stale}))
    assert FingerprintMemo(memo_file).fingerprint(ckpt) == "sha256:" + hashing._digest(weights)


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def trio(tmp_path: Path, t5_trio: dict[str, Path]) -> dict[str, Path]:
    """A private copy of the trio, whose weights a test may swap."""
    return {role: Path(shutil.copytree(path, tmp_path / "models" / role)) for role, path in t5_trio.items()}


@pytest.fixture
def tiny_data(tmp_path: Path, tiny_words: tuple[str, ...]) -> Path:
    return write_tiny_beir(tmp_path / "beir", tiny_words)


def ranker_only(data: Path, trio: dict[str, Path], out: Path):
    systems = [{"name": "BM25", "type": "first-stage"}, {"name": "ranker", "type": "ranker"}]
    dataset = {"path": str(data), "split": "test"}
    return make_config(data, trio, out, systems=systems, fusion={"method": "none"}, dataset=dataset)


def count_reranks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = Reranker.rerank

    def rerank(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Reranker, "rerank", rerank)
    return calls


def test_swapped_ranker_weights_are_scored_again(tmp_path, tiny_data, trio, monkeypatch) -> None:
    config = ranker_only(tiny_data, trio, tmp_path / "out")
    run_experiment(config, progress=False)
    before = (tmp_path / "out" / "runs" / "test" / "ranker.trec").read_text()
    weights = trio["ranker"] / "model.safetensors"
    swap_keeping_size_and_mtime(weights, swapped_weights(weights, seed=3), in_place=False)
    monkeypatch.setattr(hashing, "_DONE", {})  # as a new process would start
    calls = count_reranks(monkeypatch)
    result = run_experiment(config, progress=False)
    assert calls[0] == 1, "the ranker's cached scores were reused after its weights changed"
    assert (tmp_path / "out" / "runs" / "test" / "ranker.trec").read_text() != before
    assert len(list((config.cache_path() / "rerank").glob("*.json"))) == 2
    assert result.stats["status"] == "resume"


def test_a_damaged_rerank_entry_is_recomputed_with_the_same_results(
    tmp_path, tiny_data, trio, monkeypatch, caplog
) -> None:
    config = ranker_only(tiny_data, trio, tmp_path / "out")
    first = run_experiment(config, progress=False)
    (entry_file,) = (config.cache_path() / "rerank").glob("*.json")
    entry = json.loads(entry_file.read_text())
    good = entry["value"]
    assert len(good) == 8
    calls = count_reranks(monkeypatch)
    for damaged in ({q: good[q] for q in list(good)[:2]}, list(good.items())):
        entry["value"] = damaged  # 6 of 8 queries removed; then a list instead of an object
        entry_file.write_text(json.dumps(entry))
        calls[0] = 0
        assert "total: 1 step(s) to run" in plan_experiment(config)  # the dry run checks entries too
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = run_experiment(config, progress=False)
        assert calls[0] == 1
        assert warnings_about(caplog, entry_file)
        assert again.results["systems"] == first.results["systems"]
        assert json.loads(entry_file.read_text())["value"] == good  # rewritten
