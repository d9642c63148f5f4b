"""`taskrank rerank` scoring time against its CPU thread count, on an idle and on a shared machine.

The demo's tiny monoT5 ranker (built by `taskrank demo --quick` into the work folder, once)
re-ranks BM25's top 30 for the demo's 40 test queries. Each measurement is the scoring time
that one `taskrank rerank` process prints (0.1 s resolution), with `--threads 1` or `--threads N` (N: the CPUs this process may use, from
`taskrank.threads.available_cpus`), the two alternating in every round. With `--busy`, one
other process spins on a CPU throughout, as on a machine shared with other work.
`OMP_NUM_THREADS` is removed from the children's environment so that `--threads` decides.

    .venv/bin/python benchmarks/bench_threads.py [--work bench-work/threads] [--rounds 3] [--busy]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKRANK = Path(sys.executable).with_name("taskrank")


def spin() -> None:
    while True:
        pass


def run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([str(TASKRANK), *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def scoring_seconds(args: list[str], env: dict[str, str]) -> float:
    """The scoring time `taskrank rerank` prints ("re-ranked N pairs of Q queries in S s …"),
    without the process start and imports (about 4 s here, the same for every thread count)."""
    done = subprocess.run([str(TASKRANK), *args], check=True, env=env, capture_output=True, text=True)
    match = re.search(r"re-ranked \d+ pairs of \d+ queries in ([0-9.]+)s", done.stdout)
    if match is None:
        raise SystemExit(f"no timing line in the output of taskrank {' '.join(args)}:\n{done.stdout}")
    return float(match.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "bench-work" / "threads")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", action="store_true", help="one other process spins on a CPU throughout")
    args = ap.parse_args()

    from taskrank.demo import DEMO_DATA
    from taskrank.threads import available_cpus

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["HF_HUB_OFFLINE"] = "1"
    work = args.work
    models = work / "demo" / "models"
    if not (models / "ranker").is_dir():
        subprocess.run([str(TASKRANK), "demo", "--quick", "--no-progress", "--out", str(work / "demo")],
                       check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    candidates = work / "bm25.trec"
    if not candidates.is_file():
        run(["retrieve", "-d", str(DEMO_DATA), "-k", "30", "-o", str(candidates), "-q",
             "--index-cache", str(work / "index")], env)  # fmt: skip
    pairs = sum(1 for _ in candidates.open())
    cpus = available_cpus()
    counts = sorted({1, cpus})
    busy = multiprocessing.Process(target=spin, daemon=True) if args.busy else None
    if busy is not None:
        busy.start()
    print(f"{pairs} pairs (demo test queries x BM25 top 30), tiny monoT5; CPUs this process may use: "
          f"{cpus}; other busy process: {'yes' if busy else 'no'}")  # fmt: skip
    times: dict[int, list[float]] = {n: [] for n in counts}
    try:
        for r in range(args.rounds):
            for n in counts if r % 2 == 0 else reversed(counts):
                out = work / f"rerank-{n}.trec"
                command = ["rerank", "-m", str(models / "ranker"), "-k", "monot5", "-d", str(DEMO_DATA),
                           "-c", str(candidates), "--top-k", "30", "--threads", str(n), "-o", str(out),
                           "--overwrite"]  # fmt: skip
                times[n].append(scoring_seconds(command, env))
            print(f"round {r + 1}: " + "  ".join(f"--threads {n}: {times[n][-1]:.2f} s" for n in counts))
    finally:
        if busy is not None:
            busy.terminate()
    for n in counts:
        print(f"median --threads {n}: {statistics.median(times[n]):.2f} s of scoring")
    if len(counts) == 2:
        ratio = statistics.median(times[counts[1]]) / statistics.median(times[counts[0]])
        print(f"ratio --threads {counts[1]} / --threads 1: {ratio:.2f}x")


if __name__ == "__main__":
    main()
