"""File hashes for model cards (computed ahead, kept on disk) and the merge's recycled read buffers."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from taskrank.arithmetic import merge, merging
from taskrank.checkpoints import Checkpoint, hashing
from taskrank.checkpoints.safetensors_io import BufferPool
from taskrank.cli.merge import _local_weight_files
from taskrank.errors import CheckpointError


@pytest.fixture
def weights(tmp_path: Path, t5_trio: dict[str, Path]) -> Path:
    """A private copy of a weight file, so that its hash is unknown to this process."""
    folder = tmp_path / "ckpt"
    shutil.copytree(t5_trio["domain"], folder)
    return folder / "model.safetensors"


@pytest.fixture(autouse=True)
def fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKRANK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hashing, "_DONE", {})


def plain_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def forbid_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail on any hashing, here or in a child process."""

    def refuse(*args: object) -> str:
        raise AssertionError(f"hashed again: {args}")

    monkeypatch.setattr(hashing, "_digest", refuse)
    monkeypatch.setattr(hashing, "_hash_in_children", refuse)


def test_read_ahead_gives_the_file_sha256_and_the_disk_keeps_it(weights: Path, monkeypatch) -> None:
    assert hashing.read_ahead([weights, weights], memory=10**12) == [weights]  # once per file
    assert hashing.is_known(weights)
    assert hashing.sha256_file(weights) == plain_sha256(weights)
    assert hashing.read_ahead([weights], memory=10**12) == []  # known: nothing to start
    # a new process knows only the disk store
    monkeypatch.setattr(hashing, "_DONE", {})
    forbid_reading(monkeypatch)
    assert hashing.sha256_file(weights) == plain_sha256(weights)


def test_a_changed_file_is_hashed_again(weights: Path, monkeypatch) -> None:
    first = hashing.sha256_file(weights)
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size; the modification time is put back below
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setattr(hashing, "_DONE", {})
    second = hashing.sha256_file(weights)
    assert second == plain_sha256(weights) != first


def _replace_same_size_and_mtime(weights: Path) -> None:
    """Rename a new file over ``weights``: one byte differs, the size and mtime are the old ones."""
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    incoming = weights.with_name("incoming.tmp")
    incoming.write_bytes(bytes(data))
    os.utime(incoming, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(incoming, weights)


def test_a_file_replaced_with_the_same_size_and_mtime_is_hashed_again(weights: Path, monkeypatch) -> None:
    """``rsync -t`` or a restored backup: a new file (new inode) renamed over the old one, with
    the old size and modification time."""
    first = hashing.sha256_file(weights)
    stat = weights.stat()
    _replace_same_size_and_mtime(weights)
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert hashing.sha256_file(weights) == plain_sha256(weights) != first  # this process
    monkeypatch.setattr(hashing, "_DONE", {})
    assert hashing.sha256_file(weights) == plain_sha256(weights)  # a new one, with the disk store


def test_a_file_replaced_while_a_merge_reads_it_gets_no_mixed_hash(weights: Path, monkeypatch) -> None:
    """The hash a merge computes from its own reads belongs to the file it read, even when
    another file is renamed over that path before the hash is finished."""
    original = plain_sha256(weights)
    ckpt = Checkpoint(weights.parent)
    first = ckpt.storage_order()[0]
    ckpt.get(first)  # starts the streaming hash on the file as it is now
    _replace_same_size_and_mtime(weights)
    assert ckpt.sha256() == original  # every byte from the file that was read
    ckpt.close()
    monkeypatch.setattr(hashing, "_DONE", {})
    assert hashing.sha256_file(weights) == plain_sha256(weights) != original


def test_a_file_rewritten_in_place_while_a_merge_reads_it_is_not_recorded(weights: Path, monkeypatch) -> None:
    ckpt = Checkpoint(weights.parent)
    first = ckpt.storage_order()[0]
    ckpt.get(first)  # its bytes are hashed as read
    stat = weights.stat()
    offset = ckpt._entries[first].begin
    with open(weights, "r+b") as handle:  # a byte already hashed; same inode, size and mtime
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    ckpt.sha256()
    ckpt.close()
    monkeypatch.setattr(hashing, "_DONE", {})
    assert hashing.sha256_file(weights) == plain_sha256(weights)


def test_a_corrupt_store_entry_is_ignored(weights: Path, monkeypatch) -> None:
    value = hashing.sha256_file(weights)
    entry = hashing._stored(hashing._key(weights))
    assert entry.is_file()
    for garbage in ("{not json", "[]", '{"key": [], "sha256": "' + value + '"}', '{"sha256": 5}'):
        entry.write_text(garbage)
        monkeypatch.setattr(hashing, "_DONE", {})
        assert hashing.sha256_file(weights) == value
    entry.write_text('{"key": ' + str(list(hashing._key(weights))).replace("'", '"') + ', "sha256": "zz"}')
    monkeypatch.setattr(hashing, "_DONE", {})
    assert hashing.sha256_file(weights) == value


def test_nothing_is_hashed_ahead_without_room_in_memory(weights: Path) -> None:
    assert hashing.read_ahead([weights], memory=weights.stat().st_size) == []  # needs twice its size
    assert not hashing.is_known(weights)


def test_a_file_that_cannot_be_hashed_ahead_is_reported_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-file.safetensors"
    folder.mkdir()
    assert hashing.read_ahead([folder], memory=10**12) == [folder]
    with pytest.raises(CheckpointError, match=r"cannot read .*not-a-file\.safetensors to hash it"):
        hashing.sha256_file(folder)
    assert not hashing.is_known(folder)


def test_merge_card_hashes_come_from_the_store(t5_trio, tmp_path: Path, monkeypatch) -> None:
    first = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.5, out=tmp_path / "a")
    expected = plain_sha256(Path(t5_trio["domain"]) / "model.safetensors")
    assert first.report.inputs["domain"]["sha256"] == expected
    monkeypatch.setattr(hashing, "_DONE", {})
    forbid_reading(monkeypatch)
    second = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.7, out=tmp_path / "b")
    assert second.report.inputs == first.report.inputs


