"""Ctrl-C: a real ``taskrank`` process gets SIGINT while it works. It prints ``interrupted`` on
one line, exits with status 130, and leaves each output whole or absent (``adapt`` also says
which checkpoint ``--resume`` continues from)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from taskrank.adapt import latest_checkpoint, work_dir

pytestmark = pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")

# The console script's code, with the merge's writer slowed down so that the signal surely
# arrives mid-merge, with a temporary output folder on disk.
SLOW_MERGE = """
import time
from taskrank.checkpoints.safetensors_io import ShardedSafetensorsWriter

write_span = ShardedSafetensorsWriter.write_span


def slow(self, name, piece):
    time.sleep(0.1)
    write_span(self, name, piece)


ShardedSafetensorsWriter.write_span = slow
from taskrank.cli import entry

entry()
"""
ENTRY = "from taskrank.cli import entry; entry()"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when(
    code: str, args: list[object], ready: Callable[[], bool], timeout: float = 120
) -> tuple[int, str]:
    """Start ``python -c CODE ARGS``, send SIGINT once ``ready()``; (exit status, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # a test suite started as a background job (`make test &`, nohup) inherits SIGINT
        # ignored, and Python keeps an ignored SIGINT ignored: give the command Ctrl-C back
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, f"ended before the interrupt: {process.communicate()[1]}"
            assert time.monotonic() < deadline, "the command never got to work"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, err


def test_an_interrupted_merge_exits_130_and_leaves_nothing(
    tmp_path: Path, bert_trio: dict[str, Path]
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    out = folder / "merged"

    def writing() -> bool:  # a temporary folder holding a shard being written
        return any(p.is_dir() and any(p.glob("*.safetensors")) for p in folder.iterdir() if p != out)

    args = ["merge", "-r", bert_trio["ranker"], "-d", bert_trio["domain"], "-p", bert_trio["pretrained"]]
    code, err = interrupt_when(SLOW_MERGE, [*args, "-a", "0.5", "-o", out, "--quiet"], writing)
    assert code == 130, err
    assert err.strip().splitlines() == ["interrupted"], err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # no output, no temporary folder


def test_an_interrupted_adapt_says_how_to_resume(tmp_path: Path, bert_trio: dict[str, Path]) -> None:
    corpus = tmp_path / "corpus.jsonl"
    words = ["cell", "protein", "gene", "cancer", "virus", "patient", "treatment", "clinical", "trial"]
    with open(corpus, "w") as handle:
        for i in range(40):
            text = " ".join(words[(i + j) % len(words)] for j in range(12))
            handle.write(json.dumps({"_id": f"d{i}", "text": text}) + "\n")
    out = tmp_path / "domain"
    work = work_dir(out)

    def saved() -> bool:  # a complete checkpoint is there (written atomically)
        return work.is_dir() and latest_checkpoint(work) is not None

    args = [
        "adapt", "-p", bert_trio["pretrained"], "-c", corpus, "-o", out, "--steps", "100000",
        "--save-every", "2", "--batch-size", "2", "--max-length", "16", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    code, err = interrupt_when(ENTRY, args, saved)
    assert code == 130, err
    # transformers reports the new MLM head of the bare encoder while loading; the last line is ours
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted; checkpoint of step ") and "Traceback" not in err, err
    assert "run the same command with --resume to continue" in line
    newest = latest_checkpoint(work)
    assert newest is not None and str(newest) in line
    step = int(newest.name.removeprefix("checkpoint-"))
    assert f"step {step} in" in line
    assert (newest / "model.safetensors").is_file()
    assert not out.exists()
    # no temporary folder is left behind, beside the output or among the checkpoints
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["corpus.jsonl", work.name])
    assert [p.name for p in work.iterdir()] == [newest.name]
