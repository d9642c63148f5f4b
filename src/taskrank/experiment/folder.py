"""The results folder of an experiment: whose it is, and what ``--overwrite`` may delete.

taskrank records every path it writes in a results folder in a manifest
(``.taskrank-manifest.json``), each path before the file appears, so a run killed midway still
knows what it wrote. ``--overwrite`` deletes only the paths listed there. A folder holding
anything else (besides the step cache, ``cache/`` or the ``cache_dir`` when it lies inside the
folder, the lock and taskrank's temporaries) is refused before anything is deleted, naming one
such file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from ..atomic import is_temporary, observe_writes, write_json
from ..config import ExperimentConfig
from ..errors import ConfigError
from ..locking import LOCK_NAME

EXPERIMENT_FILE = "experiment.json"
CACHE_NAME = "cache"
MANIFEST_NAME = ".taskrank-manifest.json"
MANIFEST_FORMAT = 1
#: top-level names that are taskrank's bookkeeping: never in the manifest, never someone else's
_OWN = frozenset({CACHE_NAME, MANIFEST_NAME, LOCK_NAME})


def bookkeeping(config: ExperimentConfig) -> frozenset[str]:
    """The paths (relative, POSIX) of the results folder that are taskrank's bookkeeping, never
    listed in its manifest nor deleted by ``--overwrite``: the lock, the manifest, ``cache/``,
    and the step cache ``cache_dir`` wherever inside the folder it lies (its entries are keyed
    by their inputs, so they cannot be stale).

    A ``cache_dir`` that is the results folder itself is refused: the step cache's files could
    not be told from the results."""
    own = set(_OWN)
    # as written (a cache_dir that is a link in the folder) and as resolved (an output reached
    # through a link)
    for where in (os.path.abspath, os.path.realpath):
        rel = os.path.relpath(where(config.cache_path()), where(config.output_path()))
        if rel == os.curdir:
            raise ConfigError(
                f"cache_dir {config.cache_dir} is the output folder itself: choose a folder of its own "
                f"(by default {Path(config.output) / CACHE_NAME})"
            )
        if rel.split(os.sep, 1)[0] != os.pardir:  # inside the folder
            own.add(Path(rel).as_posix())
    return frozenset(own)


def _is_own(rel: str, own: frozenset[str]) -> bool:
    """Whether the relative POSIX path ``rel`` is, or lies inside, one of the paths ``own``."""
    return any(rel == path or rel.startswith(path + "/") for path in own)


def read_manifest(out: Path) -> set[str] | None:
    """The paths (relative, POSIX) the manifest of ``out`` lists; None when it has none."""
    file = out / MANIFEST_NAME
    if not os.path.lexists(file):
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"manifest {file} is unreadable ({exc}); nothing was deleted") from exc
    paths = data.get("paths") if isinstance(data, dict) else None
    if not isinstance(paths, list):
        raise ConfigError(f"manifest {file}: no list of 'paths'; nothing was deleted")
    for rel in paths:
        parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel:
            raise ConfigError(f"manifest {file}: {rel!r} is not a path inside {out}; nothing was deleted")
    return set(paths)


class Manifest:
    """The manifest of a results folder, recording each path written under it before it appears.

    Where the folder has a manifest, a write that would replace a file it does not list (one a
    user added to the folder of a run being resumed) is refused, naming the file: taskrank only
    replaces its own files. A folder without one (new, or written by a taskrank that kept no
    manifest) takes every write."""

    def __init__(self, out: Path, own: frozenset[str] = _OWN) -> None:
        self.out = out
        self.root = os.path.abspath(out)
        self.own = own  # bookkeeping, never listed (see bookkeeping())
        listed = read_manifest(out)
        self.paths = listed or set()
        self.guard = listed is not None

    def record(self, final: Path) -> None:
        """Add ``final`` (when it lies in the folder and is not bookkeeping) and save the manifest;
        a :class:`ConfigError` (which aborts the write) when it would replace a file not listed."""
        rel = os.path.relpath(os.path.abspath(final), self.root)
        if rel == os.curdir or rel.split(os.sep, 1)[0] == os.pardir:
            return  # the folder itself, or outside it
        rel = Path(rel).as_posix()
        if _is_own(rel, self.own) or rel in self.paths:
            return
        if self.guard and os.path.lexists(final):
            raise ConfigError(
                f"output {self.out}: {final} is not a file taskrank wrote there ({MANIFEST_NAME} does not "
                "list it), and this run would replace it: move it away and run again (the finished "
                "steps are cached)"
            )
        self.paths.add(rel)
        self.save()

    def save(self) -> None:
        write_json(self.out / MANIFEST_NAME, {"format": MANIFEST_FORMAT, "paths": sorted(self.paths)})


@contextlib.contextmanager
def record_outputs(out: Path, own: frozenset[str] = _OWN) -> Iterator[Manifest]:
    """Within the block, every atomic write under ``out`` is listed in its manifest first
    (except in the bookkeeping paths ``own``, see :func:`bookkeeping`)."""
    manifest = Manifest(out, own)
    with observe_writes(manifest.record):
        yield manifest


def _files(out: Path, own: frozenset[str], rel: str = "") -> Iterator[str]:
    """Every file and link under ``out`` (relative POSIX paths, sorted depth-first), except
    taskrank's bookkeeping ``own`` (the step cache, the lock, the manifest) and temporaries."""
    with os.scandir(out / rel if rel else out) as it:
        entries = sorted(it, key=lambda entry: entry.name)
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        if path in own or is_temporary(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _files(out, own, path)
        else:
            yield path


def _marker(out: Path) -> dict[str, object] | None:
    try:
        recorded = json.loads((out / EXPERIMENT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def check_output(config: ExperimentConfig, *, overwrite: bool) -> str:
    """Whether the results folder is ours: ``"new"``, ``"resume"`` (it holds this same
    experiment) or ``"overwrite"`` (it holds only files taskrank wrote, and ``overwrite``).
    A folder holding a different experiment is refused unless ``overwrite``; one holding a file
    taskrank did not write is refused even then, naming the file. Nothing is changed on disk.
    """
    out = config.output_path()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder")
    own = bookkeeping(config)
    if not out.exists() or next(_files(out, own), None) is None:
        return "new"  # empty, or only the bookkeeping of a run killed at its very start
    recorded = _marker(out)
    if recorded is not None and recorded.get("fingerprint") == config.fingerprint():
        return "resume"
    listed = read_manifest(out)
    foreign = next((f for f in _files(out, own) if f not in (listed or ())), None)
    if not overwrite:
        if recorded is not None:
            name, fingerprint = recorded.get("name"), recorded.get("fingerprint")
            raise ConfigError(
                f"output {out} holds a different experiment ({name!r}, fingerprint {fingerprint}); "
                "pass --overwrite (overwrite=True) to replace its results, "
                "or choose another output"
            )
        if foreign is not None:
            raise ConfigError(
                f"output {out} holds files taskrank did not write ({out / foreign}, ...): "
                "choose another output, an empty or new folder"
            )
        raise ConfigError(
            f"output {out} holds results without {EXPERIMENT_FILE}; pass --overwrite (overwrite=True) "
            "to replace them, or choose another output"
        )
    if listed is None and recorded is not None:
        raise ConfigError(
            f"output {out} was written by an older taskrank that kept no list of its files "
            f"({MANIFEST_NAME}), so --overwrite cannot tell them from others: nothing was deleted; "
            "remove the folder yourself, or choose another output"
        )
    if foreign is not None:
        raise ConfigError(
            f"output {out} holds {out / foreign}, which taskrank did not write: nothing was deleted "
            "(--overwrite only replaces taskrank's own files); move it away, or choose another output"
        )
    return "overwrite"


def clear_output(config: ExperimentConfig) -> None:
    """Delete what the manifest of the results folder lists (call :func:`check_output` first),
    and the folders left empty by that. The step cache is kept: its entries are keyed by their
    inputs, so they cannot be stale."""
    out = config.output_path()
    listed = read_manifest(out)
    if listed is None:
        raise ConfigError(f"output {out} has no manifest ({MANIFEST_NAME}); nothing was deleted")
    own = bookkeeping(config)
    folders: set[PurePosixPath] = set()
    for rel in sorted(listed, reverse=True):
        if _is_own(rel, own):
            continue  # listed by a taskrank that did not yet keep a cache_dir inside the folder out
        path = out / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        folders.update(p for p in PurePosixPath(rel).parents if p.parts)
    for rel_folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        folder = out / rel_folder
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
    write_json(out / MANIFEST_NAME, {"format": MANIFEST_FORMAT, "paths": []})


__all__ = [
    "CACHE_NAME",
    "EXPERIMENT_FILE",
    "MANIFEST_NAME",
    "Manifest",
    "bookkeeping",
    "check_output",
    "clear_output",
    "read_manifest",
    "record_outputs",
]
