"""How long work shows itself: progress bars and step lines, one look everywhere, on stderr.

:func:`progress_bar` and :func:`track` draw a rich bar for work that counts (pairs scored,
training steps, bytes downloaded, tensors merged). A step without a count of its own (building
a model, the part of a run before its first bar) gets a step line instead: with progress
shown, :func:`announce` writes it at once, also where stderr is not a terminal (a log file,
CI), where rich draws a bar only when it ends; with progress off the line is an INFO log
record (``taskrank -v``). Everything goes to stderr, so ``taskrank … > table.md`` keeps
stdout for results.

Example::

    announce("training the ranker: 400 steps", enabled=progress)
    with progress_bar(len(pairs), "score", enabled=progress) as bar:
        bar.advance(32)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

log = logging.getLogger(__name__)
T = TypeVar("T")


def announce(message: str, enabled: bool) -> None:
    """Say that the step ``message`` starts: on stderr when ``enabled``, else as an INFO log record."""
    if not enabled:
        log.info("%s", message)
        return
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"» {message}", markup=False)


class Bar:
    """What :func:`progress_bar` yields: ``advance(n, **fields)`` moves the bar and updates its fields."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: float = 1, **fields: Any) -> None:
        self._progress.update(self._task, advance=n, **fields)


@contextlib.contextmanager
def progress_bar(
    total: float | None,
    description: str,
    enabled: bool,
    *,
    completed: float = 0,
    fields: dict[str, Any] | None = None,
    transient: bool = False,
    download: bool = False,
) -> Iterator[Bar]:
    """One rich progress bar on stderr, the same look everywhere in taskrank; disabled: no output.

    Args:
        total: items (or bytes with ``download``) to count; ``None`` when unknown.
        description: what is counted, shown left of the bar.
        enabled: draw the bar at all.
        completed: where the bar starts (a resumed run).
        fields: extra fields shown right of the count, e.g. ``{"loss": "-"}``, updated by ``advance``.
        transient: remove the bar when done.
        download: show bytes and transfer speed instead of a count and time remaining.

    Example::

        with progress_bar(len(pairs), "score", enabled=True) as bar:
            bar.advance(32)
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    extra = dict(fields or {})
    columns: list[ProgressColumn | str] = [TextColumn("{task.description}"), BarColumn()]
    if download:
        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns.append(MofNCompleteColumn())
        columns += [TextColumn(f"{name} {{task.fields[{name}]}}") for name in extra]
        columns.append(TimeRemainingColumn())
    from rich.console import Console

    console = Console(stderr=True)
    with Progress(*columns, console=console, disable=not enabled, transient=transient) as progress:
        task = progress.add_task(description, total=total, completed=completed, **extra)
        yield Bar(progress, task)


def track(items: Sequence[T], description: str, enabled: bool, *, transient: bool = False) -> Iterable[T]:
    """Iterate over ``items`` with a :func:`progress_bar`; plain iteration when not ``enabled``."""
    if not enabled:
        yield from items
        return
    with progress_bar(len(items), description, enabled, transient=transient) as bar:
        for item in items:
            yield item
            bar.advance()


__all__ = ["Bar", "announce", "progress_bar", "track"]
