"""Step lines: one line on stderr before a long step that has no progress bar of its own.

A progress bar says what it counts; a step without one (building a model, the part of a run
before its first bar) would otherwise leave the screen still for seconds. With progress shown,
:func:`announce` writes the line at once, also where stderr is not a terminal (a log file, CI),
where rich draws a bar only when it ends; with progress off the line is an INFO log record
(``taskrank -v``).

Example::

    announce("training the ranker: 400 steps", enabled=progress)
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def announce(message: str, enabled: bool) -> None:
    """Say that the step ``message`` starts: on stderr when ``enabled``, else as an INFO log record."""
    if not enabled:
        log.info("%s", message)
        return
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"» {message}", markup=False)


__all__ = ["announce"]
