"""``taskrank merge``: θ_ranker + α·(θ_domain − θ_pretrained) written as a model directory."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..arithmetic.options import DTYPE_NAMES, MODES, VOCAB_POLICIES


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
        None, "--dtype", help=f"Output dtype: {' | '.join(DTYPE_NAMES)} (default: the ranker's)."
    ),
    max_shard_size: str = typer.Option("2GB", "--max-shard-size", help="Largest safetensors shard."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or report."),
) -> None:
    """Merge a ranker with a domain task vector: θ_ranker + α·(θ_domain − θ_pretrained)."""
    # Hash the local inputs for the model card while torch loads (none of this imports torch).
    from ..checkpoints.hashing import read_ahead
    from . import check_output

    check_output(out, overwrite, folder=True)
    read_ahead(f for ref in (ranker, domain, pretrained) for f in _local_weight_files(ref))
    merge = _import_engine()
    result = merge(
        ranker,
        domain,
        pretrained,
        alpha,
        layers=layers,
        mode=mode,
        include=include,
        exclude=exclude,
        vocab_policy=vocab_policy,  # type: ignore[arg-type]
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


def _import_engine() -> Callable[..., Any]:
    """:func:`taskrank.merge`, imported. In a fresh process this loads torch (and numpy), about
    0.9 s of one core, while the read-ahead and hashing processes want the other cores:

    - the garbage collector is paused for the import, whose objects all live on anyway (0.1 s
      saved on the development machine), and they are then frozen out of later collections;
    - numpy's OpenBLAS, unless told otherwise, starts no worker threads: they would spin for
      about 0.1 s after loading, and a merge never calls BLAS.

    Where torch is loaded already (another command, a test, a notebook), nothing is changed."""
    if "torch" not in sys.modules:
        if "numpy" not in sys.modules:
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        collecting = gc.isenabled()
        gc.disable()
        try:
            from ..arithmetic import merge
        finally:
            if collecting:
                gc.enable()
        gc.freeze()
    from ..arithmetic import merge

    return merge


def _local_weight_files(ref: str) -> list[Path]:
    """The weight files of a local checkpoint folder outside the hub cache (whose snapshots are
    recorded by revision, not hashed); none for a hub id or a folder without weights."""
    from ..checkpoints.layout import _in_hub_cache, weight_files
    from ..errors import CheckpointError

    path = Path(ref).expanduser()
    if not path.is_dir() or _in_hub_cache(path):
        return []
    try:
        return weight_files(path)[1]
    except CheckpointError:
        return []  # the merge itself reports the folder's problem, with its context


def register(app: typer.Typer) -> None:
    app.command("merge")(merge_command)
