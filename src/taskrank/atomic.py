"""Atomic outputs: write to a temporary sibling, then rename into place.

An interrupted command never leaves a half-written file or directory behind, and an
existing output is only replaced when the caller allows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import TaskrankError


def check_output_dir(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse an existing output directory unless ``overwrite`` is set."""
    path = Path(out)
    if path.exists() and not overwrite:
        raise TaskrankError(f"output {path} already exists; pass --overwrite (overwrite=True) to replace it")
    if path.exists() and not path.is_dir():
        raise TaskrankError(f"output {path} exists and is not a directory")
    return path


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes ``out`` when the block succeeds.

    On an exception the temporary directory is removed and ``out`` is left as it was.
    """
    final = check_output_dir(out, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8", *, durable: bool = True
) -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success.

    ``durable`` syncs the file to disk before the rename; a cache that tolerates losing an
    entry in a power cut can skip that (an fsync also waits for unrelated writes of the file
    system's journal)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_file(path, durable=durable) as handle:
        handle.write(text)


def write_json(path: str | os.PathLike[str], obj: Any, *, durable: bool = True) -> None:
    """Atomically write ``obj`` as indented JSON to ``path``."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n", durable=durable)
