"""Checkpoint resolution (directories, hub ids through the cache), lazy reading, and the merge CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load_file
from typer.testing import CliRunner

from taskrank.checkpoints import (
    Checkpoint,
    ShardedSafetensorsWriter,
    TensorSpec,
    fingerprint,
    resolve_checkpoint,
)
from taskrank.cli import app
from taskrank.errors import CheckpointError

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_id_offline_and_not_cached_names_the_id(hub_cache):
    with pytest.raises(
        CheckpointError, match="'someone/not-cached-model' is not a local directory and is not in"
    ):
        resolve_checkpoint("someone/not-cached-model")


def test_hub_id_found_in_a_prefilled_cache(hub_cache, t5_trio):
    repo = hub_cache / "models--castorini--monot5-tiny"
    snap = repo / "snapshots" / SHA
    shutil.copytree(t5_trio["ranker"], snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    ckpt = Checkpoint("castorini/monot5-tiny")
    assert ckpt.path == snap
    assert ckpt.provenance() == {
        "ref": "castorini/monot5-tiny", "path": str(snap), "format": "safetensors",
        "hub_id": "castorini/monot5-tiny", "revision": SHA,
    }  # fmt: skip
    assert fingerprint("castorini/monot5-tiny") == f"castorini/monot5-tiny@{SHA}"


def test_invalid_ids_and_paths():
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint("./no/such/dir")
    with pytest.raises(CheckpointError, match="neither an existing directory nor a valid hub id"):
        resolve_checkpoint("bad id with spaces")


def test_a_file_is_not_a_checkpoint(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        resolve_checkpoint(f)


def test_lazy_reads_match_safetensors(t5_trio):
    ckpt = Checkpoint(t5_trio["ranker"])
    reference = load_file(str(t5_trio["ranker"] / "model.safetensors"))
    assert sorted(ckpt.keys()) == sorted(reference)
    for k, v in reference.items():
        assert ckpt.shape(k) == tuple(v.shape) and ckpt.dtype(k) == v.dtype
        assert torch.equal(ckpt.get(k), v)
        flat = v.reshape(-1)
        assert torch.equal(ckpt.get_span(k, 1, flat.numel() - 1), flat[1:-1])  # any element range
    with pytest.raises(CheckpointError, match="'nope' not found in checkpoint"):
        ckpt.get("nope")
    size = reference["shared.weight"].numel()
    with pytest.raises(CheckpointError, match=rf"elements 5:{size + 1} are outside tensor 'shared.weight'"):
        ckpt.get_span("shared.weight", 5, size + 1)
    assert ckpt.sha256() == fingerprint(t5_trio["ranker"]).removeprefix("sha256:")


def test_every_dtype_reads_as_the_library_wrote_it(tmp_path):
    """Each dtype taskrank reads, from a file the safetensors library wrote: whole tensors
    and element ranges come back bit for bit."""
    from safetensors.torch import save_file

    from taskrank.checkpoints.safetensors_io import _ST_DTYPES

    tensors = {}
    for code, dtype in _ST_DTYPES.items():
        values = torch.randn(5, 7) * 3
        tensors[code] = values > 0 if dtype == torch.bool else values.to(dtype)
    tensors["scalar"], tensors["empty"] = torch.tensor(2.5), torch.zeros(0, 3)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with Checkpoint(tmp_path) as ckpt:
        for name, want in tensors.items():
            got = ckpt.get(name)
            assert got.dtype == want.dtype and got.shape == want.shape, name
            assert torch.equal(got.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8)), name
            flat = want.reshape(-1).view(torch.uint8)
            for start, stop in ((0, want.numel()), (3, 12), (7, 14), (13, 13)):
                if stop <= want.numel():
                    piece = ckpt.get_span(name, start, stop).view(torch.uint8)
                    size = want.element_size()
                    assert torch.equal(piece, flat[start * size : stop * size]), (name, start, stop)


def test_a_file_truncated_under_a_reader_is_a_checkpoint_error(tmp_path, t5_trio):
    """A weight file cut short after its header was read (by another process, during a merge):
    the read that needs the missing bytes names the file, and nothing crashes."""
    folder = shutil.copytree(t5_trio["ranker"], tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    with Checkpoint(folder) as ckpt:
        first, *_, last = ckpt.storage_order()
        ckpt.get(first)
        with open(weights, "r+b") as handle:
            handle.truncate(weights.stat().st_size // 2)
        with pytest.raises(CheckpointError, match=re.escape(f"truncated safetensors file {weights}")):
            ckpt.get(last)
        with pytest.raises(CheckpointError, match=re.escape(f"truncated safetensors file {weights}")):
            ckpt.get_span(last, 0, 1)


def test_writer_round_trip_and_shards(tmp_path):
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randn(7).to(torch.bfloat16),
        "c": torch.arange(4),
        "d": torch.zeros(0, 2),
        "e": torch.tensor(1.5, dtype=torch.float16),
    }
    specs = [TensorSpec(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    writer = ShardedSafetensorsWriter(tmp_path, specs, max_shard_size=40)
    for k, v in tensors.items():
        writer.write(k, v)
    writer.close()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    back = {}
    for shard in set(index["weight_map"].values()):
        back.update(load_file(str(tmp_path / shard)))  # the reference reader accepts our files
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    bad = ShardedSafetensorsWriter(tmp_path / "x", specs)
    with pytest.raises(CheckpointError, match="expected tensor 'a', got 'b'"):
        bad.write("b", tensors["b"])


def test_writer_takes_tensors_in_pieces(tmp_path):
    big, small = torch.randn(6, 4), torch.randn(3).to(torch.bfloat16)
    specs = [TensorSpec("big", (6, 4), torch.float32), TensorSpec("small", (3,), torch.bfloat16)]
    writer = ShardedSafetensorsWriter(tmp_path, specs, max_shard_size=10**6)
    flat = big.reshape(-1)
    for start in range(0, 24, 10):  # pieces of 10, 10 and 4 elements
        writer.write_span("big", flat[start : start + 10])
    writer.write_span("small", small)  # a whole tensor is a single piece
    writer.close()
    back = load_file(str(tmp_path / "model-00001-of-00001.safetensors"))
    assert torch.equal(back["big"], big) and torch.equal(back["small"], small)

    (tmp_path / "x").mkdir()
    bad = ShardedSafetensorsWriter(tmp_path / "x", specs)
    bad.write_span("big", flat[:20])
    with pytest.raises(CheckpointError, match="big .* 16 bytes left"):
        bad.write_span("big", flat[:8])  # more than the tensor holds
    with pytest.raises(CheckpointError, match="float64 for big"):
        bad.write_span("big", flat[:2].double())
    with pytest.raises(CheckpointError, match="after 80 of its bytes"):
        bad.write("big", big)  # a whole tensor where a piece is due
    with pytest.raises(CheckpointError, match="expected tensor 'big', got 'small'"):
        bad.write_span("small", small)
    with pytest.raises(CheckpointError, match="closed before tensor 'big'"):
        bad.close()


def test_cli_merge(t5_trio, tmp_path):
    out = tmp_path / ("merged-[v1]-" + "x" * 90)  # long, and not rich markup: printed whole on one line
    args = ["merge", "--ranker", str(t5_trio["ranker"]), "--domain", str(t5_trio["domain"]),
            "--pretrained", str(t5_trio["pretrained"]), "--alpha", "0.7", "--layers", "0", "--mode", "except",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tensors merged" in result.output and f"wrote {out} (model card: {out}/README.md)" in result.output
    meta = json.loads((out / "taskrank_merge.json").read_text())
    assert meta["alpha"] == [0.7] and meta["selection"] == {
        "layers": [0], "mode": "except", "include": [], "exclude": [], "description": "layers 0 (except)",
    }  # fmt: skip


def test_cli_errors_are_one_line_and_exit_2(t5_trio, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    cmd = [sys.executable, "-c", "from taskrank.cli import main; main()", "merge",
           "--ranker", str(t5_trio["ranker"]), "--domain", str(t5_trio["domain"]),
           "--pretrained", str(t5_trio["pretrained"]), "--alpha", "0.5", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "already exists" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*cmd[:-2], "--out", str(tmp_path / "n"), "--mode", "sideways", "--layers", "1"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "valid: only, except" in proc.stderr
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("order", ["disk", "pieces", "reversed"])
def test_sha256_from_merge_reads_equals_a_plain_hash(t5_trio, tmp_path, order):
    import hashlib
    import math

    from taskrank.checkpoints import hashing

    src = tmp_path / "ckpt"
    shutil.copytree(t5_trio["domain"], src)
    hashing._DONE.clear()
    ckpt = Checkpoint(src)
    keys = ckpt.storage_order()
    for k in keys if order != "reversed" else reversed(keys):
        if order == "pieces":  # as a merge to disk reads a large tensor
            size = math.prod(ckpt.shape(k))
            for start in range(0, size, 97):
                ckpt.get_span(k, start, min(start + 97, size))
        else:
            ckpt.get(k)
    (stream,) = ckpt._hashes.values()
    file = src / "model.safetensors"
    # read front to back, whole or in pieces, the reads themselves covered the whole file
    assert (stream.pos == file.stat().st_size) == (order != "reversed")
    expected = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    assert ckpt.sha256() == expected
    hashing._DONE.clear()
    assert Checkpoint(src).sha256() == expected
