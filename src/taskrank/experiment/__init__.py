"""Run a whole experiment from one validated config: ``taskrank run EXPERIMENT.yaml``.

    config → data → first stage (cached) → per system: model (merges in memory, one load for a
    whole α sweep) → re-rank (cached) → fuse → evaluate → compare → report

Example::

    from taskrank.experiment import run_experiment
    result = run_experiment("configs/paper/scifact-t5-base.yaml")
    print(result.table)
    print(result.report)  # results/scifact-t5-base/report.md
"""

from __future__ import annotations

import os

from ..config import ExperimentConfig, load_config
from .cache import FingerprintMemo, StepCache, digest
from .models import ModelState
from .output import slug
from .preflight import check_output, load_data, model_depth
from .runner import Experiment, ExperimentResult
from .steps import PlannedStep


def _as_config(config: ExperimentConfig | str | os.PathLike[str]) -> ExperimentConfig:
    return config if isinstance(config, ExperimentConfig) else load_config(config)


def run_experiment(
    config: ExperimentConfig | str | os.PathLike[str], *, overwrite: bool = False, progress: bool = True
) -> ExperimentResult:
    """Run an experiment (a config object or a YAML path); finished steps are taken from the cache.

    Example::

        result = run_experiment("configs/demo.yaml")
        print(result.report)
    """
    return Experiment(_as_config(config), overwrite=overwrite, progress=progress).run()


def plan_experiment(
    config: ExperimentConfig | str | os.PathLike[str], *, overwrite: bool = False, progress: bool = False
) -> str:
    """The dry run: validate everything, and describe the systems, what is cached and how many
    pairs each step will score, without scoring anything.

    Example::

        print(plan_experiment("configs/paper/scifact-t5-base.yaml"))
    """
    experiment = Experiment(_as_config(config), overwrite=overwrite, progress=progress)
    status = experiment.prepare(download=False)
    return experiment.plan_text(status)


__all__ = [
    "Experiment",
    "ExperimentResult",
    "FingerprintMemo",
    "ModelState",
    "PlannedStep",
    "StepCache",
    "check_output",
    "digest",
    "load_data",
    "model_depth",
    "plan_experiment",
    "run_experiment",
    "slug",
]
