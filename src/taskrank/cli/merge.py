"""``taskrank merge``: θ_ranker + α·(θ_domain − θ_pretrained) written as a model directory."""

from __future__ import annotations

from pathlib import Path

import typer

from ..vocabulary import DTYPES, MODES, VOCAB_POLICIES


def merge_command(
    ranker: str = typer.Option(
        ..., "--ranker", "-r", help="The IR fine-tune (base of the merge): directory or hub id."
    ),
    domain: str = typer.Option(..., "--domain", "-d", help="The domain fine-tune: directory or hub id."),
    pretrained: str = typer.Option(
        ..., "--pretrained", "-p", help="The common base model: directory or hub id."
    ),
    alpha: float = typer.Option(
        ..., "--alpha", "-a", help="Scale of the domain vector (finite; may be negative)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (written atomically)."),
    layers: str | None = typer.Option(None, "--layers", help="Layer indices and ranges, e.g. 0-3,11."),
    mode: str = typer.Option("only", "--mode", help=f"With --layers: {' | '.join(MODES)}."),
    include: list[str] = typer.Option([], "--include", help="Glob on tensor names to include (repeatable)."),
    exclude: list[str] = typer.Option([], "--exclude", help="Glob on tensor names to exclude (repeatable)."),
    vocab_policy: str = typer.Option("strict", "--vocab-policy", help=f"{' | '.join(VOCAB_POLICIES)}."),
    dtype: str | None = typer.Option(
        None, "--dtype", help=f"Output dtype: {' | '.join(DTYPES)} (default: the ranker's)."
    ),
    max_shard_size: str = typer.Option("2GB", "--max-shard-size", help="Largest safetensors shard."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or report."),
) -> None:
    """Merge a ranker with a domain task vector: θ_ranker + α·(θ_domain − θ_pretrained)."""
    # Hash the local inputs for the model card while torch loads (none of this imports torch).
    from ..atomic import check_output
    from ..checkpoints.hashing import read_ahead

    check_output(out, overwrite, folder=True)
    read_ahead(f for ref in (ranker, domain, pretrained) for f in _local_weight_files(ref))
    from ..arithmetic import merge

    result = merge(
        ranker,
        domain,
        pretrained,
        alpha,
        layers=layers,
        mode=mode,
        include=include,
        exclude=exclude,
        vocab_policy=vocab_policy,
        dtype=dtype,
        out=out,
        overwrite=overwrite,
        max_shard_size=max_shard_size,
        progress=not quiet,
    )
    if not quiet:
        typer.echo(result.report.summary())
        for line in result.report.details():
            typer.echo(f"  {line}")
        typer.echo(f"wrote {result.path} (model card: {result.path}/README.md)")


def _local_weight_files(ref: str) -> list[Path]:
    """The weight files of a local checkpoint folder outside the hub cache (whose snapshots are
    recorded by revision, not hashed); none for a hub id or a folder without weights."""
    from ..checkpoints.layout import in_hub_cache, weight_files
    from ..errors import CheckpointError

    path = Path(ref).expanduser()
    if not path.is_dir() or in_hub_cache(path):
        return []
    try:
        return weight_files(path)[1]
    except CheckpointError:
        return []  # the merge itself reports the folder's problem, with its context


def register(app: typer.Typer) -> None:
    app.command("merge")(merge_command)
