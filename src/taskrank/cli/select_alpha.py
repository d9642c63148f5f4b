"""``taskrank select-alpha``: choose α for a collection that has no relevance labels."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import ConfigError, DataError
from ..vocabulary import DEFAULT_LABEL_FREE_STRATEGY, DEVICES_TEXT, SCORING_DTYPES, Kind, LabelFreeStrategy


def parse_alphas(text: str) -> list[float]:
    """``"0,0.25,0.5"`` → ``[0.0, 0.25, 0.5]`` (a :class:`ConfigError` naming a bad value)."""
    values = []
    for part in text.split(","):
        try:
            values.append(float(part))
        except ValueError:
            raise ConfigError(f"--alphas: {part.strip()!r} is not a number (give e.g. 0,0.25,0.5)") from None
    return values


def select_alpha_command(
    ranker: str = typer.Option(..., "--ranker", help="θ_ranker: directory or hub id."),
    domain: str = typer.Option(..., "--domain", help="θ_domain: directory or hub id."),
    pretrained: str = typer.Option(..., "--pretrained", help="θ_pretrained: directory or hub id."),
    kind: Kind = typer.Option(..., "--kind", "-k", help="Scoring family of the ranker."),
    data: Path = typer.Option(
        ...,
        "--data",
        "-d",
        help="BEIR folder (corpus.jsonl, queries.jsonl; its qrels are never read) or a corpus file.",
    ),
    queries: Path | None = typer.Option(
        None, "--queries", help="The target queries (default: the folder's queries.jsonl)."
    ),
    alphas: str = typer.Option("0,0.25,0.5,0.75,1", "--alphas", help="α values, comma-separated."),
    strategy: LabelFreeStrategy = typer.Option(
        DEFAULT_LABEL_FREE_STRATEGY, "--strategy", help="The strategy that decides (all are reported)."
    ),
    guard: float = typer.Option(
        0.05,
        "--guard",
        max=1.0,
        help="p-value under which an α ≠ 0 must beat α = 0 to be chosen (1: no guard).",
    ),
    pseudo_queries: int = typer.Option(
        200, "--pseudo-queries", min=0, help="Pseudo-queries cut from the corpus."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the documents the pseudo-queries are cut from."),
    k: int = typer.Option(100, "--k", min=1, help="BM25 candidates per query."),
    top_k: int = typer.Option(100, "--top-k", min=1, help="Candidates re-ranked per query."),
    device: str = typer.Option("auto", "--device", help=f"{' | '.join(DEVICES_TEXT.split(', '))}."),
    dtype: str | None = typer.Option(
        None,
        "--dtype",
        help=f"{' | '.join(SCORING_DTYPES)} (auto: bfloat16 on a GPU or a CPU with AMX or avx512_bf16, "
        "else float32; default: float32).",
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Pairs per forward pass."),
    max_length: int | None = typer.Option(None, "--max-length", help="Maximum input length in tokens."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads torch scores with."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the choice and every signal as JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; print only the chosen α."),
) -> None:
    """Choose α from the corpus and the queries alone (no relevance labels): every strategy's
    signal per α, the deciding strategy's choice, and whether to apply the domain vector at all."""
    from ..atomic import atomic_file, check_output
    from ..labelfree import read_target, select_alpha
    from ..threads import resolve_threads, torch_threads

    values = parse_alphas(alphas)
    if guard <= 0:
        raise ConfigError(f"--guard {guard:g} would never apply the vector: give a p-value in (0, 1]")
    if out is not None:
        check_output(out, overwrite)
    corpus, target = read_target(data, queries)
    with torch_threads(resolve_threads(threads)):
        try:
            choice = select_alpha(
                ranker, domain, pretrained, corpus, target, kind=kind, alphas=values, strategy=strategy,
                guard=None if guard >= 1 else guard, pseudo_queries=pseudo_queries, seed=seed, k=k,
                top_k=top_k, device=device, dtype=dtype, batch_size=batch_size, max_length=max_length,
                progress=not quiet,
            )  # fmt: skip
        except DataError as exc:  # name the data the problem is in
            raise DataError(f"--data {data}: {exc}") from exc
    if out is not None:
        with atomic_file(out, "w") as handle:
            json.dump({"alphas": values, **choice.record()}, handle, indent=2, ensure_ascii=False)
    if quiet:
        typer.echo(f"{choice.alpha:g}")
        return
    head = "  ".join(f"{f'α={a:g}':>7}" for a in choice.alphas)
    typer.echo(f"{'signal per α':>15}  {head}  (no relevance label read; higher: ranks better)")
    for name, outcome in choice.outcomes.items():
        signal = "  ".join(f"{'–':>7}" if v is None else f"{v:7.4f}" for v in outcome.signal)
        chosen = "–" if outcome.alpha is None else f"{outcome.alpha:g}"
        typer.echo(f"{name:>15}  {signal}  → α = {chosen}{'  (decides)' if name == strategy else ''}")
    typer.echo(f"α = {choice.alpha:g}: {choice.words()}" + (f"; wrote {out}" if out else ""))


def register(app: typer.Typer) -> None:
    app.command("select-alpha")(select_alpha_command)
