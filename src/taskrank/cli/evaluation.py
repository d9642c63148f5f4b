"""``taskrank retrieve``, ``taskrank fuse`` and ``taskrank evaluate``: BM25 runs, fusion, tables."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path

import typer

from ..atomic import check_output
from ..errors import ConfigError, DataError
from ..vocabulary import Correction, SignificanceTest

logger = logging.getLogger(__name__)

FORMATS = ("markdown", "latex", "json")


def _split_list(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def retrieve_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output TREC run (written atomically)."),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="BEIR folder or name (scifact, nfcorpus, …)."
    ),
    split: str = typer.Option("test", "--split", help="Split whose judged queries are searched."),
    corpus: Path | None = typer.Option(None, "--corpus", help="JSONL corpus (instead of --dataset)."),
    queries: Path | None = typer.Option(None, "--queries", help="Queries: JSONL, TSV or TREC topics."),
    qrels: Path | None = typer.Option(
        None, "--qrels", help="With --corpus/--queries: keep judged queries only."
    ),
    k: int = typer.Option(100, "--k", "-k", help="Documents per query."),
    language: str = typer.Option(
        "english", "--language", "-l", help="Stemmer and stop words (en, de, fr, es, …)."
    ),
    k1: float = typer.Option(1.5, "--k1", help="BM25 k1."),
    b: float = typer.Option(0.75, "--b", help="BM25 b."),
    variant: str = typer.Option("lucene", "--variant", help="lucene | robertson | atire | bm25l | bm25+."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Where BEIR downloads are kept."),
    index_cache: Path | None = typer.Option(None, "--index-cache", help="Where BM25 indexes are kept."),
    tag: str = typer.Option("bm25", "--tag", help="Run tag (last column of the TREC run)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary."),
) -> None:
    """BM25 top-k for every judged query of a dataset; the parameters go to RUN.json."""
    from ..retrieval import BM25Params, retrieve

    params = BM25Params(language=language, k1=k1, b=b, variant=variant)
    check_output(out, overwrite)
    found = retrieve(
        dataset=dataset,
        split=split,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        k=k,
        params=params,
        cache_dir=cache_dir,
        index_cache=index_cache,
        progress=not quiet,
    )
    found.write(out, tag=tag)
    if not quiet:
        cached = " (cached index)" if found.index_from_cache else ""
        typer.echo(
            f"BM25 {variant} k1={k1} b={b} {params.language}: {found.queries} queries × {found.documents} "
            f"docs in {found.seconds:.1f}s{cached}; wrote {out}"
        )


def _parse_weights(text: str) -> tuple[float, float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--weights expects two numbers like 0.4,0.6, got {text!r}") from None
    if len(values) != 2:
        raise ConfigError(f"--weights expects two numbers (first stage, re-ranker), got {text!r}")
    return values[0], values[1]


def _judged_in_run(
    runs: list[Path], queries: Collection[str], qrels_file: Path, qrels: Mapping[str, Mapping[str, int]]
) -> tuple[int, int]:
    """How many of the queries judged in ``qrels_file`` the ``runs`` hold (``queries``), and how
    many are judged. None in common is a :class:`DataError` naming the files and both counts:
    every metric would be 0, and a tuning a choice among zeros."""
    judged = [qid for qid, docs in qrels.items() if docs]
    shared = sum(1 for qid in judged if qid in queries)
    if shared == 0:
        names = " and ".join(str(path) for path in runs)
        holder = "the run has" if len(runs) == 1 else "the runs have"
        run_example = f" (e.g. {next(iter(queries))!r})" if queries else ""
        qrels_example = f" (e.g. {judged[0]!r})" if judged else ""
        raise DataError(
            f"{names} and {qrels_file} share no query: {holder} {len(queries)} queries{run_example}, "
            f"the qrels judge {len(judged)}{qrels_example}; are they of the same split?"
        )
    return shared, len(judged)


def fuse_command(
    first_stage: Path = typer.Argument(..., help="First-stage TREC run (e.g. BM25)."),
    reranker: Path = typer.Argument(..., help="Re-ranker TREC run."),
    out: Path = typer.Option(..., "--out", "-o", help="Output TREC run (written atomically)."),
    method: str = typer.Option("wsum", "--method", help="wsum (min-max + weighted sum) | rrf."),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Fixed weights 'first,reranker' (0.5,0.5)."
    ),
    dev_qrels: Path | None = typer.Option(
        None, "--dev-qrels", help="Tune the weights on these dev judgments."
    ),
    dev_first_stage: Path | None = typer.Option(None, "--dev-first-stage", help="Dev first-stage run."),
    dev_reranker: Path | None = typer.Option(None, "--dev-reranker", help="Dev re-ranker run."),
    metric: str = typer.Option("ndcg@10", "--metric", help="Metric the tuning maximises."),
    step: float = typer.Option(0.1, "--step", help="Grid step of the weight search."),
    rrf_k: int = typer.Option(60, "--rrf-k", help="k of reciprocal rank fusion."),
    depth: int | None = typer.Option(
        None, "--depth", help="Fuse only each run's top N per query (e.g. the re-ranked 100)."
    ),
    tag: str = typer.Option("fused", "--tag", help="Run tag."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary line."),
) -> None:
    """Fuse a first-stage run with a re-ranker run: fixed or dev-tuned weights, or RRF."""
    from ..data import read_qrels, read_run, top_k, write_run
    from ..evaluation import FUSION_METHODS, fuse, rrf, tune_fusion

    if method not in FUSION_METHODS:
        raise ConfigError(f"unknown fusion method {method!r}; valid: {', '.join(FUSION_METHODS)}")
    if method == "rrf" and (weights is not None or dev_qrels is not None):
        raise ConfigError("--weights and --dev-qrels apply to --method wsum only")
    if weights is not None and dev_qrels is not None:
        raise ConfigError("give either --weights or --dev-qrels (tuning), not both")
    if dev_qrels is None and (dev_first_stage is not None or dev_reranker is not None):
        raise ConfigError("--dev-first-stage/--dev-reranker need --dev-qrels")
    if depth is not None and depth < 1:
        raise ConfigError(f"--depth must be >= 1, got {depth}")
    check_output(out, overwrite)
    first, second = top_k(read_run(first_stage), depth), top_k(read_run(reranker), depth)
    summary: str
    if method == "rrf":
        fused = rrf([first, second], k=rrf_k)
        summary = f"RRF k={rrf_k}"
    elif dev_qrels is not None:
        qrels = read_qrels(dev_qrels)
        dev_first = top_k(read_run(dev_first_stage), depth) if dev_first_stage else first
        dev_second = top_k(read_run(dev_reranker), depth) if dev_reranker else second
        dev_runs = [dev_first_stage or first_stage, dev_reranker or reranker]
        try:
            shared, judged = _judged_in_run(dev_runs, {*dev_first, *dev_second}, dev_qrels, qrels)
        except DataError as exc:
            hint = ""
            if dev_first_stage is None and dev_reranker is None:
                hint = "; pass runs of the dev queries with --dev-first-stage and --dev-reranker"
            raise DataError(f"cannot tune the fusion weights: {exc}{hint}") from None
        if shared * 2 < judged:
            typer.echo(
                f"warning: the runs hold only {shared} of the {judged} queries judged in {dev_qrels}; "
                f"the weights are tuned on those {shared}",
                err=True,
            )
        tuned, value = tune_fusion(dev_first, dev_second, qrels, metric=metric, step=step)
        fused = fuse(first, second, tuned)
        summary = f"weights {tuned[0]:g},{tuned[1]:g} tuned on {dev_qrels} ({metric} = {value:.4f})"
    else:
        fixed = _parse_weights(weights) if weights is not None else (0.5, 0.5)
        fused = fuse(first, second, fixed)
        summary = f"weights {fixed[0]:g},{fixed[1]:g}"
    write_run(fused, out, tag=tag)
    if not quiet:
        typer.echo(f"fused {len(fused)} queries with {summary}; wrote {out}")


def _named_runs(specs: list[str]) -> dict[str, Path]:
    runs: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).stem, spec
        name = name.strip()
        if not name:
            raise ConfigError(f"run {spec!r}: empty system name (use NAME=PATH)")
        if name in runs:
            raise ConfigError(f"two runs are named {name!r}; name them with NAME=PATH")
        runs[name] = Path(path)
    return runs


def evaluate_command(
    runs: list[str] = typer.Argument(..., help="TREC runs, as PATH or NAME=PATH."),
    qrels: Path = typer.Option(..., "--qrels", help="Qrels file (TREC or BEIR TSV) or a BEIR folder."),
    split: str = typer.Option("test", "--split", help="Split when --qrels is a BEIR folder."),
    metric: list[str] = typer.Option([], "--metric", "-m", help="Metrics (repeat or comma-separate)."),
    baseline: list[str] = typer.Option(
        [], "--baseline", "-b", help="Systems to test against (default: all pairs)."
    ),
    test: SignificanceTest = typer.Option("student", "--test", help="Paired significance test."),
    p_value: float = typer.Option(0.01, "--p-value", help="Significance level after correction."),
    correction: Correction = typer.Option(
        "bonferroni", "--correction", help="Correction for testing several systems."
    ),
    seed: int = typer.Option(42, "--seed", help="Seed of the randomisation test."),
    fmt: str = typer.Option("markdown", "--format", "-f", help="markdown | latex | json."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the table to this file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Evaluate runs against qrels and print the comparison table with significance marks."""
    import json

    from ..atomic import write_text
    from ..data import read_qrels, read_run, resolve_dataset
    from ..evaluation import DEFAULT_METRICS, compare

    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if out is not None:
        check_output(out, overwrite)
    metrics = _split_list(metric) or list(DEFAULT_METRICS)
    named = _named_runs(runs)
    if qrels.is_dir():
        root = resolve_dataset(qrels)
        qrels_file = root / "qrels" / f"{split}.tsv"
        if not qrels_file.is_file():
            valid = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
            raise ConfigError(f"{root}: unknown split {split!r}; valid splits: {', '.join(valid) or 'none'}")
        judgments = read_qrels(qrels_file)
    else:
        qrels_file = qrels
        judgments = read_qrels(qrels)
    loaded = {name: read_run(path) for name, path in named.items()}
    for name, run in loaded.items():
        shared, judged = _judged_in_run([named[name]], run.keys(), qrels_file, judgments)
        if shared * 2 < judged:
            typer.echo(
                f"warning: {named[name]} holds only {shared} of the {judged} queries judged in "
                f"{qrels_file}; the other {judged - shared} count as 0",
                err=True,
            )
    table = compare(
        loaded,
        judgments,
        metrics,
        baselines=_split_list(baseline) or None,
        test=test,
        p_value=p_value,
        correction=correction,
        seed=seed,
    )
    if fmt == "markdown":
        text = table.to_markdown()
    elif fmt == "latex":
        text = table.to_latex()
    else:
        text = json.dumps(table.to_dict(), indent=2, ensure_ascii=False) + "\n"
    typer.echo(text, nl=False)
    if out is not None:
        write_text(out, text)


def register(app: typer.Typer) -> None:
    app.command("retrieve")(retrieve_command)
    app.command("fuse")(fuse_command)
    app.command("evaluate")(evaluate_command)
