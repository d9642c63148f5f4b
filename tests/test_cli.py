"""The command line as a user meets it: help, version, usage errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

from taskrank import __version__

MAIN = [sys.executable, "-c", "from taskrank.cli import main; main()"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MAIN, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command():
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("merge", "rerank", "retrieve", "fuse", "evaluate", "adapt", "run", "demo"):
        assert command in proc.stdout, command


def test_version():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"taskrank {__version__}"


def test_usage_errors_exit_2_without_traceback():
    for args in (("no-such-command",), ("merge", "--alpha", "not-a-number")):
        proc = run(*args)
        assert proc.returncode == 2, args
        assert "Traceback" not in proc.stderr
        assert (
            "No such command" in proc.stderr
            or "Invalid value" in proc.stderr
            or "Missing option" in proc.stderr
        )
