"""A content-addressed cache of experiment steps.

The key of a step is the sha256 of its inputs (checkpoint fingerprints, α and layer selection,
the data it reads, the scoring settings), so a changed input invalidates exactly the steps that
depend on it, and a killed run that starts again finds every step it had finished. Each entry is
one JSON file written atomically (temporary file, then rename): an entry is whole or absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import write_json
from ..errors import TaskrankError

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys).

    >>> digest({"b": 1, "a": [0.5]}) == digest({"a": [0.5], "b": 1})
    True
    """
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def texts_digest(items: Mapping[str, str]) -> str:
    """sha256 of id → text pairs in order (query sets)."""
    h = hashlib.sha256()
    for key, text in items.items():
        for part in (key, text):
            raw = part.encode("utf-8")
            h.update(len(raw).to_bytes(8, "little"))
            h.update(raw)
    return h.hexdigest()


class StepCache:
    """Step results on disk under ``root/<step>/<key>.json``.

    Example::

        cache = StepCache("results/x/cache")
        key = cache.key("rerank", {"model": fp, "alpha": 0.3})
        run = cache.get("rerank", key)
        if run is None:
            run = compute()
            cache.put("rerank", key, run)
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def key(self, step: str, inputs: Mapping[str, Any]) -> str:
        """The content address of ``step`` with these ``inputs``."""
        return digest({"step": step, "version": CACHE_VERSION, "inputs": inputs})[:32]

    def path(self, step: str, key: str) -> Path:
        return self.root / step / f"{key}.json"

    def has(self, step: str, key: str) -> bool:
        """Whether the entry exists (without reading it)."""
        return self.path(step, key).is_file()

    def get(self, step: str, key: str) -> Any | None:
        """The cached value, or None when absent. An unreadable entry is an error naming its file."""
        file = self.path(step, key)
        if not file.is_file():
            self.misses += 1
            return None
        try:
            entry = json.loads(file.read_text(encoding="utf-8"))
            value = entry["value"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TaskrankError(
                f"cache entry {file} is unreadable ({exc}); delete it to recompute that step"
            ) from exc
        self.hits += 1
        log.debug("cache hit %s/%s", step, key)
        return value

    def put(self, step: str, key: str, value: Any, inputs: Mapping[str, Any] | None = None) -> None:
        """Store ``value`` (JSON-serialisable) atomically, with its inputs for inspection."""
        write_json(self.path(step, key), {"step": step, "inputs": inputs, "value": value})


class FingerprintMemo:
    """Checkpoint fingerprints remembered by (directory, weight files' sizes and mtimes), so a
    local checkpoint's weights are hashed once, not on every run."""

    def __init__(self, file: str | os.PathLike[str]) -> None:
        self.file = Path(file)
        self._data: dict[str, Any] | None = None
        self._dirty = False

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            try:
                self._data = json.loads(self.file.read_text(encoding="utf-8")) if self.file.is_file() else {}
            except (OSError, ValueError):
                log.warning("ignoring unreadable fingerprint memo %s", self.file)
                self._data = {}
        return self._data

    @staticmethod
    def _stamp(path: Path) -> list[Any]:
        stamp = []
        for file in sorted(path.iterdir()):
            if file.is_file() and file.suffix in (".safetensors", ".bin", ".json", ".pt", ".pth"):
                stat = file.stat()
                stamp.append([file.name, stat.st_size, stat.st_mtime_ns])
        return stamp

    def fingerprint(self, path: Path) -> str:
        """Fingerprint of the checkpoint folder ``path`` (:func:`taskrank.checkpoints.fingerprint`)."""
        from ..checkpoints import fingerprint

        data = self._load()
        key = str(path.resolve())
        stamp = self._stamp(path)
        known = data.get(key)
        if known and known.get("stamp") == stamp:
            return str(known["fingerprint"])
        value = fingerprint(path)
        data[key] = {"stamp": stamp, "fingerprint": value}
        self._dirty = True
        return value

    def flush(self) -> None:
        """Write new fingerprints to disk (a dry run never calls this: it writes nothing)."""
        if self._dirty and self._data is not None:
            write_json(self.file, self._data)
            self._dirty = False
