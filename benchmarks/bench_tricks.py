"""What two speed tricks of `taskrank merge` are worth: the hashing ahead and the prompt exit.

Uses the three t5-base-shaped checkpoints of bench_merge.py (built there if missing) and
times `taskrank merge` at α = 0.7 in a fresh process under /usr/bin/time -v, inputs evicted
from the page cache before each command (cold), the methods taking turns as in
bench_merge.py:

  * I/O floor                cat the three inputs to /dev/null, cp one
  * new inputs               an empty hash store: the card's sha256 of the three inputs is
                             computed, by the read-ahead and hashing child processes
                             (checkpoints.hashing.read_ahead)
  * new inputs, no ahead     the same with read_ahead() doing nothing: the merge hashes the
                             bytes its own reads bring in (what it does when the inputs do
                             not fit in half the free memory, e.g. a 7B model on a small box)
  * hashed before            the store an earlier merge left: nothing to hash
  * hashed before, exit      the same through main() and a normal interpreter exit, instead
                             of the console script's flush and os._exit (when it has one)

Prints best and median wall seconds, the ratio to the floor, and CPU seconds (user + system,
the command and its children).

    .venv/bin/python benchmarks/bench_tricks.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_merge import PY, ROOT, build, evict, round_order

ENTRY = "from taskrank.cli import entry; entry()"
MAIN = "from taskrank.cli import main; main()"
NO_AHEAD = "import taskrank.checkpoints.hashing as h; h.read_ahead = lambda files, **kw: []; " + ENTRY
FLOOR = "I/O floor (cat 3 + cp 1)"


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``cmd`` under /usr/bin/time -v."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {cmd}\n{proc.stderr[-2000:]}")
    err = proc.stderr

    def field(name: str) -> float:
        return float(re.search(rf"{re.escape(name)}: ([\d.]+)", err).group(1))

    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", err)
    h, m, s = wall.groups()
    return int(h or 0) * 3600 + int(m) * 60 + float(s), field("User time (seconds)") + field(
        "System time (seconds)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "bench-work" / "merge")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    paths = build(args.work)
    files = [paths[r] / "model.safetensors" for r in ("ranker", "domain", "pretrained")]
    out = args.work / "out-tricks"
    merge = ["merge", "--ranker", str(paths["ranker"]), "--domain", str(paths["domain"]), "--pretrained",
             str(paths["pretrained"]), "--alpha", "0.7", "--out", str(out), "--overwrite", "--quiet"]  # fmt: skip
    floor = ["bash", "-c", f"cat {' '.join(map(str, files))} > /dev/null && mkdir -p {out} && "
             f"cp --reflink=never {files[0]} {out}/"]  # fmt: skip
    known = args.work / "hash-store-tricks"
    shutil.rmtree(known, ignore_errors=True)
    subprocess.run([PY, "-c", ENTRY, *merge], check=True, env={**os.environ, "TASKRANK_CACHE": str(known)})
    methods = {  # name: (command, hash store: None for a new, empty one)
        FLOOR: (floor, known),
        "new inputs": ([PY, "-c", ENTRY, *merge], None),
        "new inputs, no ahead": ([PY, "-c", NO_AHEAD, *merge], None),
        "hashed before": ([PY, "-c", ENTRY, *merge], known),
        "hashed before, exit": ([PY, "-c", MAIN, *merge], known),
    }
    walls: dict[str, list[float]] = {name: [] for name in methods}
    cpus: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for round_ in range(args.repeats):
        for name in round_order(names, round_):
            cmd, store = methods[name]
            shutil.rmtree(out, ignore_errors=True)
            fresh = tempfile.mkdtemp(prefix="taskrank-bench-") if store is None else None
            env = {**os.environ, "TASKRANK_CACHE": str(store or fresh)}
            os.sync()
            evict(files)
            wall, cpu = timed(cmd, env)
            if fresh is not None:
                shutil.rmtree(fresh)
            walls[name].append(wall)
            cpus[name].append(cpu)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(known, ignore_errors=True)
    gb = sum(f.stat().st_size for f in files) / 1e9
    best_floor, median_floor = min(walls[FLOOR]), statistics.median(walls[FLOOR])
    print(f"three inputs, {gb:.2f} GB; {args.repeats} rounds, cold cache; {os.cpu_count()} CPUs")
    print(f"{'method':24s} {'best s':>7s} {'× floor':>8s} {'median s':>9s} {'median ×':>9s} {'CPU s':>6s}")
    for name in names:
        best, median = min(walls[name]), statistics.median(walls[name])
        print(
            f"{name:24s} {best:7.2f} {best / best_floor:8.2f} {median:9.2f} {median / median_floor:9.2f} "
            f"{statistics.median(cpus[name]):6.2f}"
        )
    print("every round, wall s / CPU s:")
    for name in names:
        print(
            f"  {name:22s}"
            + "".join(f"  {w:.2f}/{c:.2f}" for w, c in zip(walls[name], cpus[name], strict=True))
        )


if __name__ == "__main__":
    main()
