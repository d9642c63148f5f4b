"""A content-addressed cache of experiment steps.

The key of a step is the sha256 of its inputs (checkpoint fingerprints, α and layer selection,
the data it reads, the scoring settings), so a changed input invalidates exactly the steps that
depend on it, and a killed run that starts again finds every step it had finished. Each entry is
one JSON file written atomically (temporary file, then rename): an entry is whole or absent.

An entry records the step and key it was made for and the sha256 of its value; one that fails
either check (edited, damaged, copied to another key's file, or written by an older taskrank
without a checksum) is reported and computed again, never used. What each cache trusts is in
``docs/cache.md``.
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

#: part of every key: what a step computes. Bump it when the values themselves change meaning.
#: 2: the first stage is cut to first_stage.k in trec_eval's tie order (doc id descending; it was
#: ascending), which changes the candidates a tie at the cutoff lets through, so what is re-ranked.
CACHE_VERSION = 2
#: how an entry is stored. Format 1 had no checksum; its entries sit under the same keys (their
#: values mean the same), so they are found, reported and rewritten in place rather than left
#: behind as orphans, which a new CACHE_VERSION would do.
ENTRY_FORMAT = 2
#: the stat data of a checkpoint folder's files: [name, size, mtime, device, inode, ctime] each
Stamp = list[list[str | int]]
_ENTRY_FIELDS = ("format", "step", "key", "checksum", "value")


def digest(obj: object) -> str:
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


def checksum(value: object) -> str:
    """``sha256:`` of the canonical JSON of a cached value. Unlike :func:`digest` it accepts NaN
    (a model may score NaN), which JSON round-trips as written.

    >>> checksum({"q1": {"d1": 0.5}}) == checksum(json.loads('{"q1": {"d1": 0.5}}'))
    True
    """
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _entry_problem(entry: object, step: str, key: str) -> str | None:
    """Why ``entry`` cannot be trusted as the value of ``step``/``key``; None when it can."""
    if not isinstance(entry, dict):
        return f"it holds a JSON {type(entry).__name__}, not an entry object"
    if "checksum" not in entry and "value" in entry:
        return "it has no checksum (written by an older taskrank, or by hand)"
    missing = [field for field in _ENTRY_FIELDS if field not in entry]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if entry["format"] != ENTRY_FORMAT:
        return f"its format is {entry['format']!r}, not {ENTRY_FORMAT}"
    if entry["step"] != step or entry["key"] != key:
        return f"it was made for {entry['step']}/{entry['key']} (copied or renamed from another entry)"
    if entry["checksum"] != checksum(entry["value"]):
        return "its value does not match its checksum (edited or damaged)"
    return None


_ABSENT = object()


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
        self.invalid = 0  # entries found but not trusted (also counted as misses)

    def key(self, step: str, inputs: Mapping[str, object]) -> str:
        """The content address of ``step`` with these ``inputs``."""
        return digest({"step": step, "version": CACHE_VERSION, "inputs": inputs})[:32]

    def path(self, step: str, key: str) -> Path:
        return self.root / step / f"{key}.json"

    def _read(self, step: str, key: str) -> object:
        """The value of a valid entry, or ``_ABSENT``. An invalid entry is logged (WARNING,
        naming the file and the reason) and counts as absent, so the step is computed again
        and its entry rewritten. A file that cannot be read at all is an error naming it."""
        file = self.path(step, key)
        if not file.is_file():
            return _ABSENT
        try:
            text = file.read_bytes().decode("utf-8")
        except FileNotFoundError:  # removed since is_file(): a miss like any other
            return _ABSENT
        except OSError as exc:
            raise TaskrankError(f"cannot read cache entry {file}: {exc}") from exc
        except UnicodeDecodeError:
            problem: str | None = "it is not UTF-8 text"
        else:
            try:
                entry = json.loads(text)
            except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
                problem = f"it is not valid JSON ({exc})"
            else:
                problem = _entry_problem(entry, step, key)
        if problem is not None:
            self.invalid += 1
            log.warning("cache entry %s is not used: %s; computing that step again", file, problem)
            return _ABSENT
        return entry["value"]

    def has(self, step: str, key: str) -> bool:
        """Whether a valid entry exists (read and checked, as :meth:`get` does, without
        counting a hit or a miss)."""
        return self._read(step, key) is not _ABSENT

    def get(self, step: str, key: str) -> Any | None:
        """The cached value, or None when absent or invalid (see :meth:`_read`)."""
        value = self._read(step, key)
        if value is _ABSENT:
            self.misses += 1
            return None
        self.hits += 1
        log.debug("cache hit %s/%s", step, key)
        return value

    def put(self, step: str, key: str, value: object, inputs: Mapping[str, object] | None = None) -> None:
        """Store ``value`` (JSON-serialisable) atomically, with the step and key it was made
        for, the checksum of the value, and its inputs for inspection."""
        entry = {
            "format": ENTRY_FORMAT,
            "step": step,
            "key": key,
            "checksum": checksum(value),
            "inputs": inputs,
            "value": value,
        }
        write_json(self.path(step, key), entry)


def _only_identity_changed(old: object, new: Stamp) -> bool:
    """True when stamps agree on every file's name, size and mtime but not on device, inode or
    ctime: the files were replaced or rewritten, and their times put back."""
    if not isinstance(old, list) or not all(isinstance(e, list) and len(e) == 6 for e in old):
        return False  # no stamp, or one of an older taskrank (name, size, mtime only)
    return [e[:3] for e in old] == [e[:3] for e in new]


class FingerprintMemo:
    """Checkpoint fingerprints remembered by the stat data of a folder's files, so a local
    checkpoint's weights are hashed once, not on every run.

    The stamp of a folder lists, for each weight file and each top-level ``.json``/weight
    file: its name, size, modification time, device, inode and status-change time (ctime). A
    copy that keeps size and mtime (``cp -p``, ``rsync -t``, a restored backup) cannot keep the
    inode or the ctime, so it misses the memo, and the weights are hashed again
    (:func:`taskrank.checkpoints.hashing.sha256_file` keys its own store the same way)."""

    def __init__(self, file: str | os.PathLike[str]) -> None:
        self.file = Path(file)
        self._data: dict[str, object] | None = None
        self._dirty = False

    def _load(self) -> dict[str, object]:
        if self._data is None:
            try:
                data = json.loads(self.file.read_text(encoding="utf-8")) if self.file.is_file() else {}
            except (OSError, ValueError, RecursionError):
                log.warning("ignoring unreadable fingerprint memo %s", self.file)
                data = {}
            if not isinstance(data, dict):
                log.warning("ignoring fingerprint memo %s: not a JSON object", self.file)
                data = {}
            self._data = data
        return self._data

    @staticmethod
    def _stamp(path: Path) -> Stamp:
        from ..checkpoints.layout import weight_files

        files = {f for f in path.iterdir() if f.suffix in (".safetensors", ".bin", ".json", ".pt", ".pth")}
        files.update(weight_files(path)[1])  # shards an index may place in a subfolder
        stamp: Stamp = []
        for file in sorted(files):
            if file.is_file():
                st = file.stat()
                name = Path(os.path.relpath(file, path)).as_posix()  # an index may name ../x
                stamp.append([name, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, st.st_ctime_ns])
        return stamp

    def fingerprint(self, path: Path) -> str:
        """Fingerprint of the checkpoint folder ``path`` (:func:`taskrank.checkpoints.fingerprint`),
        from the memo when no file of the folder changed in any way its stat data shows."""
        from ..checkpoints import fingerprint

        data = self._load()
        key = str(path.resolve())
        stamp = self._stamp(path)
        known = data.get(key)
        if isinstance(known, dict) and isinstance(known.get("fingerprint"), str):
            if known.get("stamp") == stamp:
                return str(known["fingerprint"])
            if _only_identity_changed(known.get("stamp"), stamp):
                log.info(
                    "%s: files replaced or rewritten with the same sizes and modification times; "
                    "hashing its weights again",
                    path,
                )
        value = fingerprint(path)
        data[key] = {"stamp": stamp, "fingerprint": value}
        self._dirty = True
        return value

    def flush(self) -> None:
        """Write new fingerprints to disk (a dry run never calls this: it writes nothing)."""
        if self._dirty and self._data is not None:
            write_json(self.file, self._data)
            self._dirty = False
