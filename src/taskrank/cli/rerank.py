"""``taskrank rerank``: re-score a first-stage run with a model and write a TREC run."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import ConfigError, DataError

# not ..rerankers: no numpy at start-up; typer lists a Literal's values as the choices
from ..vocabulary import DEVICES_TEXT, DTYPES, Kind, Quantize

if TYPE_CHECKING:
    from ..config import ExecutionConfig
    from ..data import Run
    from ..experiment.ray_data import RerankerSpec

logger = logging.getLogger(__name__)


def parse_option(text: str) -> tuple[str, str | int | bool]:
    """``KEY=VALUE`` → (key, value); integers and true/false are converted, the rest stays text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--option expects KEY=VALUE, got {text!r}")
    value: str | int | bool = raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    elif raw.lstrip("-").isdigit():
        value = int(raw)
    return key.strip(), value


def restrict_to_split(run: Run, queries: Mapping[str, str], split: str, source: Path) -> Run:
    """The candidates of the split's queries only, as ``fuse`` and ``evaluate`` take a run; how
    many queries were dropped goes to stderr in one line. None left of a run that had some is a
    :class:`DataError`."""
    kept = {qid: docs for qid, docs in run.items() if qid in queries}
    dropped = [qid for qid in run if qid not in kept]
    if dropped and not kept:
        raise DataError(
            f"{source}: none of its {len(run)} queries is in split {split!r} (e.g. {dropped[0]!r})"
        )
    if dropped:
        typer.echo(
            f"warning: {len(dropped)} of {len(run)} queries of {source} are not in split {split!r} "
            f"and are not re-ranked (e.g. {dropped[0]!r})",
            err=True,
        )
    return kept


THREADS_HELP = (
    "CPU threads torch scores with, here or in each Ray worker (default: $OMP_NUM_THREADS when set, else "
    "the cores this process may use: CPU affinity and cgroup quota, not the host's count; on Ray: each "
    "worker's CPUs)."
)
ENGINE_HELP = (
    "local | ray: score in this process, or stream the run through Ray Data on the workers of a Ray "
    "cluster (one model per worker; the same scores, see docs/experiments.md)."
)
RAY_HELP = "With --engine ray: "


def rerank_command(
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint directory or hub id."),
    kind: Kind = typer.Option(..., "--kind", "-k", help="Scoring family."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="BEIR folder (or dataset name)."),
    candidates: Path = typer.Option(..., "--candidates", "-c", help="First-stage TREC run to re-rank."),
    out: Path = typer.Option(..., "--out", "-o", help="Output TREC run (written atomically)."),
    split: str = typer.Option("test", "--split", help="Split whose queries are re-ranked."),
    top_k: int = typer.Option(100, "--top-k", help="Candidates re-ranked per query."),
    batch_size: int = typer.Option(32, "--batch-size", help="Pairs per forward pass."),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", help="Padded-token budget per batch (replaces --batch-size)."
    ),
    max_length: int | None = typer.Option(
        None,
        "--max-length",
        help="Maximum input length in tokens (default: the model's own, e.g. a sentence-transformers "
        "max_seq_length, else 512).",
    ),
    device: str = typer.Option("auto", "--device", help=f"{' | '.join(DEVICES_TEXT.split(', '))}."),
    dtype: str | None = typer.Option(
        None, "--dtype", help=f"{' | '.join(DTYPES)} (float16: GPU only), or auto; default: the checkpoint's."
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help=THREADS_HELP,
    ),
    quantize: Quantize = typer.Option(
        "none",
        "--quantize",
        help="int8: score through OpenVINO with int8 weights and activations (CPU only; monot5, "
        "cross-encoder, bi-encoder; float32 weights: --dtype auto means float32; the openvino extra).",
    ),
    option: list[str] = typer.Option(
        [], "--option", help="Family option KEY=VALUE, e.g. true_token=▁yes (repeatable)."
    ),
    tag: str = typer.Option("taskrank", "--tag", help="Run tag (last column of the TREC run)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    address: str | None = typer.Option(
        None,
        "--address",
        help=RAY_HELP + "the cluster to join ('auto', 'ray://host:10001'); none: start one.",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help=RAY_HELP + "workers (default: as many as the cluster's CPUs or GPUs allow).",
    ),
    cpus_per_worker: float = typer.Option(
        1.0, "--cpus-per-worker", help=RAY_HELP + "CPUs each worker takes."
    ),
    gpus_per_worker: float = typer.Option(
        0.0, "--gpus-per-worker", help=RAY_HELP + "GPUs each worker takes (0: CPU workers)."
    ),
) -> None:
    """Re-rank the top-k candidates of each query with a model of the given family."""
    from ..atomic import check_output
    from ..experiment.ray_data import RerankerSpec
    from ..rerankers.quantize import check_quantize

    check_quantize(quantize, kind)  # before the data is read
    options = parse_options(option)
    spec = RerankerSpec(model, kind, device, dtype, batch_size, max_length, max_tokens, options, quantize)
    execution = execution_settings(engine, address, workers, cpus_per_worker, gpus_per_worker)
    check_output(out, overwrite)
    run, data = load_candidates(dataset, split, candidates, top_k, quiet)
    start = time.perf_counter()
    if execution.engine == "ray":
        result, where = rerank_on_workers(run, data, spec, execution, top_k, threads, quiet, split)
    else:
        result, where = rerank_here(run, data, spec, top_k, threads, quiet, split)
    write_result(result, out, tag, time.perf_counter() - start, where, quiet)


