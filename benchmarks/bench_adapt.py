"""Speed of `taskrank adapt` and `train_ranker` on the tiny offline models (CPU).

Measures, within one process and one run (the machine may be shared, so compare ratios):
  (a) adapt steps per second for each objective (T5 span corruption, BERT MLM, Llama causal LM);
  (b) the cost of periodic checkpoints: the same T5 run with --save-every 0 and --save-every 5;
  (c) the cost of resuming: a run interrupted after half its steps and resumed, against one
      uninterrupted run (and that both end with identical weights);
  (d) train_ranker wall time for monot5 and cross-encoder at the default settings.
Prints the CPU count and the load average.

    .venv/bin/python benchmarks/bench_adapt.py [--steps 30] [--work bench-work/adapt]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from taskrank.adapt import adapt
from taskrank.adapt.training import train_ranker
from taskrank.tiny import build_tiny

ROOT = Path(__file__).resolve().parents[1]
VOCABULARY = (
    "cell protein gene cancer virus patient treatment clinical trial dose drug immune "
    "search engine web page news sport football music film city weather market price "
    "river mountain ocean forest history war king law court contract"
)
WORDS = VOCABULARY.split(" ")


def corpus(path: Path, docs: int = 200) -> Path:
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(docs):
            handle.write(json.dumps({"_id": str(i), "text": " ".join(rng.choices(WORDS, k=60))}) + "\n")
    return path


def triples(n: int) -> list[tuple[str, str, int]]:
    topics = [WORDS[0:12], WORDS[12:21], WORDS[21:29], WORDS[29:]]
    rng = random.Random(0)
    out = []
    for _ in range(n):
        mine, other = rng.sample(range(4), 2)
        query = " ".join(rng.sample(topics[mine], 2))
        out += [(query, " ".join(rng.choices(topics[mine], k=6)), 1)]
        out += [(query, " ".join(rng.choices(topics[other], k=6)), 0)]
    return out


REPEATS = 3


def timed(fn, out: Path, *args, **kwargs) -> float:
    """Best of REPEATS wall times (the machine is shared: the minimum is the least disturbed run)."""
    best = float("inf")
    for _ in range(REPEATS):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        fn(*args, out, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best


def adapt_at(base: Path, corpus: Path, out: Path, **kwargs) -> None:
    adapt(base, corpus, out, **kwargs)


def interrupted_then_resumed(base: Path, corpus: Path, out: Path, *, half: int, **kwargs) -> None:
    def stop(step: int, loss: float) -> None:
        if step == half:
            raise KeyboardInterrupt

    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
    with contextlib.suppress(KeyboardInterrupt):
        adapt(base, corpus, out, on_step=stop, **kwargs)
    adapt(base, corpus, out, resume=True, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--work", type=Path, default=ROOT / "bench-work" / "adapt")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    text = corpus(args.work / "corpus.jsonl")
    opts = {"steps": args.steps, "lr": 1e-3, "batch_size": 8, "max_length": 64, "progress": False}
    bases = {
        arch: build_tiny(arch, args.work / arch, words=WORDS)
        for arch in ("T5ForConditionalGeneration", "BertModel", "LlamaForCausalLM")
    }

    print(f"\n(a) adapt() wall time: load, tokenize, train, save (batch 8 x 64 tokens; best of {REPEATS})")
    for arch, base in bases.items():
        seconds = timed(adapt_at, args.work / f"a-{arch}", base, text, save_every=0, **opts)
        print(
            f"  {arch:28s} {args.steps} steps in {seconds:.2f} s ({args.steps / seconds:.0f} steps/s overall)"
        )

    t5 = bases["T5ForConditionalGeneration"]
    print("\n(b) periodic checkpoints (T5)")
    plain = timed(adapt_at, args.work / "b-plain", t5, text, save_every=0, **opts)
    saved = timed(adapt_at, args.work / "b-saved", t5, text, save_every=5, **opts)
    print(f"  save_every=0 {plain:.2f} s, save_every=5 {saved:.2f} s, ratio {saved / plain:.2f}")

    print("\n(c) interrupt at half, then resume (T5, save_every=5)")
    whole = timed(adapt_at, args.work / "c-whole", t5, text, save_every=5, **opts)
    split = timed(
        interrupted_then_resumed, args.work / "c-split", t5, text, half=args.steps // 2, save_every=5, **opts
    )
    a = load_file(args.work / "c-whole" / "model.safetensors")
    b = load_file(args.work / "c-split" / "model.safetensors")
    same = all(torch.equal(a[k], b[k]) for k in a)
    print(f"  uninterrupted {whole:.2f} s, interrupted + resumed {split:.2f} s, ratio {split / whole:.2f}")
    print(f"  identical weights: {same}")

    print(f"\n(d) train_ranker at the defaults (150 steps, batch 32), 600 triples; best of {REPEATS}")
    data = triples(300)
    for arch, kind in (("T5ForConditionalGeneration", "monot5"), ("BertModel", "cross-encoder")):
        seconds = timed(train_ranker, args.work / f"d-{kind}", bases[arch], data, kind=kind)
        print(f"  {kind:14s} {seconds:.2f} s")


if __name__ == "__main__":
    main()
