"""sha256 of weight files, for the record of a merge's inputs, computed off the critical path.

Hashing a file costs about as much CPU time as reading it from a fast disk takes, so a merge
that hashed its inputs on its own path would take about twice the time of its I/O
(``benchmarks/merge.md`` has the measurements, for t5-base and extrapolated to 7B). A merge
needs the hashes of its local inputs only for the model card it writes last, so
:func:`read_ahead` starts them as soon as the inputs are known, in three steps:

1. a child process reads the files front to back into the page cache (``_READER``), so the
   merge's reads, a tensor from each input in turn, mostly come from memory;
2. other child processes hash the files behind it (``_HASHER``), each printing one
   ``<sha256> <index>`` line per file, from the page cache, alongside the torch import and
   the arithmetic;
3. a thread per hashing process reads those lines and resolves a future per file, which
   :func:`sha256_file` waits for. A file a child could not hash (or a child that died)
   resolves to None, and :func:`sha256_file` hashes it itself.

They are processes, not threads, so that they take no interpreter lock from the merge. When
the inputs would not fit in half the free memory (:func:`available_memory`, which respects a
container's limit), nothing is started ahead, since the merge would then read every file twice
from disk; a :class:`~taskrank.checkpoints.Checkpoint` instead hashes the bytes its tensor
reads bring in.

Hashes are also kept on disk, in ``$TASKRANK_CACHE/sha256`` (default ``~/.cache/taskrank``),
keyed by the file's path, device, inode, size, modification and status-change times, as
``git`` trusts a file's stat data: merging the same inputs again (an α sweep from
the command line, say) hashes nothing. Any change to the file, even one that restores its
modification time, changes its status-change time and so misses the cache.

Nothing here imports torch.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple

from ..atomic import write_json
from ..errors import CheckpointError
from ..paths import cache_root

log = logging.getLogger(__name__)

_CHUNK = 16 * 1024 * 1024


class _Key(NamedTuple):
    """What identifies one state of a file."""

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


# -- the hashes known: in this process, and on disk

_LOCK = threading.Lock()
_DONE: dict[_Key, str] = {}  # known hashes (this process)
_AHEAD: dict[_Key, Future[str | None]] = {}  # hashes being computed (None: not after all)
_HEX = frozenset("0123456789abcdef")


def _key(file: Path, st: os.stat_result | None = None) -> _Key:
    st = st if st is not None else file.stat()
    return _Key(str(file.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def state_of(file: Path, fd: int) -> _Key:
    """The file state of the open file ``fd`` (whose path is ``file``), the key its hash is
    recorded under: the bytes read through ``fd`` belong to this inode even if ``file`` is
    replaced meanwhile."""
    return _key(file, os.fstat(fd))


def _stored(key: _Key) -> Path:
    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:40]
    return cache_root() / "sha256" / f"{name}.json"


def _load(key: _Key) -> str | None:
    """The hash recorded on disk for exactly this file state, if any."""
    path = _stored(key)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.debug("ignoring unreadable hash cache entry %s: %s", path, exc)
        return None
    value = record.get("sha256") if isinstance(record, dict) else None
    if not isinstance(value, str) or record.get("key") != list(key) or len(value) != 64 or set(value) - _HEX:
        log.debug("ignoring hash cache entry %s: it does not match %s", path, key.path)
        return None
    return value


def _save(key: _Key, value: str) -> None:
    path = _stored(key)
    try:
        write_json(path, {"key": list(key), "sha256": value}, durable=False)  # a lost entry is only a miss
    except OSError as exc:  # a read-only home: hashes are then recomputed next time
        log.warning("cannot record the sha256 of %s in %s: %s", key.path, path.parent, exc)


def _known(key: _Key) -> str | None:
    """From memory, else from disk (then remembered in memory)."""
    with _LOCK:
        value = _DONE.get(key)
    if value is None:
        value = _load(key)
        if value is not None:
            with _LOCK:
                _DONE[key] = value
    return value


def _record(key: _Key, value: str) -> None:
    with _LOCK:
        _DONE[key] = value
    _save(key, value)


def _digest(file: Path) -> str:
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(_CHUNK))  # one buffer for the whole file: no page faults per chunk
    with open(file, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(buffer[:n])
    return digest.hexdigest()


def remember(file: Path, value: str, state: _Key | None = None) -> None:
    """Record the sha256 of ``file``, computed elsewhere (e.g. from a merge's own reads), under
    ``state`` (from :func:`state_of` when the bytes were read; default: the file's state now)."""
    _record(state if state is not None else _key(file), value)


def is_known(file: Path) -> bool:
    """True when the sha256 of ``file`` is known (here or on disk) or being computed ahead."""
    key = _key(file)
    with _LOCK:
        if key in _AHEAD:
            return True
    return _known(key) is not None


def sha256_file(file: str | os.PathLike[str]) -> str:
    """sha256 of a file, memoised per file state (here and on disk); waits for a hash started ahead."""
    path = Path(file)
    try:
        key = _key(path)
        with _LOCK:
            ahead = _AHEAD.get(key)
        if ahead is not None:
            value = ahead.result()
            if value is not None:
                return value
        value = _known(key)
        if value is not None:
            return value
        value = _digest(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path} to hash it: {exc}") from exc
    _record(key, value)
    return value


# -- the hash of a merge's own reads (when nothing was hashed ahead)


class StreamingHash:
    """sha256 of a file computed from the reads a merge makes anyway: while tensors are read
    in on-disk order, their bytes feed the digest, and only what was skipped is read again.

    Every byte comes from one open file (``fd``), and the hash is recorded under that file's
    state when hashing began, and only if the state is the same at the end: a file replaced
    or rewritten during the merge never gets a hash of mixed content."""

    def __init__(self, file: Path, fd: int, data_start: int) -> None:
        self.file = file
        self.fd = os.dup(fd)  # its own descriptor: the checkpoint may close its handle first
        self.state = state_of(file, self.fd)
        self.digest = hashlib.sha256()
        self.digest.update(os.pread(fd, data_start, 0))
        self.pos = data_start

    def feed(self, begin: int, end: int, data: memoryview) -> None:
        if begin == self.pos:
            self.digest.update(data)
            self.pos = end

    def finish(self, chunk: int = 8 * 1024 * 1024) -> str:
        try:
            while block := os.pread(self.fd, chunk, self.pos):
                self.digest.update(block)
                self.pos += len(block)
            value = self.digest.hexdigest()
            unchanged = state_of(self.file, self.fd) == self.state
        finally:
            self.close()
        if unchanged:
            remember(self.file, value, self.state)
        else:
            log.warning("%s changed while it was read: its sha256 is not recorded", self.file)
        return value

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


# -- hashing ahead, in child processes

_READ: set[_Key] = set()  # files a read-ahead process was started for
_CHILDREN: list[subprocess.Popen[Any]] = []  # read-ahead and hashing processes still running
_Job = tuple[Path, _Key, "Future[str | None]"]  # a file to hash ahead, and where its hash goes


def _spawn(code: str, files: list[Path], **kwargs: Any) -> subprocess.Popen[Any] | None:
    """Start ``python -I -S -c code files...``; None (and a debug line) where that fails."""
    _CHILDREN[:] = [p for p in _CHILDREN if p.poll() is None]  # reap the ones that have ended
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code, *map(str, files)], stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, **kwargs,
        )  # fmt: skip
    except OSError as exc:
        log.debug("cannot start a read-ahead process: %s", exc)
        return None
    _CHILDREN.append(process)
    return process


