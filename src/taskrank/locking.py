"""An exclusive lock on a folder, so two commands never write one output at once.

The lock is ``fcntl.flock`` on ``<folder>/.taskrank.lock``, which holds the pid and host of the
holder for the message of whoever is refused. The kernel drops the lock when its holder exits,
however it exits, so a lock file left by a killed process never blocks anyone. The file itself
stays (removing a lock file while another process may have it open would let two hold it).

Example::

    with lock_folder("results/x", "output"):
        ...  # only this process writes results/x
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".taskrank.lock"


def _holder(fd: int) -> str:
    """The holder recorded in the lock file, for the refusal message."""
    for _ in range(20):  # the holder writes its pid right after taking the lock
        raw = os.pread(fd, 4096, 0)
        if raw:
            try:
                info = json.loads(raw.decode("utf-8"))
                return f"pid {int(info['pid'])} on {info['host']}"
            except (ValueError, KeyError, TypeError):
                break
        time.sleep(0.01)
    return "a process that did not record its pid"


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike[str], what: str = "folder") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (which must exist) for the block; yields the lock file.

    Refuses at once with a :class:`ConfigError` naming the holder's pid when another process
    holds it. Released when the block ends, however it ends.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the output checks still refuse a finished folder
        log.warning("no file locking on this platform: %s %s is not locked", what, folder)
        yield Path(folder) / LOCK_NAME
        return
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ConfigError(f"{what} {folder}: cannot create the lock file {path} ({exc.strerror})") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{what} {folder} is in use by another taskrank run ({_holder(fd)}); "
                "wait for it to finish, or choose another output"
            ) from None
        try:
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
            yield path
        finally:
            os.ftruncate(fd, 0)  # no pid of a process that no longer holds it
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = ["LOCK_NAME", "lock_folder"]
