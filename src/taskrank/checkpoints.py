"""Lazy, strict access to Hugging Face checkpoints, one tensor at a time, and a streaming writer.

A checkpoint is a local directory or a hub id (resolved through ``huggingface_hub`` and its
cache). Weights are read from safetensors (single file or sharded with an index) or PyTorch
``.bin`` pickles (``weights_only=True``, sharded too) without instantiating the model.

Safetensors tensors are read with plain positioned reads rather than a memory map, so a
tensor that has been used does not stay resident: reading three 1 GB checkpoints costs the
memory of the tensors in hand, not 3 GB of mapped pages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import torch

from .errors import CheckpointError

log = logging.getLogger(__name__)

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
WEIGHT_INDEXES = (SAFE_INDEX, BIN_INDEX, "tf_model.h5.index.json", "flax_model.msgpack.index.json")

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

# Files fetched from the hub for a checkpoint: configs, tokenizers, sentence-transformers modules.
_HUB_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.py", "*/*.json", "*/*.txt", "README.md"]


class TensorSource(Protocol):
    """What the arithmetic needs from a set of weights: names, shapes, dtypes and tensors."""

    name: str
    config: dict[str, Any]

    def keys(self) -> list[str]: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def dtype(self, key: str) -> torch.dtype: ...

    def get(self, key: str) -> torch.Tensor: ...

    def __contains__(self, key: object) -> bool: ...


# --------------------------------------------------------------------------- resolution


def _in_hub_cache(path: Path) -> tuple[str, str] | None:
    """(repo id, commit) when ``path`` is a snapshot folder of the hub cache."""
    if path.parent.name != "snapshots":
        return None
    repo_folder = path.parent.parent.name  # models--org--name
    if not repo_folder.startswith("models--"):
        return None
    return repo_folder[len("models--") :].replace("--", "/"), path.name


def resolve_checkpoint(ref: str | os.PathLike[str], revision: str | None = None) -> Path:
    """Return the local directory of a checkpoint given as a directory or a hub id.

    Hub ids are fetched into (or found in) the Hugging Face cache; with ``HF_HUB_OFFLINE=1``
    only the cache is used. Only one weight format is fetched (safetensors when the repository
    has it, else ``.bin``).

    Example::

        path = resolve_checkpoint("castorini/monot5-base-msmarco")
    """
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"checkpoint {text!r} is a file; expected a model directory or a hub id")
        return path
    looks_local = text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep in text.replace("/", "")
    if looks_local:
        raise CheckpointError(f"checkpoint directory {text!r} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        snap = Path(snapshot_download(text, revision=revision, allow_patterns=[*_HUB_FILES, "*.safetensors"]))
        if not any(snap.glob("*.safetensors")):
            snap = Path(snapshot_download(text, revision=revision, allow_patterns=[*_HUB_FILES, "*.bin"]))
    except HFValidationError as exc:
        raise CheckpointError(
            f"checkpoint {text!r} is neither an existing directory nor a valid hub id"
        ) from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise CheckpointError(
            f"checkpoint {text!r} is not a local directory and is not in the Hugging Face cache, "
            "and the hub cannot be reached (offline or HF_HUB_OFFLINE=1); download it once with network "
            "access or pass a local directory"
        ) from exc
    except GatedRepoError as exc:
        raise CheckpointError(f"hub repository {text!r} is gated: log in with `hf auth login` first") from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointError(f"hub repository {text!r} not found (or private)") from exc
    except RevisionNotFoundError as exc:
        raise CheckpointError(f"revision {revision!r} of hub repository {text!r} not found") from exc
    except OSError as exc:  # network failures surface as OSError subclasses (HTTP, connection)
        raise CheckpointError(f"could not fetch checkpoint {text!r} from the hub: {exc}") from exc
    return snap


# --------------------------------------------------------------------------- safetensors


@dataclass(frozen=True)
class _Entry:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int


def _read_safetensors_header(file: Path) -> tuple[dict[str, _Entry], dict[str, str]]:
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
    entries: dict[str, _Entry] = {}
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
        entries[name] = _Entry(file, dtype, shape, data_start + begin, data_start + end)
    return entries, metadata


def _read_entry(handle: BinaryIO, entry: _Entry) -> torch.Tensor:
    n = entry.end - entry.begin
    if n == 0:
        return torch.empty(entry.shape, dtype=entry.dtype)
    buf = bytearray(n)
    handle.seek(entry.begin)
    got = handle.readinto(buf)
    if got != n:
        raise CheckpointError(f"truncated safetensors file {entry.file}: expected {n} bytes, read {got}")
    return torch.frombuffer(buf, dtype=entry.dtype).reshape(entry.shape)


# --------------------------------------------------------------------------- checkpoint


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
            f"cannot load PyTorch weights {file} (corrupt, or not weights-only): {exc}"
        ) from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{file} does not hold a state dict of tensors")
    return dict(obj)


_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def sha256_file(file: Path, chunk: int = 8 * 1024 * 1024) -> str:
    """sha256 of a file, memoised per (path, size, mtime)."""
    st = file.stat()
    key = (str(file.resolve()), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    value = digest.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = value
    return value


class Checkpoint:
    """Lazy read access to the weights of one checkpoint.

    Example::

        ckpt = Checkpoint("castorini/monot5-base-msmarco")
        ckpt.shape("shared.weight")        # no tensor read yet
        emb = ckpt.get("shared.weight")    # reads this tensor only
    """

    #: get() returns a new buffer each call, which callers may modify in place
    fresh_reads = True

    def __init__(self, ref: str | os.PathLike[str], revision: str | None = None) -> None:
        self.ref = os.fspath(ref)
        self.path = resolve_checkpoint(ref, revision)
        self.name = self.ref
        hub = _in_hub_cache(self.path)
        self.repo_id = hub[0] if hub else None
        self.revision = hub[1] if hub else revision
        self.config = self._read_config()
        self._entries: dict[str, _Entry] = {}
        self._bin_map: dict[str, Path] = {}
        self._bin_cache: tuple[Path, dict[str, torch.Tensor]] | None = None
        self._handles: dict[Path, BinaryIO] = {}
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

    def _index_files(self, index: Path) -> list[Path]:
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"corrupt shard index {index}: {exc}") from exc
        files = sorted({self.path / f for f in weight_map.values()})
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"shard index {index} names missing file(s): {', '.join(missing)}")
        return files

    def _discover(self) -> list[Path]:
        p = self.path
        if (p / SAFE_INDEX).exists():
            files = self._index_files(p / SAFE_INDEX)
            self.format = "safetensors"
        elif (p / SAFE_SINGLE).exists():
            files = [p / SAFE_SINGLE]
            self.format = "safetensors"
        elif (p / BIN_INDEX).exists():
            files = self._index_files(p / BIN_INDEX)
            self.format = "bin"
        elif (p / BIN_SINGLE).exists():
            files = [p / BIN_SINGLE]
            self.format = "bin"
        else:
            raise CheckpointError(
                f"no weights in {p}: expected {SAFE_SINGLE}, {SAFE_INDEX}, {BIN_SINGLE} or {BIN_INDEX}"
            )
        if self.format == "safetensors":
            for f in files:
                entries, _ = _read_safetensors_header(f)
                clash = entries.keys() & self._entries.keys()
                if clash:
                    raise CheckpointError(f"tensor {sorted(clash)[0]!r} appears in two shards of {p}")
                self._entries.update(entries)
        else:
            for f in files:
                for key, tensor in _load_bin(f).items():
                    self._bin_map[key] = f
                    self._entries[key] = _Entry(f, tensor.dtype, tuple(tensor.shape), 0, 0)
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

    def _entry(self, key: str) -> _Entry:
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
        entry = self._entry(key)
        if self.format == "safetensors":
            handle = self._handles.get(entry.file)
            if handle is None:
                try:
                    handle = open(entry.file, "rb")  # noqa: SIM115 - kept open until close()
                except OSError as exc:
                    raise CheckpointError(f"cannot open {entry.file}: {exc}") from exc
                self._handles[entry.file] = handle
            return _read_entry(handle, entry)
        file = self._bin_map[key]
        if self._bin_cache is None or self._bin_cache[0] != file:
            self._bin_cache = None  # drop the previous shard before mapping the next
            self._bin_cache = (file, _load_bin(file))
        return self._bin_cache[1][key].clone()

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._bin_cache = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- identity
    def sha256(self) -> str:
        """sha256 over the weight files (each file's sha256, in name order)."""
        if len(self.weight_files) == 1:
            return sha256_file(self.weight_files[0])
        digest = hashlib.sha256()
        for f in self.weight_files:
            digest.update(f"{f.name}:{sha256_file(f)}\n".encode())
        return digest.hexdigest()

    def provenance(self, with_hash: bool = True) -> dict[str, Any]:
        """Where this checkpoint came from: hub id and revision, or local path and sha256."""
        info: dict[str, Any] = {"ref": self.ref, "path": str(self.path), "format": self.format}
        if self.repo_id:
            info["hub_id"] = self.repo_id
            info["revision"] = self.revision
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

    def provenance(self, with_hash: bool = True) -> dict[str, Any]:
        return {"ref": self.name, "format": "in-memory"}


def as_source(obj: str | os.PathLike[str] | TensorSource | Mapping[str, torch.Tensor]) -> Any:
    """Turn a path, hub id, state dict or source into a :class:`TensorSource`."""
    if isinstance(obj, (str, os.PathLike)):
        return Checkpoint(obj)
    if isinstance(obj, Mapping):
        return StateDictSource(obj)
    if all(hasattr(obj, attr) for attr in ("keys", "get", "shape", "dtype")):
        return obj
    raise CheckpointError(
        f"cannot read weights from {type(obj).__name__}; pass a directory, hub id or state dict"
    )


# --------------------------------------------------------------------------- writing


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

    The headers are computed up front from the plan (names, shapes, dtypes), so each tensor
    is written to disk as soon as it is computed and then dropped: memory stays at one tensor.
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

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write the next tensor of the plan; names, shapes and dtypes must match the plan."""
        if self._next >= len(self._order):
            raise CheckpointError(f"tensor {name!r} written past the end of the plan")
        spec = self._order[self._next]
        if name != spec.name or tuple(tensor.shape) != spec.shape or tensor.dtype != spec.dtype:
            raise CheckpointError(
                f"writer expected {spec.name} {list(spec.shape)} {spec.dtype}, "
                f"got {name} {list(tensor.shape)} {tensor.dtype}"
            )
        if self._shard_of[self._next] != self._shard or self._handle is None:
            self._open_shard(self._shard_of[self._next])
        if spec.nbytes and self._handle is not None:
            flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            self._handle.write(memoryview(flat.numpy()))
        self._next += 1

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
        target = dst / name
        if item.is_dir():
            shutil.copytree(item, target, symlinks=False)
        else:
            shutil.copy2(item, target)
        copied.append(name)
    return copied
