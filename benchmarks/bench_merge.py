"""Speed and memory of `taskrank merge` on three t5-base-shaped checkpoints (float32, ~0.9 GB each).

Compares, in one run, with the checkpoints evicted from the page cache before each command
(cold, through posix_fadvise DONTNEED on the weight files only, so Python and torch start warm
for every method) or cached (`--cache warm`):
  (a) taskrank merge (streaming, a tensor or a 4 MB piece of one at a time), twice: for inputs new to it (an empty
      hash store, so the model card's sha256 of the three inputs is computed) and for inputs
      merged before (their hashes come from the store an earlier merge left in $TASKRANK_CACHE),
  (b) the approach of the paper's scripts: load the three full models, subtract and add whole
      state dicts, save the result,
  (c) the raw I/O floor: read the three checkpoints once (cat > /dev/null) and write one (cp).
Peak RSS and wall time come from /usr/bin/time -v.

    .venv/bin/python benchmarks/bench_merge.py [--work bench-work/merge] [--repeats 5] [--cache cold|warm]
        [--settle S] [--baseline SRC]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
NEW = "taskrank merge, new inputs"
KNOWN = "taskrank merge, inputs hashed before"
BASELINE = "baseline (--baseline), new inputs"


def build(work: Path) -> dict[str, Path]:
    """Three random t5-base-shaped checkpoints (built once, then reused)."""
    paths = {role: work / role for role in ("pretrained", "ranker", "domain")}
    script = textwrap.dedent(
        """
        import sys, torch
        from transformers import T5Config, T5ForConditionalGeneration
        from taskrank.tiny import t5_tokenizer
        cfg = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                       decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
        cfg.architectures = ["T5ForConditionalGeneration"]
        torch.manual_seed(int(sys.argv[2]))
        T5ForConditionalGeneration(cfg).save_pretrained(sys.argv[1], max_shard_size="10GB")
        t5_tokenizer().save_pretrained(sys.argv[1])
        """
    )
    for seed, (role, path) in enumerate(paths.items()):
        if not (path / "model.safetensors").exists():
            print(f"building {role} ...", flush=True)
            subprocess.run([PY, "-c", script, str(path), str(seed)], check=True)
    return paths


PAPER = textwrap.dedent(
    """
    import sys
    from transformers import T5ForConditionalGeneration
    ranker, domain, pretrained, alpha, out = sys.argv[1:6]
    r = T5ForConditionalGeneration.from_pretrained(ranker)
    d = T5ForConditionalGeneration.from_pretrained(domain)
    p = T5ForConditionalGeneration.from_pretrained(pretrained)
    pre = p.state_dict()
    vector = {k: v - pre[k] for k, v in d.state_dict().items()}
    merged = {k: v + float(alpha) * vector[k] for k, v in r.state_dict().items()}
    r.load_state_dict(merged)
    r.save_pretrained(out)
    """
)


def timed(
    cmd: list[str] | str, shell: bool = False, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of a command under /usr/bin/time -v."""
    full = ["/usr/bin/time", "-v", *cmd] if not shell else ["/usr/bin/time", "-v", "bash", "-c", cmd]
    proc = subprocess.run(full, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {cmd}\n{proc.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(
        r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", proc.stderr
    )
    h, m, s = wall.groups()
    return int(h or 0) * 3600 + int(m) * 60 + float(s), rss_kb * 1024 / 1e9


def evict(files: list[Path]) -> None:
    """Drop ``files`` from the page cache (flushing them first)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def round_order(names: list[str], round_: int) -> list[str]:
    """The order of the methods in round ``round_``: a shuffle seeded by the round.

    The paper's approach frees 5.7 GB, and on a VM that hands freed memory back to its host,
    whatever runs next pays to fault it in again. Rotating a fixed cycle would put the same
    method after it in every round but one; a seeded shuffle spreads that cost over every
    method, and a rerun repeats the same orders. The other merge benchmarks use it too.
    """
    return random.Random(round_).sample(names, len(names))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "bench-work" / "merge")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cache", choices=("cold", "warm"), default="cold")
    ap.add_argument(
        "--settle", type=float, default=0.0, metavar="S",
        help="wait S seconds after the eviction before each command: on a VM with free page "
        "reporting (virtio-balloon), the host then takes back the memory just freed, and every "
        "command starts as after an idle spell, paying the host for each page it fills",
    )  # fmt: skip
    ap.add_argument(
        "--baseline", type=Path, metavar="SRC",
        help="also time the merge of another taskrank source tree (its src/ folder), e.g. a git "
        "worktree of an earlier commit, with an empty hash store",
    )  # fmt: skip
    args = ap.parse_args()
    drop = Path("/proc/sys/vm/drop_caches")
    if args.cache == "cold" and not (drop.exists() and os.access(drop, os.W_OK)):
        raise SystemExit(
            "--cache cold needs a writable /proc/sys/vm/drop_caches (run as root) or use --cache warm"
        )
    paths = build(args.work)
    size = (paths["ranker"] / "model.safetensors").stat().st_size / 1e9
    out = args.work / "out"
    files = " ".join(str(p / "model.safetensors") for p in paths.values())
    # every tree starts the same way (python -c, not the console script), so a baseline tree
    # (--baseline, by PYTHONPATH) and this one pay the same start-up
    taskrank = [PY, "-c", "from taskrank.cli import main; main()", "merge", "--ranker", str(paths["ranker"]), "--domain",
                str(paths["domain"]), "--pretrained", str(paths["pretrained"]), "--alpha", "0.7",
                "--out", str(out), "--overwrite", "--quiet"]  # fmt: skip
    methods = {
        "I/O floor (cat 3 + cp 1)": (
            f"cat {files} > /dev/null && mkdir -p {out} && cp --reflink=never {paths['ranker']}/model.safetensors {out}/",
            True,
        ),
        "paper's approach (3 full models)": (
            [PY, "-c", PAPER, str(paths["ranker"]), str(paths["domain"]), str(paths["pretrained"]), "0.7", str(out)],
            False,
        ),
        NEW: (taskrank, False),
        KNOWN: (taskrank, False),
    }  # fmt: skip
    if args.baseline is not None:
        methods[BASELINE] = (taskrank, False)
    # NEW: an empty hash store, as for inputs merged for the first time (the card's sha256 of
    # the three inputs is computed); KNOWN: the store an earlier merge of the same inputs left.
    known_store = args.work / "hash-store"
    shutil.rmtree(known_store, ignore_errors=True)
    subprocess.run(taskrank, check=True, env={**os.environ, "TASKRANK_CACHE": str(known_store)})
    results: dict[str, tuple[float, float]] = {}
    walls: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for round_ in range(args.repeats):
        for name in round_order(names, round_):
            cmd, shell = methods[name]
            shutil.rmtree(out, ignore_errors=True)
            env = None
            if name in (NEW, BASELINE):
                env = {**os.environ, "TASKRANK_CACHE": tempfile.mkdtemp(prefix="taskrank-bench-")}
                if name == BASELINE:
                    env["PYTHONPATH"] = str(args.baseline.resolve())
            elif name == KNOWN:
                env = {**os.environ, "TASKRANK_CACHE": str(known_store)}
            os.sync()  # no write-back of an earlier output runs during the timed command
            if args.cache == "cold":
                evict([p / "model.safetensors" for p in paths.values()])
            else:
                subprocess.run(["cat", *files.split()], stdout=subprocess.DEVNULL, check=True)
            time.sleep(args.settle)
            wall, rss = timed(cmd, shell, env)
            if name in (NEW, BASELINE):
                shutil.rmtree(env["TASKRANK_CACHE"])
            walls[name].append(wall)
            best = results.get(name)
            results[name] = (min(wall, best[0]) if best else wall, max(rss, best[1]) if best else rss)
    shutil.rmtree(out, ignore_errors=True)
    floor = results["I/O floor (cat 3 + cp 1)"][0]
    print(
        f"one checkpoint: {size:.2f} GB (float32, t5-base shape); best of {args.repeats} runs, {args.cache} cache"
        + (f", {args.settle:g} s settle" if args.settle else "")
    )
    print(f"{os.cpu_count()} CPUs; wall: best of the runs (median in brackets); peak RSS: largest")
    print(
        f"{'method':36s} {'wall s':>8s} {'× floor':>8s} {'(median ×)':>11s} {'peak RSS GB':>12s} {'× ckpt':>7s}"
    )
    for name, (wall, rss) in results.items():
        median = statistics.median(walls[name]) / statistics.median(walls["I/O floor (cat 3 + cp 1)"])
        print(
            f"{name:36s} {wall:8.2f} {wall / floor:8.2f} {f'({median:.2f})':>11s} {rss:12.2f} {rss / size:7.2f}"
        )
    print("every round, in seconds:")
    for name, times in walls.items():
        print(f"  {name:36s}" + "".join(f"{t:7.2f}" for t in times))


if __name__ == "__main__":
    main()
