"""Lazy read access to a checkpoint's tensors, and in-memory sources."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

import torch

from ..atomic import copy_plain
from ..errors import CheckpointError
from . import hashing
from .layout import (
    BIN_INDEX,
    BIN_SINGLE,
    SAFE_INDEX,
    SAFE_SINGLE,
    WEIGHT_INDEXES,
    WEIGHT_SUFFIXES,
    in_hub_cache,
    weight_files,
)
from .resolve import resolve_checkpoint
from .safetensors_io import BufferPool, TensorEntry, read_header, read_tensor

log = logging.getLogger(__name__)


class TensorSource(Protocol):
    """What the arithmetic needs from a set of weights: names, shapes, dtypes and tensors.

    :class:`Checkpoint` and :class:`StateDictSource` implement it; :func:`as_source` turns any
    object with ``name``, ``config``, ``keys``, ``__contains__``, ``shape``, ``dtype`` and ``get``
    into one (reading whole tensors)."""

    name: str
    config: dict[str, Any]
    #: get() and get_span() return new buffers each call, which callers may modify in place
    fresh_reads: bool
    #: get_span() reads only the elements asked for; when False it reads the whole tensor, so a
    #: merge takes such tensors in one piece rather than reading them once per piece
    reads_spans: bool

    def keys(self) -> list[str]: ...

    def __contains__(self, key: object) -> bool: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def dtype(self, key: str) -> torch.dtype: ...

    def get(self, key: str) -> torch.Tensor: ...

    def get_span(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Elements ``start:stop`` of the flattened (row-major) tensor ``key``, as a 1-D tensor."""
        ...

    def storage_order(self) -> list[str]:
        """The keys in the order that reads them fastest (on-disk order for a file)."""
        ...

    def give_back(self, tensor: torch.Tensor) -> None:
        """Hand back a tensor from get()/get_span() that the caller is done with, so that its
        buffer can take a later read (a no-op for sources that do not recycle buffers)."""
        ...

    def provenance(self, with_hash: bool = True) -> dict[str, str]:
        """Where the weights came from, as recorded on a merge's model card."""
        ...


class MinimalSource(Protocol):
    """The least an object needs for :func:`as_source` to read weights from it."""

    def keys(self) -> Iterable[str]: ...

    def shape(self, key: str) -> Sequence[int]: ...

    def dtype(self, key: str) -> torch.dtype: ...

    def get(self, key: str) -> torch.Tensor: ...


#: what :func:`as_source` accepts: a checkpoint folder or hub id, a state dict, or a source
SourceLike = str | os.PathLike[str] | Mapping[str, torch.Tensor] | TensorSource | MinimalSource


def _load_bin(file: Path) -> dict[str, torch.Tensor]:
    try:
        try:
            obj = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            log.debug("%s is a legacy (non-zip) pickle; loading it without mmap", file)
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"missing weight file {file}") from exc
    except Exception as exc:  # torch raises many types for a corrupt or unsafe pickle
        raise CheckpointError(
            f"cannot load PyTorch weights {file} (corrupt, or not weights-only): {_pickle_problem(exc)}"
        ) from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{file} does not hold a state dict of tensors")
    return dict(obj)


def _pickle_problem(exc: Exception) -> str:
    """One line of what torch.load said: the weights-only unpickler's own reason when it gives one
    (its message is several paragraphs of advice around it)."""
    text = str(exc)
    _, marker, reason = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (reason if marker else text).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def check_weight_files(path: str | os.PathLike[str], *, pickles: bool = True) -> None:
    """Check the weight files of the local checkpoint folder ``path`` as taskrank reads them, so
    that a bad one is a :class:`CheckpointError` naming the file: a truncated safetensors file, a
    header of impossible length (a length of 2^62 is not allocated), a missing shard, and with
    ``pickles`` a ``.bin`` that ``torch.load(weights_only=True)`` refuses or cannot read.

    Safetensors files cost a header read each; pickles are loaded whole (memory-mapped where
    they can be), so callers check them once something has failed. A folder without any weight
    file passes: the loader that needs one says so in its own terms.

    Example::

        check_weight_files("models/ranker")  # before handing the folder to transformers
    """
    folder = Path(path)
    if not any((folder / name).exists() for name in (SAFE_INDEX, SAFE_SINGLE, BIN_INDEX, BIN_SINGLE)):
        return
    kind, files = weight_files(folder)
    for file in files:
        if kind == "safetensors":
            read_header(file)
        elif pickles:
            _load_bin(file)


