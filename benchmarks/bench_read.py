"""How to bring three checkpoints in from disk: the read strategies behind `taskrank merge`.

Uses the three t5-base-shaped checkpoints of bench_merge.py (built there if missing) and
times, best of --repeats rounds, wall and CPU seconds (this process plus its children):

cold (the files evicted from the page cache before each):
  * read() loop       front to back, one 8 MB buffer reused (what `cat` does)
  * merge order       a tensor from each file in turn, fresh buffers (the merge before pieces)
  * merge order, 4 MB pieces, recycled
                      the same order, large tensors in pieces of 1M elements read into
                      recycled fixed-size blocks: what a merge to disk does now
  * mapped child      taskrank's read-ahead: a child process faults the files in through mmap
  * mapped child, then read()
                      the read-ahead, then the read() loop over the pages it brought in
                      (timed: the loop only; its CPU is what the merge's first reads pay)
  * fadvise WILLNEED  posix_fadvise on the three files, 1 s of sleep, then the read() loop
                      (timed: the loop only; fast if WILLNEED had brought the files in)
warm (the files cached):
  * fresh buffers     every tensor of the three files read into new memory
  * BufferPool        the same reads into buffers recycled by size (an in-memory merge)
  * 4 MB pieces       the pieces of a merge to disk, into recycled blocks
  * sha256, 1 thread  the three files hashed in this process, one after the other
  * sha256, 2 procs   taskrank's hashing child processes (two), behind nothing

    .venv/bin/python benchmarks/bench_read.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_merge import ROOT, build, evict
from taskrank.arithmetic.merging import SPAN, _spans
from taskrank.checkpoints import hashing
from taskrank.checkpoints.safetensors_io import BufferPool, read_header, read_tensor


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def read_loop(files: list[Path]) -> None:
    buffer = memoryview(bytearray(8 << 20))
    for f in files:
        with open(f, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


def tensor_reads(files: list[Path], pool: BufferPool | None, pieces: bool = False) -> Callable[[], None]:
    """A tensor from each file in turn (in the merge's pieces when ``pieces``)."""
    entries = [sorted(read_header(f)[0].values(), key=lambda e: e.begin) for f in files]

    def run() -> None:
        handles = [open(f, "rb") for f in files]  # noqa: SIM115 - closed below
        try:
            for row in zip(*entries, strict=True):
                spans = _spans(math.prod(row[0].shape)) if pieces else [None]
                for piece in spans:
                    for handle, entry in zip(handles, row, strict=True):
                        tensor = read_tensor(handle, entry, pool=pool, span=piece)
                        if pool is not None:
                            pool.give(tensor)
        finally:
            for handle in handles:
                handle.close()

    return run


def mapped_child(files: list[Path]) -> None:
    process = hashing._read_through(files)
    assert process is not None
    process.wait()


def mapped_then_read(files: list[Path]) -> float:
    mapped_child(files)
    start = time.perf_counter()
    read_loop(files)
    return time.perf_counter() - start


def fadvise_then_read(files: list[Path]) -> float:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        os.close(fd)
    time.sleep(1.0)
    start = time.perf_counter()
    read_loop(files)
    return time.perf_counter() - start


def sha_in_process(files: list[Path]) -> None:
    for f in files:
        digest = hashlib.sha256()
        buffer = memoryview(bytearray(16 << 20))
        with open(f, "rb", buffering=0) as handle:
            while n := handle.readinto(buffer):
                digest.update(buffer[:n])


def sha_children(files: list[Path]) -> None:
    jobs = [(f, hashing._key(f), Future()) for f in files]
    for _, key, future in jobs:
        hashing._AHEAD[key] = future
    hashing._hash_in_children(jobs, 2)
    for _, _, future in jobs:
        assert future.result() is not None
    hashing._DONE.clear()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "bench-work" / "merge")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ["TASKRANK_CACHE"] = str(args.work / "bench-read-store")  # never touch the user's store
    paths = build(args.work)
    files = [paths[r] / "model.safetensors" for r in ("ranker", "domain", "pretrained")]
    gb = sum(f.stat().st_size for f in files) / 1e9
    cold: dict[str, Callable[[], object]] = {
        "read() loop": lambda: read_loop(files),
        "merge order, fresh buffers": tensor_reads(files, None),
        "merge order, 4 MB pieces, recycled": tensor_reads(
            files, BufferPool(16 * 4 * SPAN, 4 * SPAN), pieces=True
        ),
        "mapped child (read-ahead)": lambda: mapped_child(files),
        "mapped child, then read()": lambda: mapped_then_read(files),
        "fadvise WILLNEED, then read()": lambda: fadvise_then_read(files),
    }
    warm: dict[str, Callable[[], object]] = {
        "fresh buffers": tensor_reads(files, None),
        "BufferPool": tensor_reads(files, BufferPool(3 * 4 * 32128 * 768)),
        "4 MB pieces, recycled blocks": tensor_reads(files, BufferPool(16 * 4 * SPAN, 4 * SPAN), pieces=True),
        "sha256, 1 thread": lambda: sha_in_process(files),
        "sha256, 2 processes": lambda: sha_children(files),
    }
    best: dict[str, tuple[float, float]] = {}
    rounds: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for group, methods in (("cold", cold), ("warm", warm)):
            for name, fn in methods.items():
                if group == "cold":
                    evict(files)
                else:
                    read_loop(files)
                cpu, start = cpu_seconds(), time.perf_counter()
                inner = fn()
                wall = inner if isinstance(inner, float) else time.perf_counter() - start
                used = cpu_seconds() - cpu
                key = f"{group}: {name}"
                rounds.setdefault(key, []).append((wall, used))
                if key not in best or wall < best[key][0]:
                    best[key] = (wall, used)
    print(f"three checkpoints, {gb:.2f} GB in all; best of {args.repeats} rounds; {os.cpu_count()} CPUs")
    print(f"{'method':42s} {'wall s':>7s} {'CPU s':>7s}")
    for key, (wall, used) in best.items():
        print(f"{key:42s} {wall:7.2f} {used:7.2f}")
    print("every round, wall s / CPU s:")
    for key, pairs in rounds.items():
        print(f"  {key:40s}" + "".join(f"  {wall:.2f}/{used:.2f}" for wall, used in pairs))


if __name__ == "__main__":
    main()
