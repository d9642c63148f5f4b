"""Wall time of the offline demo (`taskrank demo`): a newcomer's first run, a later one, a rerun.

Each measurement is a fresh `taskrank` process (imports included), as a user would start it,
in rounds that alternate the three kinds (so a change in the machine's load hits all of them):

  cold:  a new output folder, an empty numba cache (NUMBA_CACHE_DIR) and an empty matplotlib
         cache (MPLCONFIGDIR): what a newcomer's first `taskrank demo` meets. numba, when
         NUMBA_CACHE_DIR is set, reads and writes only there (not the __pycache__ folders in the
         installed packages), so the folder being empty makes the run really cold;
  warm:  a new output folder, the caches the cold run of the round left behind: the tiny trio
         is built and trained and every step is scored again;
  rerun: the warm run's folder again: the models are reused and every step comes from the cache.

The numba cache folder is listed after each cold run: anything in it was compiled by the demo.
Prints the CPUs this process may use and the load average, since the machine may be shared.
Another PYTHONPATH measures other code with the same script (e.g. the code before a change).

    .venv/bin/python benchmarks/bench_demo.py [--rounds 2] [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of cold, warm and rerun")
    parser.add_argument("--quick", action="store_true", help="the smaller variant the tests run")
    parser.add_argument("--threads", type=int, default=None, help="passed to `taskrank demo --threads`")
    args = parser.parse_args()
    taskrank = str(Path(sys.executable).with_name("taskrank"))
    extra = [
        *(["--quick"] if args.quick else []),
        *(["--threads", str(args.threads)] if args.threads else []),
    ]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cpus this process may use: {cpus}  load average before: {load()}")
    print(f"command: {taskrank} demo --out FOLDER --no-progress {' '.join(extra)}".rstrip())
    if os.environ.get("PYTHONPATH"):
        print(f"PYTHONPATH={os.environ['PYTHONPATH']}")
    times: dict[str, list[float]] = {"cold": [], "warm": [], "rerun": []}
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        for round_ in range(1, args.rounds + 1):
            work = Path(tmp) / f"round-{round_}"
            numba, mpl = work / "numba-cache", work / "mpl-config"
            numba.mkdir(parents=True)
            mpl.mkdir()
            env = {**os.environ, "NUMBA_CACHE_DIR": str(numba), "MPLCONFIGDIR": str(mpl)}

            def demo(out: Path, env: dict[str, str] = env) -> float:
                return timed([taskrank, "demo", "--out", str(out), "--no-progress", *extra], env)

            cold = demo(work / "cold")
            compiled = sum(1 for p in numba.rglob("*") if p.is_file())
            warm = demo(work / "warm")
            rerun = demo(work / "warm")
            for kind, value in (("cold", cold), ("warm", warm), ("rerun", rerun)):
                times[kind].append(value)
            print(
                f"round {round_}: cold {cold:6.1f} s ({compiled} files in the numba cache after it)  "
                f"warm {warm:6.1f} s  rerun {rerun:6.1f} s  cold/warm {cold / warm:.2f}x  "
                f"load average after: {load()}"
            )
    cold, warm, rerun = (statistics.median(times[k]) for k in ("cold", "warm", "rerun"))
    print(f"median cold (first run: build, train, score, empty caches): {cold:6.1f} s")
    print(f"median warm (build, train, score, caches filled):         {warm:6.1f} s")
    print(f"median rerun (models and steps cached):                   {rerun:6.1f} s")
    print(f"ratio cold/warm: {cold / warm:.2f}x   warm/rerun: {warm / rerun:.1f}x")


if __name__ == "__main__":
    main()