def test_the_command_line_finds_local_weight_files_only(t5_trio, tmp_path: Path) -> None:
    assert _local_weight_files(str(t5_trio["ranker"])) == [Path(t5_trio["ranker"]) / "model.safetensors"]
    assert _local_weight_files("castorini/monot5-base-msmarco") == []  # a hub id: recorded by revision
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _local_weight_files(str(empty)) == []  # the merge reports it, with context
    snapshot = tmp_path / "models--org--name" / "snapshots" / "abc123"
    shutil.copytree(t5_trio["ranker"], snapshot)
    assert _local_weight_files(str(snapshot)) == []  # hub cache: recorded by revision


# --------------------------------------------------------------------------- read buffers


def test_buffer_pool_recycles_by_size_and_bounds_what_it_keeps() -> None:
    pool = BufferPool(limit=100)
    a = torch.from_numpy(pool.take(64))
    address = a.data_ptr()
    pool.give(torch.zeros(16))  # not from this pool: nothing happens
    pool.give(a)
    assert torch.from_numpy(pool.take(64)).data_ptr() == address
    assert (pool.taken, pool.reused) == (2, 1)
    assert torch.from_numpy(pool.take(32)).data_ptr() != address  # another size: a new buffer
    b, c = torch.from_numpy(pool.take(60)), torch.from_numpy(pool.take(60))
    pool.give(b)
    pool.give(c)  # 120 bytes idle > 100: the oldest (b) is dropped
    kept = {torch.from_numpy(pool.take(60)).data_ptr(), torch.from_numpy(pool.take(60)).data_ptr()}
    assert c.data_ptr() in kept and b.data_ptr() not in kept


def test_buffer_pool_blocks_serve_every_smaller_read() -> None:
    pool = BufferPool(limit=1000, block=64)
    a = pool.take(64)
    pool.give(torch.from_numpy(a))
    b = pool.take(10)  # any read of up to a block fits an idle block
    assert b.nbytes == 10 and b.ctypes.data == a.ctypes.data
    c = pool.take(30)  # b is lent: a new block
    assert c.ctypes.data != a.ctypes.data
    pool.give(torch.from_numpy(b).view(torch.int16))  # given back through a view of another dtype
    assert pool.take(64).ctypes.data == a.ctypes.data
    big = pool.take(100)  # larger than a block: its own size, recycled by size
    assert big.nbytes == 100
    pool.give(torch.from_numpy(big))
    assert pool.take(100).ctypes.data == big.ctypes.data
    assert (pool.taken, pool.reused) == (6, 3)


