"""Running the ``taskrank`` command line in-process, as the console script would."""

from __future__ import annotations

import sys

import pytest

from taskrank.cli import main


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: object
) -> tuple[int, str, str]:
    """Run ``taskrank ARGS`` through :func:`taskrank.cli.main`; returns (exit status, stdout, stderr).

    ``taskrank run`` turns transformers' progress bars off for the process; they are turned
    back on here, so later tests see the default."""
    from transformers.utils import logging as hf_logging

    monkeypatch.setattr(sys, "argv", ["taskrank", *map(str, args)])
    bars = hf_logging.is_progress_bar_enabled()
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    captured = capsys.readouterr()
    return code, captured.out, captured.err
