"""``taskrank run EXPERIMENT.yaml`` and ``taskrank demo``: thin wrappers over the experiment runner."""

from __future__ import annotations

from pathlib import Path

import typer


def _quiet_transformers() -> None:
    """taskrank draws its own progress bars; transformers' weight-loading bars would interleave."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        config: Path = typer.Argument(..., help="experiment YAML (see docs/config.md)"),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="validate, check data and checkpoints, print the plan; score nothing"
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="replace an output folder that holds a different experiment"
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
    ) -> None:
        """Run a whole experiment: BM25, re-ranking, task-arithmetic merges, fusion, significance, report."""
        from ..experiment import plan_experiment, run_experiment

        if dry_run:
            typer.echo(plan_experiment(config, overwrite=overwrite))
            return
        _quiet_transformers()
        result = run_experiment(config, overwrite=overwrite, progress=progress)
        typer.echo(result.table)
        typer.echo(f"\nreport: {result.report}")

    @app.command("demo")
    def demo_command(
        out: Path = typer.Option(Path("taskrank-demo"), "--out", help="folder for the models and results"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace results of a different demo"),
        quick: bool = typer.Option(False, "--quick", help="a smaller, faster variant (used by the tests)"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
    ) -> None:
        """The offline demo: tiny models built here, a bundled dataset, the whole experiment (~1 minute)."""
        from ..demo import QUICK, DemoSettings, run_demo
        from . import check_output

        check_output(out, overwrite, folder=True, existing_ok=True)
        _quiet_transformers()
        result = run_demo(
            out, settings=QUICK if quick else DemoSettings(), overwrite=overwrite, progress=progress
        )
        typer.echo(result.table)
        typer.echo(f"\nreport: {result.report}")
