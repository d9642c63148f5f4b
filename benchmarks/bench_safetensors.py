"""The safetensors library against taskrank's own reading and writing, in a merge's pattern.

Uses the three t5-base-shaped checkpoints of bench_merge.py (built there if missing). Every
method is the streaming merge θ_r + 0.7·(θ_d − θ_p) of those three files into one output
file, run as a fresh Python process under /usr/bin/time -v (so the torch import counts, as
in `taskrank merge`), with the inputs evicted from the page cache before each (cold). The
merge goes in the ranker's on-disk order, large tensors in pieces of 1M elements, as
`taskrank merge` does, but without hashing, checks or a model card: only the I/O differs.

  * I/O floor          cat the three inputs to /dev/null, cp one (as in bench_merge.py)
  * taskrank           positioned reads into recycled blocks (safetensors_io.read_tensor and
                       BufferPool), ShardedSafetensorsWriter.write_span
  * st held            safetensors.safe_open on each input, open for the whole merge,
                       get_slice(name)[rows] per piece; taskrank's writer
  * st per tensor      the same, but each input opened anew for every read, a tensor or a
                       piece of one (its mapping dropped after it); taskrank's writer
  * save_file          taskrank's reads; the whole output kept in memory, then
                       safetensors.torch.save_file
  * st + save_file     only the library: safe_open held, whole tensors, save_file

The methods take turns, in bench_merge.py's seeded order per round (see round_order there).
Prints each method's best and median wall time against the floor's, and its peak RSS against
one checkpoint: the merge's bars are wall ≤ 2 × floor and peak RSS ≤ 1.25 × one checkpoint.

With ``--trees NAME=SRC ...`` it times the whole command instead, ``taskrank merge`` of the
same three checkpoints from each source tree (its src/ folder, started the same way for
every tree), for new inputs (an empty hash store) and for inputs hashed before: e.g. two trees
that differ only in how `Checkpoint` reads. (It was written when bench_merge.py's --baseline
still started the two trees differently and rotated a fixed order, which put the tree under
test right after the paper's approach in most rounds; bench_merge.py no longer does either,
see benchmarks/merge.md.)

    .venv/bin/python benchmarks/bench_safetensors.py [--repeats 3] [--methods taskrank "st per tensor"]
    .venv/bin/python benchmarks/bench_safetensors.py --repeats 5 --trees pread=/tmp/a/src library=/tmp/b/src
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import subprocess
import tempfile

from bench_merge import PY, ROOT, build, evict, round_order, timed

# The child: argv = method, out dir, ranker, domain, pretrained (safetensors files).
CHILD = textwrap.dedent(
    """
    import math, sys
    from pathlib import Path
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    from taskrank.checkpoints.safetensors_io import (
        BufferPool, ShardedSafetensorsWriter, TensorSpec, read_header, read_tensor)

    torch.set_num_threads(1)  # as the merge worker on 2 cores
    method, out = sys.argv[1], Path(sys.argv[2])
    files = [Path(f) for f in sys.argv[3:6]]
    entries = [read_header(f)[0] for f in files]
    order = sorted(entries[0], key=lambda k: entries[0][k].begin)
    whole = method == "st + save_file"

    SPAN = 1 << 20  # taskrank.arithmetic.merging.SPAN

    def pieces(name):
        size = math.prod(entries[0][name].shape)
        if whole or size <= SPAN:
            return [(0, size)]
        return [(a, min(a + SPAN, size)) for a in range(0, size, SPAN)]

    if method in ("taskrank", "save_file"):
        largest = 4 * max(b - a for n in order for a, b in pieces(n))
        pool = BufferPool(16 * largest, block=largest)
        handles = [open(f, "rb", buffering=0) for f in files]

        def read(i, name, a, b):
            return read_tensor(handles[i], entries[i][name], pool=pool, span=(a, b))

        def done(t):
            pool.give(t)
    else:
        held = [safe_open(f, "pt") for f in files] if method != "st per tensor" else None

        def read(i, name, a, b):
            st = held[i] if held is not None else safe_open(files[i], "pt")
            shape = entries[i][name].shape
            if len(shape) == 0 or (a == 0 and b == math.prod(shape)):
                return st.get_tensor(name).reshape(-1)
            cols = math.prod(shape[1:])
            first, last = a // cols, -(-b // cols)
            rows = st.get_slice(name)[first:last]
            return rows.reshape(-1)[a - first * cols : b - first * cols]

        def done(t):
            pass

    def merged(name, a, b):
        r, d, p = (read(i, name, a, b) for i in range(3))
        out_t = r.float() + 0.7 * (d.float() - p.float())
        for t in (r, d, p):
            done(t)
        return out_t.to(entries[0][name].dtype)

    if method in ("save_file", "st + save_file"):
        state = {}
        for name in order:
            parts = [merged(name, a, b) for a, b in pieces(name)]
            state[name] = torch.cat(parts).reshape(entries[0][name].shape)
        save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    else:
        specs = [TensorSpec(n, entries[0][n].shape, entries[0][n].dtype) for n in order]
        writer = ShardedSafetensorsWriter(out, specs, "10GB")
        for name in order:
            for a, b in pieces(name):
                writer.write_span(name, merged(name, a, b))
        writer.close()
    """
)

METHODS = ("taskrank", "st held", "st per tensor", "save_file", "st + save_file")
FLOOR = "I/O floor (cat 3 + cp 1)"


def run_rounds(
    commands: dict[str, tuple[list[str] | str, bool, dict[str, str] | None]],
    files: list[Path],
    out: Path,
    repeats: int,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Every command once per round, cold cache, in bench_merge's seeded order per round; a
    command's environment with TASKRANK_CACHE="" gets an empty hash store of its own."""
    walls: dict[str, list[float]] = {name: [] for name in commands}
    rss: dict[str, float] = dict.fromkeys(commands, 0.0)
    names = list(commands)
    for round_ in range(repeats):
        for name in round_order(names, round_):
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            cmd, shell, env = commands[name]
            store = None
            if env is not None and not env["TASKRANK_CACHE"]:
                store = tempfile.mkdtemp(prefix="taskrank-bench-")
                env = {**env, "TASKRANK_CACHE": store}
            os.sync()
            evict(files)
            wall, peak = timed(cmd, shell, env)
            if store is not None:
                shutil.rmtree(store)
            walls[name].append(wall)
            rss[name] = max(rss[name], peak)
    shutil.rmtree(out, ignore_errors=True)
    return walls, rss