def test_merge_recycles_buffers_and_leaves_torch_threads_alone(t5_trio, tmp_path, monkeypatch) -> None:
    pools: list[BufferPool] = []
    real = BufferPool.__init__

    def spy(self: BufferPool, limit: int, block: int = 0) -> None:
        real(self, limit, block)
        pools.append(self)

    monkeypatch.setattr(BufferPool, "__init__", spy)
    threads = torch.get_num_threads()
    merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.7, out=tmp_path / "m")
    assert torch.get_num_threads() == threads
    (pool,) = pools
    assert pool.reused > pool.taken // 2  # the tiny model repeats its shapes layer after layer
    monkeypatch.setattr(merging, "SPAN", 97)  # in pieces, every read fits a recycled block
    merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], alpha=0.7, out=tmp_path / "p")
    assert pools[-1].block == 4 * 97 and pools[-1].taken - pools[-1].reused < 16
    ckpt = Checkpoint(t5_trio["ranker"])
    assert ckpt.pool is None  # a plain checkpoint reads into memory it hands over for good


def test_read_ahead_starts_one_reader_per_file_state(weights: Path, monkeypatch) -> None:
    started: list[list[Path]] = []
    monkeypatch.setattr(hashing, "_READ", set())
    monkeypatch.setattr(hashing, "_read_through", lambda files: started.append(files))
    hashing.read_ahead([weights], memory=10**12)
    hashing.read_ahead([weights], memory=10**12)  # the command line, then merge(): read once
    assert started == [[weights]]
    assert hashing.read_ahead([weights], memory=1) == []  # no room: neither read nor hashed
    assert started == [[weights]]


def test_the_reader_process_reads_and_never_fails(weights: Path, tmp_path: Path) -> None:
    process = hashing._read_through([tmp_path / "missing.safetensors", weights])
    assert process is not None and process.wait(timeout=60) == 0  # a missing file is skipped


def test_hashing_processes_split_the_files_and_agree_with_hashlib(t5_trio, tmp_path: Path) -> None:
    copies = []
    for role in ("ranker", "domain", "pretrained"):
        shutil.copytree(t5_trio[role], tmp_path / role)
        copies.append(tmp_path / role / "model.safetensors")
    assert hashing.read_ahead(copies, memory=10**12, processes=2) == copies
    assert [hashing.sha256_file(f) for f in copies] == [plain_sha256(f) for f in copies]


@pytest.mark.parametrize("failure", ["no process", "garbage", "dies"])
def test_a_failed_hashing_process_falls_back_to_hashing_here(
    weights: Path, monkeypatch, failure: str
) -> None:
    if failure == "no process":
        real = hashing.subprocess.Popen

        def popen(args, **kwargs):
            if hashing._HASHER in args:  # the reader still starts
                raise OSError("no more processes")
            return real(args, **kwargs)

        monkeypatch.setattr(hashing.subprocess, "Popen", popen)
    else:
        code = (
            "print('zz 0'); print('%s 7')" % ("0" * 64) if failure == "garbage" else "import os; os._exit(9)"
        )
        monkeypatch.setattr(hashing, "_HASHER", code)
    assert hashing.read_ahead([weights], memory=10**12) == [weights]
    assert hashing.sha256_file(weights) == plain_sha256(weights)
    assert not hashing._AHEAD


def test_available_memory_respects_a_container_limit(tmp_path: Path, monkeypatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   20000000 kB\n")
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    monkeypatch.setattr(hashing, "_MEMINFO", meminfo)
    monkeypatch.setattr(hashing, "_CGROUP_FILES", ((limit, usage),))
    assert hashing.available_memory() == 20000000 * 1024  # no cgroup files: the kernel's figure
    limit.write_text("max\n")
    usage.write_text("123\n")
    assert hashing.available_memory() == 20000000 * 1024  # v2 "max": no limit
    limit.write_text(f"{4 * 2**30}\n")
    usage.write_text(f"{3 * 2**30}\n")
    assert hashing.available_memory() == 2**30  # the container leaves 1 GiB
    meminfo.write_text("nothing useful\n")
    assert hashing.available_memory() is None