class Checkpoint:
    """Lazy read access to the weights of one checkpoint.

    Example::

        ckpt = Checkpoint("castorini/monot5-base-msmarco")
        ckpt.shape("shared.weight")        # no tensor read yet
        emb = ckpt.get("shared.weight")    # reads this tensor only
    """

    #: get() returns a new buffer each call, which callers may modify in place
    fresh_reads = True
    reads_spans = True

    def __init__(self, ref: str | os.PathLike[str], revision: str | None = None) -> None:
        self.ref = os.fspath(ref)
        self.path = resolve_checkpoint(ref, revision)
        self.name = self.ref
        hub = in_hub_cache(self.path)
        self.repo_id = hub[0] if hub else None
        self.revision = hub[1] if hub else revision
        self.config = self._read_config()
        self._entries: dict[str, TensorEntry] = {}
        self._bin_map: dict[str, Path] = {}
        self._bin_cache: tuple[Path, dict[str, torch.Tensor]] | None = None
        self._handles: dict[Path, BinaryIO] = {}
        self._hashes: dict[Path, hashing.StreamingHash] = {}
        #: where get() reads safetensors tensors into (set by a merge, which gives them back)
        self.pool: BufferPool | None = None
        self.weight_files = self._discover()

    def __repr__(self) -> str:
        return f"Checkpoint({self.ref!r}, format={self.format!r}, tensors={len(self)})"

    # -- discovery
    def _read_config(self) -> dict[str, Any]:
        cfg = self.path / "config.json"
        if not cfg.exists():
            return {}
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot parse {cfg}: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"{cfg} is not a JSON object")
        return data

    def _discover(self) -> list[Path]:
        self.format, files = weight_files(self.path)
        if self.format == "safetensors":
            # headers parsed by hand: the merge needs each tensor's byte offsets, which the
            # library does not expose (benchmarks/merge.md, issue 13)
            for f in files:
                entries, _ = read_header(f)
                clash = entries.keys() & self._entries.keys()
                if clash:
                    raise CheckpointError(f"tensor {sorted(clash)[0]!r} appears in two shards of {self.path}")
                self._entries.update(entries)
        else:
            for f in files:
                for key, tensor in _load_bin(f).items():
                    self._bin_map[key] = f
                    self._entries[key] = TensorEntry(f, tensor.dtype, tuple(tensor.shape), 0, 0)
        return files

    # -- mapping protocol
    def keys(self) -> list[str]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def _entry(self, key: str) -> TensorEntry:
        try:
            return self._entries[key]
        except KeyError:
            raise CheckpointError(f"tensor {key!r} not found in checkpoint {self.ref}") from None

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entry(key).shape

    def storage_order(self) -> list[str]:
        """Tensor names in the order their bytes lie on disk (shard, then offset): reading in
        this order is sequential, which is what disks and read-ahead like."""
        files = {f: i for i, f in enumerate(self.weight_files)}
        return sorted(
            self._entries, key=lambda k: (files.get(self._entries[k].file, 0), self._entries[k].begin)
        )

    def dtype(self, key: str) -> torch.dtype:
        return self._entry(key).dtype

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.weight_files)

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor (a fresh CPU tensor owned by the caller)."""
        return self._read(key, None)

    def get_span(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Elements ``start:stop`` of the flattened tensor ``key`` (row-major), as a fresh 1-D
        tensor: a merge works through a large tensor a piece at a time, reading only that piece."""
        entry = self._entry(key)
        size = math.prod(entry.shape)
        if not 0 <= start <= stop <= size:
            raise CheckpointError(f"elements {start}:{stop} are outside tensor {key!r} ({size} elements)")
        return self._read(key, (start, stop))

    def _read(self, key: str, span: tuple[int, int] | None) -> torch.Tensor:
        entry = self._entry(key)
        if self.format == "safetensors":
            handle = self._handles.get(entry.file)
            if handle is None:
                try:
                    handle = open(entry.file, "rb", buffering=0)  # noqa: SIM115 - kept open until close()
                except OSError as exc:
                    raise CheckpointError(f"cannot open {entry.file}: {exc}") from exc
                self._handles[entry.file] = handle
                if not hashing.is_known(entry.file):  # not hashed, nor being hashed ahead
                    start = min(e.begin for e in self._entries.values() if e.file == entry.file)
                    self._hashes[entry.file] = hashing.StreamingHash(entry.file, handle.fileno(), start)
            stream = self._hashes.get(entry.file)
            on_bytes = stream.feed if stream is not None else None
            # Positioned reads by hand, not safetensors.safe_open: opened for each read, the
            # library was slower in the whole `taskrank merge` and went over its time bar for
            # new inputs; held open, over its memory bar (benchmarks/merge.md, issue 13).
            return read_tensor(handle, entry, on_bytes, pool=self.pool, span=span)
        file = self._bin_map[key]
        if self._bin_cache is None or self._bin_cache[0] != file:
            self._bin_cache = None  # drop the previous shard before mapping the next
            self._bin_cache = (file, _load_bin(file))
        tensor = self._bin_cache[1][key]
        if span is not None:
            tensor = tensor.reshape(-1)[span[0] : span[1]]
        return tensor.clone()

    def give_back(self, tensor: torch.Tensor) -> None:
        """Return a tensor from :meth:`get` to :attr:`pool`, the read buffers of a merge."""
        if self.pool is not None:
            self.pool.give(tensor)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._bin_cache = None

    def __del__(self) -> None:  # a checkpoint dropped without close() still releases its files
        if getattr(self, "_handles", None):
            self.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- identity
    def _file_sha256(self, file: Path) -> str:
        stream = self._hashes.pop(file, None)
        if stream is not None:
            return stream.finish()
        return hashing.sha256_file(file)

    def sha256(self) -> str:
        """sha256 over the weight files (each file's sha256, in name order). Files read in
        on-disk order by an earlier merge are hashed from those reads, without reading twice."""
        if len(self.weight_files) == 1:
            return self._file_sha256(self.weight_files[0])
        digest = hashlib.sha256()
        for f in self.weight_files:
            digest.update(f"{f.name}:{self._file_sha256(f)}\n".encode())
        return digest.hexdigest()

    def provenance(self, with_hash: bool = True) -> dict[str, str]:
        """Where this checkpoint came from: hub id and revision, or local path and sha256."""
        info = {"ref": self.ref, "path": str(self.path), "format": self.format}
        if self.repo_id:
            info["hub_id"] = self.repo_id
            info["revision"] = str(self.revision)  # a snapshot folder always names its commit
        elif with_hash:
            info["sha256"] = self.sha256()
        return info

    def fingerprint(self) -> str:
        if self.repo_id:
            return f"{self.repo_id}@{self.revision}"
        return f"sha256:{self.sha256()}"


