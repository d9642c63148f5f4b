"""Atomic outputs: write to a temporary sibling, then rename into place.

An interrupted command never leaves a half-written file or directory behind, and an
existing output is only replaced when the caller allows it: the final rename of a directory
refuses a folder that appeared while the command ran (``renameat2`` with ``RENAME_NOREPLACE``
on Linux), unless the caller asked to overwrite.

Temporary siblings are named ``.<name>.tmp-<host>-<pid>-<random>``, so a later command into the
same output recognises those left by a killed process of this host and removes them.
Outputs get the modes the user's umask gives (files 0666 & ~umask, folders 0777 & ~umask),
like any other tool's.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import errno
import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import ConfigError, TaskrankError

log = logging.getLogger(__name__)

#: ``.<name>.<kind>-<host>-<pid>-<8 hex>``: a temporary output, or an old one moved aside
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}$")
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2

#: callbacks told of every output about to be renamed into place (see :func:`observe_writes`)
_observers: contextvars.ContextVar[tuple[Callable[[Path], None], ...]] = contextvars.ContextVar(
    "taskrank_write_observers", default=()
)


def _load_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):  # not glibc / not Linux: the portable fallback is used
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64] or "host"


def _sibling(final: Path, kind: str) -> Path:
    return final.with_name(f".{final.name}.{kind}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}")


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False when the system or file system lacks it."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def rename_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` to ``dst``; :class:`FileExistsError` when ``dst`` exists, never replacing it.

    Atomic with ``renameat2(RENAME_NOREPLACE)`` where the OS has it. Elsewhere a folder is
    renamed after a check: a non-empty folder or a file appearing in between still makes the
    rename fail, only an empty folder could be replaced.
    """
    src, dst = Path(src), Path(dst)
    if _rename2(src, dst, _RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    if not src.is_dir() or src.is_symlink():
        os.link(src, dst)  # a hard link never replaces: EEXIST when dst appeared
        os.unlink(src)
        return
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise FileExistsError(errno.EEXIST, "exists", str(dst)) from exc
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    return sum(f.lstat().st_size for f in path.rglob("*") if not f.is_dir() or f.is_symlink())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_temporary(name: str) -> bool:
    """Whether ``name`` is the name of a temporary output of :func:`atomic_file` / :func:`atomic_dir`.

    >>> is_temporary(".results.json.tmp-node1-4242-0a1b2c3d"), is_temporary("results.json")
    (True, False)
    """
    return _TEMP.match(name) is not None


def _is_stale(path: Path) -> bool:
    """A temporary of this host whose process is gone (an old output moved aside only once its
    replacement is in place: until then it is the only copy)."""
    match = _TEMP.match(path.name)
    if match is None or match["host"] != _host() or _pid_alive(int(match["pid"])):
        return False
    if match["kind"] == "old" and not os.path.lexists(path.with_name(match["name"])):
        log.warning("%s holds the previous %s of a killed process: left in place", path, match["name"])
        return False
    return True


def _remove_stale(path: Path) -> None:
    match = _TEMP.match(path.name)
    try:
        kind = "folder" if path.is_dir() and not path.is_symlink() else "file"
        size = _size(path)
        _remove(path)
    except FileNotFoundError:
        return  # another process removed it first
    log.warning(
        "removed stale temporary %s %s (%.1f MB) left by killed process %s",
        kind,
        path,
        size / 1e6,
        match["pid"] if match else "?",
    )


def _temporaries(root: Path) -> Iterator[Path]:
    """Every temporary output under ``root`` (not looking inside one)."""
    with os.scandir(root) as entries:
        children = sorted(entries, key=lambda e: e.name)
    for entry in children:
        if _TEMP.match(entry.name):
            yield Path(entry.path)
        elif entry.is_dir(follow_symlinks=False):
            yield from _temporaries(Path(entry.path))


def remove_stale_temporaries(folder: str | os.PathLike[str], *, name: str | None = None) -> list[Path]:
    """Remove the temporary outputs under ``folder`` (recursively; with ``name``, only the
    temporaries of the output ``folder/name``) that a killed process of this host left behind.

    Another host's temporaries and those of a live process are never touched. Returns what
    was removed; each removal is logged as a warning naming it, its size and the process.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    if name is not None:
        prefixes = (f".{name}.tmp-", f".{name}.old-")
        candidates = sorted(p for p in root.iterdir() if p.name.startswith(prefixes))
    else:
        candidates = list(_temporaries(root))
    removed = []
    for path in candidates:
        if _is_stale(path):
            _remove_stale(path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def observe_writes(callback: Callable[[Path], None]) -> Iterator[None]:
    """Within the block, call ``callback(final_path)`` before each output of :func:`atomic_file`
    or :func:`atomic_dir` is renamed into place (used to keep a manifest of a results folder: a
    path is recorded before it exists, so a killed run still knows what it wrote). An exception
    of the callback aborts that write."""
    token = _observers.set((*_observers.get(), callback))
    try:
        yield
    finally:
        _observers.reset(token)


def _announce(final: Path) -> None:
    for callback in _observers.get():
        callback(final)


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing one of ``path`` and its parents, when that is not a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_output(out: Path, overwrite: bool, *, folder: bool = False, existing_ok: bool = False) -> None:
    """Refuse, before any work is done, an output the command could not write at its end: one
    that exists (without ``overwrite``), a file output that is a folder or a special file (a
    device such as /dev/null, a pipe: renaming onto it would replace it), a path under a file, or
    one whose folder takes no new entries (no permission, a read-only file system, /proc).

    The last is tried, not guessed from permission bits (which root ignores): an empty folder
    is made in the nearest existing folder of ``out`` and removed at once.
    ``existing_ok``: an existing output is the command's to judge (the demo resumes into one,
    writing inside it: the probe is made there)."""
    if not folder and out.is_dir():
        raise ConfigError(f"output {out} is a folder; give the path of a file")
    if not folder and out.exists() and not out.is_file():
        # the output is renamed into place: --overwrite would replace /dev/null or a pipe itself
        raise ConfigError(
            f"output {out} is not a regular file (a device, pipe or socket); give the path of a file"
        )
    if out.exists() and not (overwrite or existing_ok):
        raise ConfigError(f"output {out} already exists; pass --overwrite to replace it")
    blocker = file_in_the_way(out.parent)
    if blocker is not None:
        raise ConfigError(f"cannot write {out}: {blocker} is a file, not a folder")
    if existing_ok and out.is_dir():
        parent = out  # resumed into: written inside, so its own parent may well be read-only
    else:
        parent = next((p for p in (out.parent, *out.parent.parents) if p.is_dir()), Path("."))
    try:
        probe = tempfile.mkdtemp(prefix=".taskrank-probe-", dir=parent)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot write {out}: nothing can be created in {parent} ({reason})") from None
    os.rmdir(probe)
    if not folder and out.parent.is_dir():
        # the temporary file a killed command left for this output (atomic_dir does this for
        # folders itself); removed with a warning naming it
        remove_stale_temporaries(out.parent, name=out.name)


def check_output_dir(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse an existing output directory unless ``overwrite`` is set."""
    path = Path(out)
    if path.name in ("", ".", ".."):  # the current folder, its parent or the root: never replaced
        raise TaskrankError(f"output {path} is not a folder of its own: name a new folder, e.g. {path}/out")
    if path.exists() and not overwrite:
        raise TaskrankError(f"output {path} already exists; pass --overwrite (overwrite=True) to replace it")
    if path.exists() and not path.is_dir():
        raise TaskrankError(f"output {path} exists and is not a directory")
    return path


