"""``taskrank run EXPERIMENT.yaml`` and ``taskrank demo``: thin wrappers over the experiment runner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ..config import ExperimentConfig

THREADS_HELP = (
    "CPU threads torch scores with (default: scoring.threads of the config, else $OMP_NUM_THREADS "
    "when set, else the cores this process may use: CPU affinity and cgroup quota)."
)


def _quiet_transformers() -> None:
    """taskrank draws its own progress bars; transformers' weight-loading bars would interleave."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def with_execution(experiment: ExperimentConfig, engine: str | None, address: str | None) -> ExperimentConfig:
    """``experiment`` with ``--engine`` and ``--address`` in its execution section (checked by the schema)."""
    from pydantic import ValidationError

    from ..config import ExecutionConfig
    from ..errors import ConfigError

    values = experiment.execution.model_dump()
    if engine is not None:
        values["engine"] = engine
    if address is not None:
        values["address"] = address
        values["engine"] = engine or "ray"
    try:
        execution = ExecutionConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"--engine {engine!r}: valid engines are local and ray") from exc
    return experiment.model_copy(update={"execution": execution})


def with_quantize(experiment: ExperimentConfig, quantize: str) -> ExperimentConfig:
    """``experiment`` with ``scoring.quantize`` set to ``--quantize`` and validated again (a kind,
    dtype or device int8 cannot serve is refused). Unlike ``--threads`` it changes the scores: the
    results folder's ``config.yaml`` records it, and it is part of the experiment's fingerprint."""
    from ..config import parse_config

    data = experiment.model_dump(mode="json")
    data["scoring"]["quantize"] = quantize.strip().lower()
    return parse_config(data, f"{experiment.name!r} with --quantize {quantize}")


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
        threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
        engine: str | None = typer.Option(
            None, "--engine", help="local | ray: where the re-ranking steps run (default: the config's)"
        ),
        address: str | None = typer.Option(
            None, "--address", help="Ray cluster to join with --engine ray ('auto', 'ray://host:10001')"
        ),
        quantize: str | None = typer.Option(
            None,
            "--quantize",
            help="none | int8: scoring.quantize for this run (default: the config's); int8 changes the "
            "scores, so the results folder's config records it",
        ),
    ) -> None:
        """Run a whole experiment: BM25, re-ranking, task-arithmetic merges, fusion, significance, report."""
        from ..config import load_config
        from ..experiment import plan_experiment, run_experiment

        experiment = load_config(config)
        if quantize is not None:  # the plan's keys too: int8 steps are cached under their own
            experiment = with_quantize(experiment, quantize)
        if dry_run:
            typer.echo(plan_experiment(experiment, overwrite=overwrite))
            return
        _quiet_transformers()
        if threads is not None:  # a machine setting: not part of the experiment's fingerprint
            scoring = experiment.scoring.model_copy(update={"threads": threads})
            experiment = experiment.model_copy(update={"scoring": scoring})
        if engine is not None or address is not None:  # machine settings: not in the fingerprint
            experiment = with_execution(experiment, engine, address)
        result = run_experiment(experiment, overwrite=overwrite, progress=progress)
        typer.echo(result.table)
        typer.echo(f"\nreport: {result.report}")

    @app.command("demo")
    def demo_command(
        out: Path = typer.Option(Path("taskrank-demo"), "--out", help="folder for the models and results"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace results of a different demo"),
        quick: bool = typer.Option(False, "--quick", help="a smaller, faster variant (used by the tests)"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
        threads: int = typer.Option(
            1,
            "--threads",
            min=1,
            help="CPU threads torch trains and scores with (the demo's models are so small that more "
            "threads mostly wait on each other).",
        ),
    ) -> None:
        """The offline demo: tiny models built here, a bundled dataset, the whole experiment
        (about 37 s on 2 CPU cores, the first run included; 5.5 s again from its cache)."""
        from ..atomic import check_output

        check_output(out, overwrite, folder=True, existing_ok=True)
        if progress:  # before the imports (a few seconds): the first thing a newcomer sees
            typer.echo(f"» taskrank demo: tiny models and results in {out}", err=True)
        from ..demo import QUICK, DemoSettings, run_demo

        _quiet_transformers()
        result = run_demo(
            out,
            settings=QUICK if quick else DemoSettings(),
            overwrite=overwrite,
            progress=progress,
            threads=threads,
        )
        typer.echo(result.table)
        typer.echo(f"\nreport: {result.report}")
