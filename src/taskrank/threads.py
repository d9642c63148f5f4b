"""How many CPU threads torch scores with: the cores this process may use, not the host's.

torch starts one intra-op thread per core of the *host*. In a container limited to two CPUs on
a 64-core host, or on a machine whose cores other jobs share, those threads wait on each other
and scoring slows down many times over (``benchmarks/bench_threads.py``, ``benchmarks/rerank.md``).
The default here is what the process may actually use:

1. ``$OMP_NUM_THREADS`` when it is set (a user's own choice is kept);
2. else the CPUs of the process's affinity mask (``os.sched_getaffinity``), capped by the CPU
   quota of its cgroup (``cpu.max`` of cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us`` of
   v1, rounded up: a quota of 1.5 CPUs gives 2 threads, as Java and Go size their pools).

Example::

    from taskrank.threads import resolve_threads, torch_threads
    with torch_threads(resolve_threads(None)):
        reranker.rerank(candidates, corpus, queries)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

#: Where the cgroup file systems are mounted, and the file naming this process's cgroups
#: (module constants, so that tests can point them at a fake tree).
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None  # no such controller here, or not readable: no limit known from this file


def _own_cgroups() -> dict[str, str]:
    """Controller (``""`` for cgroup v2) → this process's cgroup path, from /proc/self/cgroup."""
    text = _read(PROC_CGROUP) or ""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            paths[controller] = parts[2]
    return paths


def _levels(base: Path, cgroup: str | None) -> list[Path]:
    """``base`` joined with the cgroup path and with each of its parents (a limit anywhere above
    applies too), then ``base`` itself (a container sees its own cgroup at the mount root)."""
    folders: list[Path] = []
    if cgroup and cgroup != "/":
        here = base / cgroup.lstrip("/")
        while here != base and base in here.parents:
            folders.append(here)
            here = here.parent
    folders.append(base)
    return folders


def _quota(quota: str | None, period: str | None) -> float | None:
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None  # "max" (v2) or a missing file: unlimited
    return q / p if q > 0 and p > 0 else None  # v1 writes -1 for unlimited


def cgroup_cpu_limit() -> float | None:
    """The CPU quota of this process's cgroups in CPUs (e.g. 1.5), the smallest of every level
    found; ``None`` when no quota is set or no cgroup file can be read."""
    own = _own_cgroups()
    limits: list[float] = []
    for folder in _levels(CGROUP_ROOT, own.get("")):  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"
        text = _read(folder / "cpu.max")
        if text is not None:
            fields = text.split()
            limit = _quota(fields[0], fields[1] if len(fields) > 1 else "100000")
            if limit is not None:
                limits.append(limit)
    for mount in ("cpu", "cpu,cpuacct"):  # cgroup v1
        for folder in _levels(CGROUP_ROOT / mount, own.get("cpu")):
            limit = _quota(_read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us"))
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def available_cpus() -> int:
    """The number of CPUs this process may use: its affinity mask, capped by its cgroup quota
    (rounded up), at least 1. ``os.cpu_count()`` is only the fallback where there is no
    affinity mask (macOS, Windows)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def resolve_threads(threads: int | None = None) -> int:
    """The number of torch threads to score with: ``threads`` when given (at least 1), else
    ``$OMP_NUM_THREADS`` when it holds a positive integer (the first of a nested list such as
    ``4,2``), else :func:`available_cpus`; an unusable value is ignored with one warning.

    >>> resolve_threads(3)
    3
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        # OpenMP's nested form "4,2" sets the outer level first, the one torch's threads use
        first = env.split(",")[0].strip()
        if first.isascii() and first.isdigit() and int(first) >= 1:  # not "²", which isdigit() takes
            return int(first)
        if env not in _IGNORED:  # once: a run resolves the threads at every scoring pass
            _IGNORED.add(env)
            log.warning("ignoring OMP_NUM_THREADS=%r (not a positive integer)", env)
    return available_cpus()


_IGNORED: set[str] = set()  # the unusable OMP_NUM_THREADS values already warned about


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """torch's intra-op threads set to ``threads`` for the block, restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


__all__ = ["available_cpus", "cgroup_cpu_limit", "resolve_threads", "torch_threads"]
