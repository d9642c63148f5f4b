"""Benchmark of the evaluation side: BM25 indexing and search, metrics, fusion, significance.

Synthetic collection (Zipf-distributed pseudo-words, offline, seeded): by default 100k documents
of ~60 words and 1,000 queries of 4 words drawn from a target document (judged 2) plus three
random judged documents (1). Every timing is wall-clock in this process; evaluation (trec_eval's
C code through pytrec_eval: nothing is compiled) is timed on its first call and twice more.

    .venv/bin/python benchmarks/bench_eval.py                 # 100k docs, 1,000 queries
    .venv/bin/python benchmarks/bench_eval.py --docs 10000    # smaller, quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np


def _words(count: int) -> list[str]:
    """``count`` distinct lowercase pseudo-words (base-26 spelled ranks, at least 3 letters)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = []
    for rank in range(count):
        n, word = rank + 26 * 26, ""
        while n:
            n, r = divmod(n, 26)
            word = letters[r] + word
        words.append(word)
    return words


def synthetic(docs: int, queries: int, vocab: int, length: int, seed: int):
    rng = np.random.default_rng(seed)
    words = np.array(_words(vocab), dtype=object)
    probs = 1.0 / np.arange(1, vocab + 1) ** 1.05
    probs /= probs.sum()
    lengths = rng.integers(length // 2, length * 3 // 2, size=docs)
    tokens = rng.choice(vocab, size=int(lengths.sum()), p=probs)
    corpus, start = {}, 0
    for i, n in enumerate(lengths):
        corpus[f"doc{i}"] = {"title": "", "text": " ".join(words[tokens[start : start + n]])}
        start += n
    topics, qrels = {}, {}
    targets = rng.choice(docs, size=queries, replace=False)
    for q, target in enumerate(targets):
        text = corpus[f"doc{target}"]["text"].split()
        topics[f"q{q}"] = " ".join(rng.choice(text, size=min(4, len(text)), replace=False))
        judged = {f"doc{target}": 2}
        judged.update({f"doc{d}": 1 for d in rng.choice(docs, size=3, replace=False) if d != target})
        qrels[f"q{q}"] = judged
    return corpus, topics, qrels


def timed(label: str, fn, results: dict):
    start = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - start
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--vocab", type=int, default=50_000)
    parser.add_argument("--length", type=int, default=60, help="mean document length in words")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import bm25s

    from taskrank.evaluation import DEFAULT_METRICS, compare, evaluate, fuse, rrf
    from taskrank.retrieval import BM25Params, get_index

    t: dict[str, float] = {}
    corpus, topics, qrels = timed(
        "generate", lambda: synthetic(args.docs, args.queries, args.vocab, args.length, args.seed), t
    )
    with tempfile.TemporaryDirectory() as cache:
        params = BM25Params()
        index = timed(
            "index_build_and_save", lambda: get_index(corpus, params, cache_dir=cache, progress=False), t
        )
        cached = timed(
            "index_load_from_cache", lambda: get_index(corpus, params, cache_dir=cache, progress=False), t
        )
        assert cached.from_cache
        run = timed("search", lambda: index.search(topics, k=args.k, progress=False), t)
    pairs = sum(len(v) for v in run.values())

    rng = np.random.default_rng(args.seed + 1)
    reranked = {
        q: {d: float(rng.normal()) + (3.0 if qrels[q].get(d) else 0.0) for d in docs}
        for q, docs in run.items()
    }
    timed("evaluate_first_call", lambda: evaluate(run, qrels, DEFAULT_METRICS), t)
    ev = timed("evaluate_all_metrics", lambda: evaluate(run, qrels, DEFAULT_METRICS), t)
    timed("evaluate_all_metrics_2", lambda: evaluate(run, qrels, DEFAULT_METRICS), t)
    fused = timed("fuse_wsum", lambda: fuse(run, reranked, (0.4, 0.6)), t)
    timed("fuse_rrf", lambda: rrf([run, reranked]), t)
    compare({"bm25": run, "fused": fused}, qrels, ["ndcg@10"], baselines=["bm25"])  # warm-up
    timed(
        "compare_3_systems_student",
        lambda: compare(
            {"bm25": run, "fused": fused, "rr": reranked}, qrels, DEFAULT_METRICS, baselines=["bm25"]
        ),
        t,
    )
    timed(
        "compare_3_systems_fisher",
        lambda: compare(
            {"bm25": run, "fused": fused, "rr": reranked},
            qrels,
            DEFAULT_METRICS,
            baselines=["bm25"],
            test="fisher",
        ),
        t,
    )

    from importlib.metadata import version

    rows = [
        f"python {platform.python_version()}, bm25s {bm25s.__version__}, pytrec_eval {version('pytrec-eval-terrier')}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs visible",
        f"collection: {args.docs} docs (mean {args.length} words, vocab {args.vocab}), "
        f"{args.queries} queries, k={args.k}; {pairs} (query, doc) pairs retrieved",
        f"generate synthetic data        {t['generate']:8.2f} s",
        f"BM25 index build + save        {t['index_build_and_save']:8.2f} s  "
        f"({args.docs / t['index_build_and_save']:,.0f} docs/s)",
        f"BM25 index load from cache     {t['index_load_from_cache']:8.2f} s",
        f"BM25 search top-{args.k:<4}           {t['search']:8.2f} s  "
        f"({args.queries / t['search']:,.0f} queries/s)",
        f"evaluate 6 metrics (1st call)  {t['evaluate_first_call']:8.3f} s  "
        f"(again: {t['evaluate_all_metrics']:.3f} s, {t['evaluate_all_metrics_2']:.3f} s)  "
        f"nDCG@10 = {ev.mean['ndcg@10']:.4f}",
        f"fuse min-max + weighted sum    {t['fuse_wsum']:8.3f} s",
        f"fuse RRF                       {t['fuse_rrf']:8.3f} s",
        f"compare 3 systems, Student t   {t['compare_3_systems_student']:8.3f} s  (6 metrics, 2 tests each)",
        f"compare 3 systems, Fisher      {t['compare_3_systems_fisher']:8.3f} s  (10,000 resamples per test)",
    ]
    budget = 2.0
    verdict = "OK" if t["evaluate_first_call"] < budget else "OVER BUDGET"
    rows.append(f"evaluation budget (first call): {t['evaluate_first_call']:.3f} s < {budget} s: {verdict}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