def write_result(result: Run, out: Path, tag: str, seconds: float, where: str, quiet: bool) -> None:
    """Write the run (atomically) and say how many pairs were scored, how fast and where."""
    from ..data import write_run

    write_run(result, out, tag=tag)
    pairs = sum(len(docs) for docs in result.values())
    if not quiet:
        typer.echo(
            f"re-ranked {pairs} pairs of {len(result)} queries in {seconds:.1f}s "
            f"({pairs / max(seconds, 1e-9):.1f} pairs/s) on {where}; wrote {out}"
        )


def parse_options(texts: list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` (repeatable) as the family options."""
    return dict(parse_option(text) for text in texts)


def execution_settings(
    engine: str, address: str | None, workers: int | None, cpus: float, gpus: float
) -> ExecutionConfig:
    """The execution options as the config's checked section; ``--address`` means ``--engine ray``."""
    from pydantic import ValidationError

    from ..config import ExecutionConfig

    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine {engine!r}: valid engines are local and ray")
    values = {"engine": "ray" if address is not None else engine, "address": address, "workers": workers}
    try:
        return ExecutionConfig(**values, cpus_per_worker=cpus, gpus_per_worker=gpus)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "--" + str(error["loc"][0]).replace("_", "-")
        raise ConfigError(f"{name} {error.get('input')!r}: {error['msg']}") from None


def load_candidates(dataset: str, split: str, candidates: Path, top_k: int, quiet: bool) -> tuple[Run, Any]:
    """The split's dataset and its queries' candidates, every id checked before a model is loaded."""
    from ..data import load_beir, read_run
    from ..rerankers import select_candidates

    data = load_beir(dataset, split=split, progress=not quiet)
    run = restrict_to_split(read_run(candidates), data.queries, split, candidates)
    select_candidates(run, data.corpus, data.queries, top_k)
    return run, data


def rerank_here(
    run: Run, data: Any, spec: RerankerSpec, top_k: int, threads: int | None, quiet: bool, split: str
) -> tuple[Run, str]:
    """The local engine: the model in this process. Returns the run and where it was scored."""
    from ..rerankers.quantize import choose_scoring_dtype
    from ..threads import resolve_threads, torch_threads

    with torch_threads(resolve_threads(threads)) as used:
        reranker = spec.load()
        result = reranker.rerank(
            run, data.corpus, data.queries, top_k=top_k, progress=not quiet, label=f"{split} split"
        )
    dtype = choose_scoring_dtype(spec.dtype, spec.quantize or "none", reranker.device).describe()
    return result, f"{reranker.device}, {dtype}{quantized(spec)}, {used} CPU thread(s)"


def quantized(spec: RerankerSpec) -> str:
    """``", int8 (OpenVINO 2026.4.1, NNCF 3.4.0)"`` for the summary line; nothing without quantisation."""
    from ..rerankers.quantize import describe_quantize

    mode = spec.quantize or "none"
    return "" if mode == "none" else f", {describe_quantize(mode)}"


def rerank_on_workers(
    run: Run,
    data: Any,
    spec: RerankerSpec,
    execution: ExecutionConfig,
    top_k: int,
    threads: int | None,
    quiet: bool,
    split: str,
) -> tuple[Run, str]:
    """The Ray engine: the run streamed through Ray Data (:func:`..ray_data.rerank_on_ray`)."""
    from ..experiment.ray_data import rerank_on_ray

    result = rerank_on_ray(
        run,
        data.corpus,
        data.queries,
        spec,
        execution,
        top_k=top_k,
        threads=threads,
        progress=not quiet,
        label=f"{split} split",
    )
    where = f"Ray: {len(result.workers)} worker(s) ({', '.join(result.workers)}), {result.dtype}"
    return result.run, where + quantized(spec)


def register(app: typer.Typer) -> None:
    app.command("rerank")(rerank_command)
