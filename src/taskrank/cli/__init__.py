"""The ``taskrank`` command line: a thin typer layer over the library.

Each module in this package defines ``register(app)`` and is discovered automatically,
so commands live next to nothing but their own argument parsing.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import pkgutil
import sys
import traceback
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..atomic import file_in_the_way
from ..errors import TaskrankError

app = typer.Typer(
    name="taskrank",
    help="Zero-shot domain adaptation of neural re-rankers by task arithmetic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

BUG_LINE = "this is a bug in taskrank; please report it with the traceback above"
"""The line after the traceback of an unexpected exception (exit status 1)."""


class Interrupted(Exception):
    """A command was interrupted (Ctrl-C) and knows how to continue: ``hint`` ends up on the
    ``interrupted`` line (exit status 130). Commands raise it from their KeyboardInterrupt."""

    def __init__(self, hint: str = "") -> None:
        super().__init__(hint)
        self.hint = hint


def _version(value: bool) -> None:
    if value:
        typer.echo(f"taskrank {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:  # as basicConfig: a host that configured logging keeps its setup
        logging.basicConfig(level=level, format="%(levelname)s %(message)s")
        # the level on the handler too: a library that sets its own logger to DEBUG (bm25s
        # does, on import) would otherwise add debug lines to an error's one line on stderr
        root.handlers[0].setLevel(level)


def _os_error_text(exc: OSError) -> str:
    """One line for an OSError: the path(s) it concerns and what the system said; a path under a
    file, or a file where a folder belongs, is named as such."""
    what = " ".join((exc.strerror or str(exc) or type(exc).__name__).split())
    names = [_path_text(name) for name in (exc.filename, exc.filename2) if name is not None]
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and names:
        blocker = file_in_the_way(Path(names[0]))
        if blocker is not None:
            where = "" if blocker == Path(names[0]) else f"{names[0]}: "
            return f"{where}{blocker} is a file, not a folder"
    return f"{' -> '.join(names)}: {what}" if names else what


def _path_text(name: object) -> str:
    return os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)


for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    _module.register(app)


def main() -> None:
    """Entry point of the ``taskrank`` script, and its error contract (exit status):

    - 0: done;
    - 2: a user-facing failure (a :class:`TaskrankError`, a usage error, or the environment
      refusing a file: permission, a read-only or full disk, a path under a file), as one line
      ``error: ...`` on stderr naming the path or value at fault;
    - 130: interrupted (Ctrl-C, SIGINT): one line ``interrupted`` on stderr; outputs are written
      to temporary paths and renamed, so each is either complete or absent;
    - 1: a bug in taskrank: the traceback, then a line asking for a report.
    """
    try:
        code = app(standalone_mode=False)
    except TaskrankError as exc:
        _error_line(str(exc))
        sys.exit(2)
    except Interrupted as exc:
        _interrupted(exc.hint)
    except KeyboardInterrupt:  # raised outside a command (typer turns the command's into Exit(130))
        _interrupted()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except OSError as exc:
        # The environment refused a file (permission, read-only or full file system, a path
        # under a file, a folder where a file belongs): a user-facing failure, not a bug.
        _error_line(_os_error_text(exc))
        sys.exit(2)
    except Exception as exc:
        # Usage errors (unknown command, bad option) come from click, or the click vendored by
        # typer: they know how to show themselves and which exit code to use.
        show, status = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(status, int):
            show()
            sys.exit(status)
        traceback.print_exc()
        err_console.print(BUG_LINE, highlight=False, soft_wrap=True)
        sys.exit(1)
    # standalone_mode=False returns the code of a typer.Exit, and typer turns KeyboardInterrupt
    # into Exit(130): that code must reach the shell
    if code == 130:
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


def _error_line(text: str) -> None:
    # the message is text, not markup: a path like "out-[v1]" must come out whole
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _interrupted(hint: str = "") -> NoReturn:
    err_console.print(f"interrupted{'; ' + escape(hint) if hint else ''}", highlight=False, soft_wrap=True)
    sys.exit(130)


def entry() -> None:
    """The ``taskrank`` console script: :func:`main` (a plain interpreter exit follows; ending
    with ``os._exit`` saved too little on a real-size merge to be worth it, see
    ``benchmarks/merge.md``)."""
    main()
