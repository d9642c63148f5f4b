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
from ..vocabulary import DEVICES_TEXT, DTYPES, Kind

if TYPE_CHECKING:
    from ..data import Run

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
        help="CPU threads torch scores with (default: $OMP_NUM_THREADS when set, else the cores this "
        "process may use: CPU affinity and cgroup quota, not the host's count).",
    ),
    option: list[str] = typer.Option(
        [], "--option", help="Family option KEY=VALUE, e.g. true_token=▁yes (repeatable)."
    ),
    tag: str = typer.Option("taskrank", "--tag", help="Run tag (last column of the TREC run)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Re-rank the top-k candidates of each query with a model of the given family."""
    from ..atomic import check_output
    from ..data import load_beir, read_run, write_run
    from ..rerankers import load_reranker, select_candidates
    from ..threads import resolve_threads, torch_threads

    options: dict[str, Any] = dict(parse_option(text) for text in option)  # family options
    check_output(out, overwrite)
    data = load_beir(dataset, split=split, progress=not quiet)
    run = restrict_to_split(read_run(candidates), data.queries, split, candidates)
    # every id is checked before the model is loaded
    select_candidates(run, data.corpus, data.queries, top_k)
    with torch_threads(resolve_threads(threads)) as used:
        reranker = load_reranker(
            model,
            kind,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            max_length=max_length,
            max_tokens=max_tokens,
            **options,
        )
        start = time.perf_counter()
        result = reranker.rerank(
            run, data.corpus, data.queries, top_k=top_k, progress=not quiet, label=f"{split} split"
        )
        seconds = time.perf_counter() - start
    write_run(result, out, tag=tag)
    pairs = sum(len(docs) for docs in result.values())
    if not quiet:
        typer.echo(
            f"re-ranked {pairs} pairs of {len(result)} queries in {seconds:.1f}s "
            f"({pairs / max(seconds, 1e-9):.1f} pairs/s) on {reranker.device}, {used} CPU thread(s); "
            f"wrote {out}"
        )


def register(app: typer.Typer) -> None:
    app.command("rerank")(rerank_command)
