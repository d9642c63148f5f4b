"""Wall time of the offline demo (`taskrank demo`), from an empty folder and again from its cache.

Each run is a fresh `taskrank` process (imports included), as a user would start it:
  (a) cold: a new output folder, so the tiny trio is built and trained and every step is scored;
  (b) warm: the same folder again, so the models are reused and every step comes from the cache.
Prints the CPU count and the load average, since the machine may be shared.

    .venv/bin/python benchmarks/bench_demo.py [--work bench-work/demo] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / "bench-work" / "demo")
    parser.add_argument("--quick", action="store_true", help="the smaller variant the tests run")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    taskrank = str(Path(sys.executable).with_name("taskrank"))
    cmd = [taskrank, "demo", "--out", str(args.work), "--no-progress", *(["--quick"] if args.quick else [])]
    load = os.getloadavg()
    cold = timed(cmd)
    warm = timed(cmd)
    print(f"cpus: {os.cpu_count()}  load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"command: {' '.join(cmd)}")
    print(f"cold (build + train + score): {cold:6.1f} s")
    print(f"warm (models and steps cached): {warm:6.1f} s")
    print(f"ratio cold/warm: {cold / warm:.1f}x")


if __name__ == "__main__":
    main()