def fingerprint(ref: str | os.PathLike[str] | Checkpoint) -> str:
    """A stable identity of a checkpoint's weights: ``org/name@commit`` for hub snapshots,
    ``sha256:…`` of the weight files for local directories."""
    ckpt = ref if isinstance(ref, Checkpoint) else Checkpoint(ref)
    return ckpt.fingerprint()


class StateDictSource:
    """A :class:`TensorSource` over tensors already in memory (a state dict)."""

    #: get() returns the caller's own tensors: never modify them in place
    fresh_reads = False
    reads_spans = True

    def __init__(
        self, tensors: Mapping[str, torch.Tensor], name: str = "<state dict>", config: dict | None = None
    ):
        self._tensors = dict(tensors)
        self.name = name
        self.config = dict(config or {})

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: object) -> bool:
        return key in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._tensors[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        return self._tensors[key].dtype

    def get(self, key: str) -> torch.Tensor:
        if key not in self._tensors:
            raise CheckpointError(f"tensor {key!r} not found in {self.name}")
        return self._tensors[key].detach().cpu()

    def get_span(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Elements ``start:stop`` of the flattened tensor (a view where possible: read only)."""
        return self.get(key).reshape(-1)[start:stop]

    def storage_order(self) -> list[str]:
        return self.keys()

    def give_back(self, tensor: torch.Tensor) -> None:
        pass  # the tensors are the caller's own

    def provenance(self, with_hash: bool = True) -> dict[str, str]:
        return {"ref": self.name, "format": "in-memory"}


class WholeTensorSource:
    """A :class:`TensorSource` over an object that offers only the minimal read protocol
    (``keys``, ``shape``, ``dtype``, ``get``): every read is of a whole tensor, and the
    provenance names the object's type."""

    fresh_reads = False
    reads_spans = False

    def __init__(self, source: MinimalSource) -> None:
        self.source = source
        self.name: str = str(getattr(source, "name", type(source).__name__))
        self.config: dict[str, Any] = dict(getattr(source, "config", None) or {})

    def keys(self) -> list[str]:
        return list(self.source.keys())

    def __contains__(self, key: object) -> bool:
        return key in list(self.source.keys())

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.source.shape(key))

    def dtype(self, key: str) -> torch.dtype:
        return self.source.dtype(key)

    def get(self, key: str) -> torch.Tensor:
        tensor: torch.Tensor = self.source.get(key)
        return tensor

    def get_span(self, key: str, start: int, stop: int) -> torch.Tensor:
        return self.get(key).reshape(-1)[start:stop]

    def storage_order(self) -> list[str]:
        return self.keys()

    def give_back(self, tensor: torch.Tensor) -> None:
        pass

    def provenance(self, with_hash: bool = True) -> dict[str, str]:
        return {"ref": self.name, "format": type(self.source).__name__}


#: what an object needs to be used as a TensorSource as it is
_PROTOCOL = ("name", "config", "fresh_reads", "reads_spans", "keys", "__contains__", "shape", "dtype",
             "get", "get_span", "storage_order", "give_back", "provenance")  # fmt: skip


def as_source(obj: SourceLike) -> TensorSource:
    """Turn a path, hub id, state dict or source into a :class:`TensorSource`; an object with
    only ``keys``, ``get``, ``shape`` and ``dtype`` is wrapped in a :class:`WholeTensorSource`."""
    if isinstance(obj, (str, os.PathLike)):
        return Checkpoint(obj)
    if isinstance(obj, Mapping):
        return StateDictSource(obj)
    if all(hasattr(obj, attr) for attr in _PROTOCOL):
        return cast(TensorSource, obj)
    if all(hasattr(obj, attr) for attr in ("keys", "get", "shape", "dtype")):
        return WholeTensorSource(obj)
    raise CheckpointError(
        f"cannot read weights from {type(obj).__name__}; pass a directory, hub id or state dict"
    )


def copy_non_weight_files(src: Path, dst: Path) -> list[str]:
    """Copy config, tokenizer and sentence-transformers files of ``src`` (not its root weights,
    not its model card) into ``dst``; return the relative paths copied."""
    copied: list[str] = []
    for item in sorted(src.iterdir()):
        name = item.name
        if name.startswith(".") or name == "README.md":
            continue
        if item.is_file() and (name.endswith(WEIGHT_SUFFIXES) or name in WEIGHT_INDEXES):
            continue
        copy_plain(item, dst / name)  # the umask's modes, not the source's
        copied.append(name)
    return copied
