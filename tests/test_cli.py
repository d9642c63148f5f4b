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


ENTRY = [sys.executable, "-c", "from taskrank.cli import entry; entry()"]


def test_the_console_script_ends_promptly_with_main_s_exit_codes_and_output(tmp_path):
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "taskrank"]
    assert script.value == "taskrank.cli:entry"

    def entry(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ENTRY, *args], capture_output=True, text=True, timeout=120)

    proc = entry("--version")
    assert (proc.returncode, proc.stdout) == (0, f"taskrank {__version__}\n")  # flushed
    proc = entry("no-such-command")
    assert proc.returncode == 2 and "No such command" in proc.stderr
    missing = tmp_path / "no-such-dir"
    proc = entry(
        "merge",
        "-r",
        str(missing),
        "-d",
        str(missing),
        "-p",
        str(missing),
        "-a",
        "1",
        "-o",
        str(tmp_path / "o"),
    )
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("error: checkpoint directory")
        and "Traceback" not in proc.stderr
    )
