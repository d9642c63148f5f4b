"""``taskrank adapt``: continue pre-training θ_pretrained on a target corpus to make θ_domain."""

from __future__ import annotations

from pathlib import Path

import typer

from ..vocabulary import DEVICES_TEXT, TRAINING_DTYPES, Objective

_OBJECTIVE_HELP = (
    "Training objective. auto: contrastive for a sentence-transformers folder (a bi-encoder), "
    "else what the architecture calls for (mlm, span-corruption, causal-lm)."
)


def adapt_command(
    pretrained: str = typer.Option(..., "--pretrained", "-p", help="θ_pretrained: directory or hub id."),
    corpus: list[Path] = typer.Option(
        ...,
        "--corpus",
        "-c",
        help="BEIR corpus.jsonl or folder, JSONL of {'text': ...}, .txt files or a folder (repeatable).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output checkpoint directory (written when training ends)."
    ),
    objective: Objective = typer.Option("auto", "--objective", help=_OBJECTIVE_HELP),
    steps: int = typer.Option(200, "--steps", help="Optimizer steps."),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate of AdamW (linear warm-up and decay)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Windows per micro-batch."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    max_length: int = typer.Option(
        128, "--max-length", help="Tokens per training window, special tokens included."
    ),
    warmup_ratio: float = typer.Option(0.1, "--warmup-ratio", help="Share of the steps spent warming up."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice (data order, masking, dropout)."),
    save_every: int = typer.Option(
        100, "--save-every", help="Checkpoint every N steps into OUT.partial/ (0: never)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the newest checkpoint in OUT.partial/."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT and discard an interrupted run."),
    skip_empty: bool = typer.Option(
        False, "--skip-empty", help="Skip documents with no text instead of failing."
    ),
    device: str = typer.Option("auto", "--device", help=f"{' | '.join(DEVICES_TEXT.split(', '))}."),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help=f"Training precision: {' | '.join(TRAINING_DTYPES)} (auto: bfloat16 on a capable GPU).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Make a domain checkpoint from an unlabeled corpus (MLM, T5 span corruption, next-token LM, or for a
    bi-encoder contrastive cropping or TSDAE)."""
    from ..adapt import adapt
    from ..atomic import check_output
    from . import Interrupted

    check_output(out, overwrite, folder=True)
    try:
        result = adapt(
            pretrained,
            corpus,
            out,
            objective=objective,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            grad_accum=grad_accum,
            max_length=max_length,
            warmup_ratio=warmup_ratio,
            seed=seed,
            save_every=save_every,
            device=device,
            dtype=dtype,
            skip_empty=skip_empty,
            overwrite=overwrite,
            resume=resume,
            progress=not quiet,
        )
    except KeyboardInterrupt:
        raise Interrupted(resume_hint(out, save_every)) from None
    if not quiet:
        typer.echo(
            f"objective {result.objective}: {result.objective_reason}\n"
            f"{result.objective} on {result.corpus_docs} documents ({result.examples} windows), "
            f"{result.steps} steps, final loss {result.final_loss:.4f}\n"
            f"wrote {result.path} (use it as --domain of taskrank merge)"
        )


def resume_hint(out: Path, save_every: int) -> str:
    """How to go on after an interrupted ``taskrank adapt`` into ``out``."""
    from ..adapt import latest_checkpoint, work_dir

    work = work_dir(out)
    newest = latest_checkpoint(work) if work.is_dir() else None
    if newest is not None:
        step = int(newest.name.removeprefix("checkpoint-"))
        return f"checkpoint of step {step} in {newest}; run the same command with --resume to continue"
    if work.exists():
        return f"no checkpoint was saved yet; run the same command with --overwrite to start again ({work})"
    every = f"one every {save_every} steps" if save_every else "--save-every 0"
    return f"no checkpoint was saved yet ({every}); run the same command to start again"


def register(app: typer.Typer) -> None:
    app.command("adapt")(adapt_command)