@atexit.register
def _stop_children() -> None:
    """Stop the helpers still running when the interpreter ends: their work is only a hint."""
    for process in _CHILDREN:
        if process.poll() is None:
            process.kill()
            process.wait()
    _CHILDREN.clear()


_MEMINFO = Path("/proc/meminfo")
# (limit, usage) files of the memory cgroup as a container sees it, v2 then v1: the page cache
# of a container counts against its limit
_V1 = Path("/sys/fs/cgroup/memory")
_CGROUP_FILES = (
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (_V1 / "memory.limit_in_bytes", _V1 / "memory.usage_in_bytes"),
)


def available_memory() -> int | None:
    """Bytes this process can still fill: Linux's ``MemAvailable``, or less when a memory
    cgroup (a container's limit) leaves less room; None where unknown."""
    try:
        with open(_MEMINFO, encoding="ascii") as handle:
            lines = [line for line in handle if line.startswith("MemAvailable:")]
        room = int(lines[0].split()[1]) * 1024 if lines else None
    except (OSError, ValueError):
        return None
    if room is None:
        return None
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit, usage = limit_file.read_text().strip(), int(usage_file.read_text().strip())
        except (OSError, ValueError):
            continue  # no such cgroup version here
        if limit.isdigit():  # "max" (v2) means no limit
            room = min(room, max(0, int(limit) - usage))
        break
    return room


# Runs in a child process (python -I -S -c ...): brings the files named on its command line
# into the page cache, front to back, without copying them anywhere. Each file is mapped 32 MB
# at a time and one byte in every 64 KiB is read: each page fault maps 64 KiB (the kernel's
# default fault-around) and sets off the sequential readahead that brings the rest in. The
# mapping is dropped before the next window, so the child holds one window at most.
_READER = """
import mmap, sys
for name in sys.argv[1:]:
    try:
        with open(name, "rb") as handle:
            size = handle.seek(0, 2)
            for offset in range(0, size, 1 << 25):
                length = min(1 << 25, size - offset)
                with mmap.mmap(handle.fileno(), length, offset=offset, access=mmap.ACCESS_READ) as mapped:
                    if hasattr(mapped, "madvise"):
                        mapped.madvise(mmap.MADV_SEQUENTIAL)
                    with memoryview(mapped) as view:
                        bytes(view[::65536])
    except (OSError, ValueError):
        pass  # a hint only: whoever opens the file for real reports the problem
"""