def tree_commands(
    trees: list[str], paths: dict[str, Path], out: Path, store: Path
) -> dict[str, tuple[list[str] | str, bool, dict[str, str] | None]]:
    """``taskrank merge`` from each NAME=SRC tree, new inputs and hashed before (``store``)."""
    args = ["merge", "--ranker", str(paths["ranker"]), "--domain", str(paths["domain"]),
            "--pretrained", str(paths["pretrained"]), "--alpha", "0.7", "--out", str(out),
            "--overwrite", "--quiet"]  # fmt: skip
    commands: dict[str, tuple[list[str] | str, bool, dict[str, str] | None]] = {}
    for tree in trees:
        name, _, src = tree.partition("=")
        cmd = [PY, "-c", "from taskrank.cli import main; main()", *args]
        env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
        subprocess.run(cmd, check=True, env={**env, "TASKRANK_CACHE": str(store)})  # fills the store
        commands[f"{name}, new inputs"] = (cmd, False, {**env, "TASKRANK_CACHE": ""})
        commands[f"{name}, hashed before"] = (cmd, False, {**env, "TASKRANK_CACHE": str(store)})
    return commands


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "bench-work" / "merge")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS, help="the floor always runs")
    ap.add_argument("--trees", nargs="+", metavar="NAME=SRC", help="time `taskrank merge` from these trees")
    args = ap.parse_args()
    paths = build(args.work)
    files = [paths[r] / "model.safetensors" for r in ("ranker", "domain", "pretrained")]
    size = files[0].stat().st_size / 1e9
    out = args.work / "out-st"
    commands: dict[str, tuple[list[str] | str, bool, dict[str, str] | None]] = {
        FLOOR: (f"cat {' '.join(map(str, files))} > /dev/null && mkdir -p {out} && "
                f"cp --reflink=never {files[0]} {out}/", True, None),
    }  # fmt: skip
    if args.trees:
        store = args.work / "hash-store-trees"
        shutil.rmtree(store, ignore_errors=True)
        commands.update(tree_commands(args.trees, paths, out, store))
    else:
        for method in args.methods:
            commands[method] = ([PY, "-c", CHILD, method, str(out), *map(str, files)], False, None)
    walls, rss = run_rounds(commands, files, out, args.repeats)
    names = list(commands)
    floor_best, floor_median = min(walls[FLOOR]), statistics.median(walls[FLOOR])
    print(f"one checkpoint: {size:.2f} GB; {args.repeats} rounds, cold cache; {os.cpu_count()} CPUs")
    print(
        f"{'method':26s} {'best s':>7s} {'× floor':>8s} {'median ×':>9s} {'peak RSS GB':>12s} {'× ckpt':>7s}"
    )
    for name in names:
        best, median = min(walls[name]), statistics.median(walls[name])
        print(
            f"{name:26s} {best:7.2f} {best / floor_best:8.2f} {median / floor_median:9.2f} "
            f"{rss[name]:12.2f} {rss[name] / size:7.2f}"
        )
    print("every round, in seconds:")
    for name in names:
        print(f"  {name:24s}" + "".join(f"{t:7.2f}" for t in walls[name]))


if __name__ == "__main__":
    main()
