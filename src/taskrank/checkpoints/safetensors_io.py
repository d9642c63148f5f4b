"""Safetensors reading and streaming writing, by hand rather than through the ``safetensors``
library, where the library cannot keep a merge within its bars (peak RSS ≤ 1.25 × one
checkpoint, wall time ≤ 2 × the cold I/O floor): ``benchmarks/bench_safetensors.py`` runs
the merge's reads and writes both ways, and ``benchmarks/merge.md`` (issue 13) records the
outcome.

- Reads (:func:`read_tensor`) are positioned reads into recycled buffers, and a merge feeds
  the bytes it reads, at their offsets, to the sha256 of each input. ``safe_open`` memory-maps
  the file: a mapping held through the merge keeps every page read resident, over the memory
  bar. Opened anew for each read (a tensor, or the rows of a piece, copied out before the
  mapping is dropped) it stays within the memory bar, and in the merge's own loop alone it is
  faster; but in the whole ``taskrank merge``, on the same cores as the hashing and writing,
  its per-read cost (opening, mapping, parsing the header each time) made the command slower
  than these reads and took it over the time bar for new inputs. Returning the mapped tensor
  without the copy was slower still.
- The header (:func:`read_header`) is parsed here for the byte offsets, which the library
  does not expose (a merge reads in on-disk order and hashes the bytes it reads), and for
  errors that name the file and what is wrong with it.
- Writes (:class:`ShardedSafetensorsWriter`) stream a tensor, or a piece of one, as soon as
  it is computed; ``save_file`` takes the whole state dict, so the output would be in memory
  at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..errors import CheckpointError
from .layout import SAFE_INDEX

# safetensors dtype codes <-> torch dtypes
_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_ST_CODES = {v: k for k, v in _ST_DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in a weight file, and what it is."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int


def read_header(file: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """The tensors of the safetensors ``file`` (by name) and its ``__metadata__``; a
    :class:`CheckpointError` naming the file when the header is truncated, impossible or
    points past the end of the file."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            raw_len = handle.read(8)
            if len(raw_len) != 8:
                raise CheckpointError(
                    f"corrupt safetensors file {file}: shorter than its 8-byte header length"
                )
            header_len = int.from_bytes(raw_len, "little")
            if header_len > min(_MAX_HEADER, size - 8):
                raise CheckpointError(
                    f"corrupt safetensors file {file}: header length {header_len} is impossible"
                )
            header = json.loads(handle.read(header_len))
    except OSError as exc:
        raise CheckpointError(f"cannot read safetensors file {file}: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt safetensors file {file}: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"corrupt safetensors file {file}: header is not a JSON object")
    data_start = 8 + header_len
    metadata = header.pop("__metadata__", None) or {}
    entries: dict[str, TensorEntry] = {}
    for name, spec in header.items():
        try:
            code, shape, (begin, end) = (
                spec["dtype"],
                tuple(int(s) for s in spec["shape"]),
                spec["data_offsets"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"corrupt safetensors file {file}: bad entry for tensor {name!r}") from exc
        dtype = _ST_DTYPES.get(code)
        if dtype is None:
            raise CheckpointError(f"tensor {name!r} in {file} has dtype {code}, which taskrank cannot read")
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if end - begin != nbytes or begin < 0 or data_start + end > size:
            raise CheckpointError(
                f"corrupt or truncated safetensors file {file}: tensor {name!r} needs bytes "
                f"{data_start + begin}..{data_start + end} of a {size}-byte file"
            )
        entries[name] = TensorEntry(file, dtype, shape, data_start + begin, data_start + end)
    return entries, metadata


class BufferPool:
    """Recycled memory for tensor reads.

    Reading into fresh memory costs a page fault per page, and on Linux that is most of
    the time of a read from the page cache (``benchmarks/bench_read.py``, whose figures are in
    ``benchmarks/merge.md``). A merge hands each finished tensor back with :meth:`give`, and
    the next read reuses its memory. Requests of up to ``block`` bytes (the pieces a merge to disk
    reads) all share buffers of exactly ``block`` bytes, so that any idle one fits the next
    read; larger requests are recycled by exact size. At most ``limit`` bytes wait idle; the
    oldest go first.

    A buffer that is never given back is simply freed with its tensor (the pool holds only
    weak references to lent buffers).
    """

    def __init__(self, limit: int, block: int = 0) -> None:
        self.limit = limit
        self.block = block
        self._idle: list[np.ndarray] = []
        self._idle_bytes = 0
        self._lent: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self.taken = 0  # buffers handed out ...
        self.reused = 0  # ... of which recycled

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 buffer of ``nbytes``, recycled when an idle one fits."""
        size = self.block if 0 < nbytes <= self.block else nbytes
        with self._lock:
            self.taken += 1
            for i in range(len(self._idle) - 1, -1, -1):
                if self._idle[i].nbytes == size:
                    buf = self._idle.pop(i)
                    self._idle_bytes -= size
                    self.reused += 1
                    break
            else:
                buf = np.empty(size, dtype=np.uint8)
            self._lent[buf.ctypes.data] = buf
        return buf[:nbytes]  # a view from the buffer's start: give() finds it by its address

    def give(self, tensor: torch.Tensor) -> None:
        """Take back the buffer under ``tensor`` (read through this pool, else nothing happens).
        The caller must not use ``tensor``, or any view of it, afterwards."""
        with self._lock:
            buf = self._lent.pop(tensor.data_ptr(), None)
            if buf is None:
                return
            self._idle.append(buf)
            self._idle_bytes += buf.nbytes
            while self._idle_bytes > self.limit:
                self._idle_bytes -= self._idle.pop(0).nbytes


def read_tensor(
    handle: BinaryIO,
    entry: TensorEntry,
    on_bytes: Callable[[int, int, memoryview], None] | None = None,
    pool: BufferPool | None = None,
    span: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Read ``entry`` from ``handle`` (positioned reads; the handle's offset is not used):
    the whole tensor in its shape, or elements ``span = (start, stop)`` of the flattened
    tensor as a 1-D tensor. ``on_bytes(begin, end, data)`` sees the bytes read and where they lie."""
    itemsize = entry.dtype.itemsize
    start, stop = span if span is not None else (0, math.prod(entry.shape))
    begin = entry.begin + start * itemsize
    n = (stop - start) * itemsize
    if n <= 0:
        return torch.empty(entry.shape if span is None else (0,), dtype=entry.dtype)
    buf = pool.take(n) if pool is not None else np.empty(n, dtype=np.uint8)
    view = buf.data  # a memoryview of the array
    got = 0
    while got < n:
        step = os.preadv(handle.fileno(), [view[got:]], begin + got)
        if step == 0:
            raise CheckpointError(
                f"truncated safetensors file {entry.file}: expected {n} bytes at offset {begin}, read {got}"
            )
        got += step
    if on_bytes is not None:
        on_bytes(begin, begin + n, view)
    flat = torch.from_numpy(buf).view(entry.dtype)
    return flat if span is not None else flat.reshape(entry.shape)


def parse_size(size: str | int) -> int:
    """``"2GB"`` → bytes (decimal units as in transformers, ``GiB`` binary)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, flags=re.IGNORECASE)
    if not m:
        raise CheckpointError(f"cannot parse size {size!r}; use e.g. 500MB or 2GB")
    unit = (m.group(2) or "B").upper()
    base = 1024 if "I" in unit else 1000
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
    return int(float(m.group(1)) * base**power)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


class ShardedSafetensorsWriter:
    """Stream tensors into sharded safetensors files with an index, in a planned order.

    The headers are computed up front from the plan (names, shapes, dtypes), so each tensor,
    or each piece of one (:meth:`write_span`), is written to disk as soon as it is computed
    and then dropped: memory stays at what is in hand, never the model. (The library's
    ``save_file`` takes the whole output at once, over the merge's memory bar:
    ``benchmarks/merge.md``, issue 13.)
    """

    def __init__(self, out_dir: Path, plan: Iterable[TensorSpec], max_shard_size: str | int = "2GB"):
        self.out_dir = Path(out_dir)
        self.plan = list(plan)
        limit = parse_size(max_shard_size)
        shards: list[list[TensorSpec]] = [[]]
        size = 0
        for spec in self.plan:
            if shards[-1] and size + spec.nbytes > limit:
                shards.append([])
                size = 0
            shards[-1].append(spec)
            size += spec.nbytes
        n = len(shards)
        self.shards = [(f"model-{i + 1:05d}-of-{n:05d}.safetensors", specs) for i, specs in enumerate(shards)]
        self._order = [spec for _, specs in self.shards for spec in specs]
        self._shard_of = [i for i, (_, specs) in enumerate(self.shards) for _ in specs]
        self._next = 0
        self._written = 0  # bytes of the tensor being written
        self._shard = -1
        self._handle: BinaryIO | None = None

    def _open_shard(self, index: int) -> None:
        if self._handle is not None:
            self._handle.close()
        filename, specs = self.shards[index]
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for spec in specs:
            header[spec.name] = {
                "dtype": _ST_CODES[spec.dtype],
                "shape": list(spec.shape),
                "data_offsets": [offset, offset + spec.nbytes],
            }
            offset += spec.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # align the data section to 8 bytes
        self._handle = open(self.out_dir / filename, "wb")  # noqa: SIM115 - closed in _open_shard/close
        self._handle.write(len(raw).to_bytes(8, "little"))
        self._handle.write(raw)
        self._shard = index

    def _expect(self, name: str) -> TensorSpec:
        """The spec of the tensor being written, which must be ``name``; opens its shard."""
        if self._next >= len(self._order):
            raise CheckpointError(f"tensor {name!r} written past the end of the plan")
        spec = self._order[self._next]
        if name != spec.name:
            raise CheckpointError(f"writer expected tensor {spec.name!r}, got {name!r}")
        if self._shard_of[self._next] != self._shard or self._handle is None:
            self._open_shard(self._shard_of[self._next])
        return spec

    def _append(self, spec: TensorSpec, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes and self._handle is not None:
            flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            self._handle.write(flat.numpy().data)
        self._written += nbytes
        if self._written == spec.nbytes:
            self._next += 1
            self._written = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write the next tensor of the plan; names, shapes and dtypes must match the plan."""
        spec = self._expect(name)
        if self._written or tuple(tensor.shape) != spec.shape or tensor.dtype != spec.dtype:
            raise CheckpointError(
                f"writer expected {spec.name} {list(spec.shape)} {spec.dtype}, "
                f"got {name} {list(tensor.shape)} {tensor.dtype}"
                + (f" after {self._written} of its bytes" if self._written else "")
            )
        self._append(spec, tensor)

    def write_span(self, name: str, piece: torch.Tensor) -> None:
        """Write the next elements of tensor ``name`` (in row-major order): a tensor may come
        in pieces, and the next tensor of the plan starts once all of its bytes are written."""
        spec = self._expect(name)
        nbytes = piece.numel() * piece.element_size()
        if piece.dtype != spec.dtype or self._written + nbytes > spec.nbytes:
            raise CheckpointError(
                f"writer got {nbytes} bytes of {piece.dtype} for {spec.name} {list(spec.shape)} "
                f"{spec.dtype}, which has {spec.nbytes - self._written} bytes left to write"
            )
        self._append(spec, piece)

    def close(self) -> None:
        """Finish the last shard and write ``model.safetensors.index.json``."""
        if self._next != len(self._order):
            missing = self._order[self._next].name
            raise CheckpointError(f"writer closed before tensor {missing!r} was written")
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        total = sum(spec.nbytes for spec in self._order)
        weight_map = {spec.name: filename for filename, specs in self.shards for spec in specs}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (self.out_dir / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")

    def abort(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None
