"""The ``taskrank`` command line: a thin typer layer over the library.

Each module in this package defines ``register(app)`` and is discovered automatically,
so commands live next to nothing but their own argument parsing.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys

import typer
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..errors import TaskrankError

app = typer.Typer(
    name="taskrank",
    help="Zero-shot domain adaptation of neural re-rankers by task arithmetic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


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
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )


for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    _module.register(app)


def main() -> None:
    """Entry point of the ``taskrank`` script: user errors become one line and exit code 2."""
    try:
        app(standalone_mode=False)
    except TaskrankError as exc:
        # the message is text, not markup: a path like "out-[v1]" must come out whole
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors (unknown command, bad option) come from click, or the click vendored by
        # typer: they know how to show themselves and which exit code to use.
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise


def entry() -> None:
    """The ``taskrank`` console script: :func:`main`, then a prompt end of the process.

    An interpreter that has imported torch spends 0.2–0.3 s tearing itself down (finalizers,
    freeing every object), a tenth of a whole ``taskrank merge`` of t5-base. Once a command
    has returned, its outputs are complete and renamed into place and its worker threads
    joined, so the process flushes its streams and logs and ends with ``os._exit``.
    Exceptions other than an exit keep Python's usual handling (a traceback, then exit 1).
    """
    try:
        main()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # sys.exit("message") semantics
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