def _read_through(files: list[Path]) -> subprocess.Popen[bytes] | None:
    """Start a child process that brings ``files`` into the page cache (see ``_READER``).

    It reads front to back, which a disk serves faster, and with less CPU, than the merge's own
    order, a tensor from each input in turn; ``posix_fadvise(WILLNEED)`` brought nothing in
    (``benchmarks/bench_read.py``; its figures are in ``benchmarks/merge.md``). The pass runs
    in its own process: as a thread of the merge, reading ahead slowed the merge down in
    development runs.
    """
    return _spawn(_READER, files, stdout=subprocess.DEVNULL)


def read_ahead(
    files: Iterable[str | os.PathLike[str]], *, memory: int | None = None, processes: int | None = None
) -> list[Path]:
    """Read ``files`` ahead and start hashing them in the background; return the files whose
    hashing was started.

    A child process reads every file once into the page cache, and ``processes`` others hash
    those whose sha256 is not known yet; :func:`sha256_file` later waits for the result.
    Nothing is started when the files together exceed half of ``memory`` (default:
    :func:`available_memory`; where that is unknown, nothing is started). ``processes``
    defaults to one per file, leaving two cores to the merge, and at least two. As processes
    they share no interpreter lock with the merge and hash the mapped file without copying it.
    """
    found: dict[_Key, Path] = {}
    for file in files:
        path = Path(file)
        try:
            found.setdefault(_key(path), path)
        except OSError:
            continue  # a missing file is reported by whoever opens it for real
    total = sum(key.size for key in found)
    room = available_memory() if memory is None else memory
    if not found or room is None or total > room // 2:
        log.debug("not reading %d bytes ahead: %s bytes of memory available", total, room)
        return []
    # the disk brings them in while the CPU imports torch and hashes (behind, from memory)
    with _LOCK:
        fresh = [path for key, path in found.items() if key not in _READ]
        _READ.update(found)
    if fresh:
        _read_through(fresh)
    jobs: list[_Job] = []
    for key, path in found.items():
        if _known(key) is not None:
            continue
        with _LOCK:
            if key not in _AHEAD and key not in _DONE:
                future: Future[str | None] = Future()
                _AHEAD[key] = future
                jobs.append((path, key, future))
    if jobs:
        try:
            _hash_in_children(jobs, min(processes or max(2, (os.cpu_count() or 2) - 2), len(jobs)))
        except BaseException:
            _settle(jobs)  # nobody may wait for a hash that will never come
            raise
    return [path for path, _, _ in jobs]


# Runs in a child process: prints "<sha256> <index>" for each file named on its command line
# (or "- <index>" for one it could not read), hashing each 32 MB mapped window in place.
_HASHER = """
import hashlib, mmap, sys
for index, name in enumerate(sys.argv[1:]):
    try:
        digest = hashlib.sha256()
        with open(name, "rb") as handle:
            size = handle.seek(0, 2)
            for offset in range(0, size, 1 << 25):
                length = min(1 << 25, size - offset)
                with mmap.mmap(handle.fileno(), length, offset=offset, access=mmap.ACCESS_READ) as mapped:
                    with memoryview(mapped) as view:
                        digest.update(view)
        print(digest.hexdigest(), index, flush=True)
    except (OSError, ValueError):
        print("-", index, flush=True)
"""


def _hash_in_children(jobs: list[_Job], count: int) -> None:
    """Hash ``jobs`` in ``count`` child processes, the largest files first to the least loaded;
    a daemon thread per child records each result as it arrives. A file a child could not hash
    (or a child that died) resolves to None, and :func:`sha256_file` then hashes it itself."""
    groups: list[list[_Job]] = [[] for _ in range(count)]
    loads = [0] * count
    for job in sorted(jobs, key=lambda j: -j[1].size):
        i = loads.index(min(loads))
        groups[i].append(job)
        loads[i] += job[1].size
    for group in groups:
        process = _spawn(_HASHER, [path for path, _, _ in group], stdout=subprocess.PIPE, text=True)
        if process is None:
            _settle(group)
        else:
            threading.Thread(target=_collect, args=(process, group), daemon=True).start()


def _collect(process: subprocess.Popen[str], group: list[_Job]) -> None:
    try:
        with process:  # closes the pipe and waits for the process
            assert process.stdout is not None
            for line in process.stdout:
                value, _, index = line.strip().partition(" ")
                if len(value) == 64 and not set(value) - _HEX and index.isdigit() and int(index) < len(group):
                    _settle([group[int(index)]], value)
    finally:  # whatever happened, nobody is left waiting: the rest are hashed in-process
        _settle(group)


def _settle(jobs: list[_Job], value: str | None = None) -> None:
    """Resolve the jobs not resolved yet with ``value`` (recorded when it is a hash)."""
    for _, key, future in jobs:
        if value is not None and not future.done():
            _record(key, value)
        with _LOCK:  # one resolution per job, whichever thread comes first
            if future.done():
                continue
            _AHEAD.pop(key, None)
            future.set_result(value)
