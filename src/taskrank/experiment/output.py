"""What a run writes into its results folder, in this order: the marker and the config; each
system's runs as it is scored (a sweep's α and an ablation's layer runs one by one, a table row's
test runs when its system finishes); the dev runs of the rows scored on dev once every system has
run; then ``metrics/test.json`` (every row's means and per-query values), ``environment.json``,
``results.json`` and the report.

The folder's ownership (its manifest, what ``--overwrite`` may delete) is
:mod:`taskrank.experiment.folder`'s.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..atomic import remove_stale_temporaries, write_json, write_text
from ..config import ExperimentConfig, dump_config
from ..errors import ConfigError
from ..locking import lock_folder
from .folder import EXPERIMENT_FILE, bookkeeping, check_output, clear_output, record_outputs
from .results import ResultsJson, RunFile
from .steps import Run

MODEL_FOLDER = "model"
"""``runs/<split>/model/``: the model-alone runs of systems whose reported runs are fused."""


def slug(name: str) -> str:
    """A file name for a system name.

    >>> slug("TA α=0.7 (dev)")
    'TA_α=0.7_dev'
    """
    text = re.sub(r"[^\w.=@+-]+", "_", name, flags=re.UNICODE).strip("_.")
    return text or "system"


def unique_slugs(names: list[str], reserved: set[str] | None = None) -> dict[str, str]:
    """A distinct file name per system name (case-insensitively), none of them in ``reserved``."""
    out: dict[str, str] = {}
    used: set[str] = {r.lower() for r in reserved or ()}
    for name in names:
        base = slug(name)
        candidate, i = base, 2
        while candidate.lower() in used:
            candidate, i = f"{base}-{i}", i + 1
        used.add(candidate.lower())
        out[name] = candidate
    return out


class RunWriter:
    """Writes the runs of the systems under ``runs/<split>/``, one file name per system."""

    def __init__(self, out: Path, systems: list[str], reported_variant: str) -> None:
        self.out = out
        # the runs/<split>/model/ folder holds the model-alone runs: no system's runs may take it
        self.slugs = unique_slugs(systems, reserved={MODEL_FOLDER})
        self.reported_variant = reported_variant

    def write(self, split: str, variant: str | None, system: str, stem: str | None, run: Run) -> None:
        """Write ``runs/<split>/<system>.trec`` (``<system>/<stem>.trec`` for a sweep's α or an
        ablation's variant); the model-alone run of a fused system goes under ``runs/<split>/model/``."""
        from ..data import write_run

        name = self.slugs[system]
        folder = self.out / "runs" / split
        tag = name if stem is None else f"{name}.{stem}"
        if variant == "model" and self.reported_variant != "model":
            folder, tag = folder / MODEL_FOLDER, f"{tag}.model"
        write_run(run, folder / f"{name}.trec" if stem is None else folder / name / f"{stem}.trec", tag=tag)

    def write_file(self, file: RunFile) -> None:
        self.write(file.split, file.variant, file.system, file.stem, file.run)


@contextlib.contextmanager
def results_folder(config: ExperimentConfig, cache_root: Path, *, overwrite: bool) -> Iterator[str]:
    """Hold the results folder for the block: locked against other runs, checked again under
    the lock (it may have changed since ``prepare()``), cleared with ``overwrite`` (only what
    its manifest lists), with every file written into it listed in the manifest first.
    Yields the output status."""
    out = config.output_path()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output {out}: cannot create it ({exc.strerror})") from exc
    with lock_folder(out, "output"):
        status = check_output(config, overwrite=overwrite)
        remove_stale_temporaries(out)  # temporaries of killed runs of this host
        if not cache_root.resolve().is_relative_to(out.resolve()):
            remove_stale_temporaries(cache_root)
        if status == "overwrite":
            clear_output(config)
        with record_outputs(out, bookkeeping(config)):
            yield status


def start_folder(config: ExperimentConfig) -> None:
    """The marker first (a run killed right after it is still recognised and resumed), then the config."""
    out = config.output_path()
    write_json(out / EXPERIMENT_FILE, {"name": config.name, "fingerprint": config.fingerprint()})
    write_text(out / "config.yaml", dump_config(config))


def write_metrics(out: Path, per_query: Mapping[str, object]) -> None:
    """``metrics/test.json``: every row's means and per-query values, by system name."""
    write_json(out / "metrics" / "test.json", per_query)


def write_results(out: Path, results: ResultsJson, environment: Mapping[str, object], *, plots: bool) -> Path:
    """``environment.json``, ``results.json`` and the report; returns the report's path."""
    write_json(out / "environment.json", environment)
    write_json(out / "results.json", results)
    from .. import report  # looked up now: the report is replaceable (tests fail it on purpose)

    return report.write_report(results, out, plots=plots)


__all__ = [
    "MODEL_FOLDER",
    "RunWriter",
    "results_folder",
    "slug",
    "start_folder",
    "unique_slugs",
    "write_metrics",
    "write_results",
]