def _install(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` to ``final``; an existing ``final`` is replaced only with
    ``overwrite`` (else a :class:`TaskrankError`, ``final`` untouched)."""
    try:
        rename_noreplace(tmp, final)
        return
    except FileExistsError:
        if not overwrite:
            raise TaskrankError(
                f"output {final} appeared while this command ran (another process wrote it); it was "
                "left as it is and this command's output discarded: pass --overwrite (overwrite=True) "
                "to replace it, or choose another output"
            ) from None
    try:
        swapped = _rename2(tmp, final, _RENAME_EXCHANGE)  # atomic: never a moment without an output
    except FileNotFoundError:  # it went away meanwhile
        rename_noreplace(tmp, final)
        return
    if swapped:
        _remove(tmp)  # the old output, now under the temporary name
        return
    old = _sibling(final, "old")
    rename_noreplace(final, old)
    try:
        rename_noreplace(tmp, final)
    except FileExistsError:
        raise TaskrankError(
            f"output {final} appeared again while it was being replaced; the one before is kept as {old}"
        ) from None
    _remove(old)


def _name_output(exc: BaseException, final: Path) -> None:
    """A write through an open file fails without a file name (a full disk: ENOSPC, EDQUOT,
    EIO): name the output it was for, so the one-line error says which."""
    if isinstance(exc, OSError) and exc.filename is None:
        exc.filename = str(final)


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes ``out`` when the block succeeds.

    On an exception the temporary directory is removed and ``out`` is left as it was. An
    ``out`` that appears while the block runs is never replaced without ``overwrite`` (a
    :class:`TaskrankError` naming it). Temporaries of killed processes for the same ``out``
    are removed first.
    """
    final = check_output_dir(out, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent, name=final.name)
    tmp = _sibling(final, "tmp")
    os.mkdir(tmp)  # mode 0o777 less the umask, as the final folder should have
    try:
        yield tmp
        _announce(final)
        _install(tmp, final, overwrite)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _name_output(exc, final)
        raise


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
    tmp = _sibling(final, "tmp")
    # mode 0o666 less the umask (mkstemp's 0o600 would become the final file's mode)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        _announce(final)
        os.replace(tmp, final)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _name_output(exc, final)
        raise


def copy_plain(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy the content of a file or folder (following links); the copies get the modes the
    umask gives, as ``cp`` without ``-p`` does, not the source's (``shutil.copy2`` would carry a
    0644 hub file into an output the umask 077 makes private)."""
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        os.mkdir(dst)
        for child in sorted(src.iterdir()):
            copy_plain(child, dst / child.name)
    else:
        shutil.copyfile(src, dst)


def write_text(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_file(path, durable=durable) as handle:
        handle.write(text)


def write_json(path: str | os.PathLike[str], obj: Any, *, durable: bool = True) -> None:
    """Atomically write ``obj`` as indented JSON to ``path``."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n", durable=durable)
