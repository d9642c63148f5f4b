"""The runner: config → data → first stage → per system: model → re-rank → fuse → evaluate →
compare → report, with every expensive step in a content-addressed cache.

The pieces: the cached steps and their keys (:mod:`.steps`), one handler per system type
(:mod:`.systems`, shared with the dry run's :mod:`.plan`), the results as dataclasses
(:mod:`.results`), and the results folder (:mod:`.output`, :mod:`.folder`). The domain model,
when it is scored alone, is loaded once and released before the ranker is loaded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from ..config import AblationSystem, ExperimentConfig, SweepSystem
from ..errors import DataError
from ..threads import resolve_threads
from ..vocabulary import canonical_metric
from .cache import FingerprintMemo, StepCache
from .folder import check_output
from .models import ModelState, Scoring, resolve_scoring
from .output import RunWriter, results_folder, start_folder, write_metrics, write_results
from .preflight import Checkpoints, Data, Split, ablation_layers, load_data, resolve_checkpoints
from .results import (
    MeasuredRow,
    ResultsJson,
    SystemOutcome,
    SystemResult,
    VariantScores,
    results_dict,
    significance,
)
from .steps import PlannedStep, Run, Steps
from .systems import Handler, handlers, scored_first

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class RunStats(TypedDict):
    """How a run went: the output status, the step cache's hits and misses, the models loaded
    (by role, in order), the query-document pairs scored and the seconds it took."""

    status: str
    cache_hits: int
    cache_misses: int
    model_loads: list[str]
    pairs_scored: int
    seconds: float


@dataclass
class ExperimentResult:
    """What a run produced: the results folder, the report, the results dict and run statistics."""

    output: Path
    report: Path
    results: ResultsJson
    table: str
    stats: RunStats


class Experiment:
    """Runs (or plans) one experiment config.

    Example::

        from taskrank.config import load_config
        result = Experiment(load_config("configs/demo.yaml")).run()
        print(result.table)
    """

    def __init__(self, config: ExperimentConfig, *, overwrite: bool = False, progress: bool = True) -> None:
        self.config = config
        self.overwrite = overwrite
        self.progress = progress
        self.cache = StepCache(config.cache_path())
        self.memo = FingerprintMemo(self.cache.root / "fingerprints.json")
        self.out = config.output_path()
        self._steps: Steps | None = None
        self._device: torch.device | None = None

    # -- preparation (no heavy work) -----------------------------------------------------
    def prepare(self, *, download: bool = True) -> str:
        """Validate everything the config points at; returns the output status
        (``new``/``resume``/``overwrite``). Raises before any model is loaded or data is scored.
        With ``download=False`` hub checkpoints are looked up without fetching their weights."""
        from ..devices import resolve_device

        status = check_output(self.config, overwrite=self.overwrite)
        data = load_data(self.config, progress=self.progress)
        ckpts = resolve_checkpoints(self.config, self.memo, download=download)
        self._device = resolve_device(self.config.scoring.device)
        previous = self._steps
        self._steps = Steps(
            self.config,
            data,
            ckpts,
            self.cache,
            scoring=resolve_scoring(self.config, ckpts, self._device),
            device=self._device,
            threads=resolve_threads(self.config.scoring.threads),  # once: cgroup files read once
            progress=self.progress,
        )
        if previous is not None:  # prepared again (prepare(); rerank(); run()): its models are kept
            self._steps.take_models(previous)
        for i, system in enumerate(self.config.systems):
            if isinstance(system, AblationSystem):
                ablation_layers(system, ckpts.depth)  # unknown depth: an error now, not later
            if isinstance(system, SweepSystem) and system.select_on == "dev" and data.dev is None:
                raise DataError(
                    f"systems[{i}] ({system.name!r}) picks α on dev, but there are no dev queries"
                )
        return status

    @property
    def steps(self) -> Steps:
        """The experiment's cached steps, set up by :meth:`prepare`."""
        if self._steps is None:
            raise RuntimeError("call prepare() first")
        return self._steps

    @property
    def data(self) -> Data:
        return self.steps.data

    @property
    def ckpts(self) -> Checkpoints:
        return self.steps.ckpts

    @property
    def scoring(self) -> Scoring:
        """The scoring settings every system is scored with, resolved once by :meth:`prepare`."""
        if self._steps is None:
            raise RuntimeError("call prepare() first (and re-rank only with a 'models' section)")
        return self._steps.scoring

    @property
    def pairs_scored(self) -> int:
        return self._steps.pairs_scored if self._steps is not None else 0

    # -- the steps, for callers that want one of them ---------------------------------------
    def first_stage(self, split: Split) -> Run:
        """The first-stage candidates of ``split`` (cached), cut to ``first_stage.k``."""
        return self.steps.first_stage(split)

    def rerank(self, state: ModelState, split: Split) -> Run:
        """Model scores of the ``top_k`` candidates of ``split`` with the weights of ``state`` (cached)."""
        return self.steps.rerank(state, split)

    def weights(self, state: ModelState) -> tuple[tuple[float, float] | None, str]:
        """Fusion weights (first stage, model) of ``state`` and where they come from."""
        fusion = self.steps.weights(state)
        return fusion.weights, fusion.source

    def final_run(self, state: ModelState, split: Split) -> Run:
        """The run a system contributes: model scores fused with the first stage (or alone)."""
        return self.steps.final_run(state, split)

    def measure(self, run: Run, split: Split, metric: str | None = None) -> float:
        return self.steps.measure(run, split, metric)

    # -- planning ----------------------------------------------------------------------------
    def plan(self) -> list[PlannedStep]:
        """Every cacheable step, whether it is cached, and how many pairs it scores."""
        from .plan import plan_steps

        return plan_steps(self.steps)

    def plan_text(self, status: str) -> str:
        """The dry-run report: systems, cache state, pairs to score."""
        from .plan import plan_text

        return plan_text(self.steps, status)

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> ExperimentResult:
        """Run the experiment, resuming from the cache, and write the results folder.

        The folder is locked while the run writes it: a second run on it is refused with a
        :class:`ConfigError` naming the holder's pid."""
        started = time.time()
        self.prepare()
        with results_folder(self.config, self.cache.root, overwrite=self.overwrite) as status:
            return self._run(status, started)

    def _run(self, status: str, started: float) -> ExperimentResult:
        self.memo.flush()
        start_folder(self.config)
        log.info("experiment %s: %s output %s", self.config.name, status, self.out)
        try:
            self.steps.start_engine()
            results = self._compute()
        finally:
            self.steps.close()
        results["environment"] = self._environment()
        report = write_results(self.out, results, results["environment"], plots=self.config.report.plots)
        from ..report import results_table

        pool = self.steps.pool
        stats: RunStats = {
            "status": status,
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "model_loads": list(pool.loads) if pool is not None else [],
            "pairs_scored": self.pairs_scored,
            "seconds": round(time.time() - started, 2),
        }
        log.info("experiment done: %s", stats)
        return ExperimentResult(self.out, report, results, results_table(results), stats)

    def _environment(self) -> dict[str, object]:
        from ..environment import versions

        scoring = self.steps.resolved_scoring
        return {
            **versions(),
            "device": str(self._device),
            # as resolved (float32, bfloat16: never "auto") and why: "the default", "as asked",
            # "auto: the CPU has amx_bf16", …; none when no model scored anything
            "dtype": scoring.dtype if scoring is not None else None,
            "dtype_reason": scoring.dtype_reason if scoring is not None else "nothing was re-ranked",
            **self._quantize_record(),
            "seed": self.config.seed,
            # torch's intra-op threads while scoring (scoring.threads, else the cores this process may use)
            "threads": self.steps.threads,
            "engine": self.config.execution.engine,
        }

    def _quantize_record(self) -> dict[str, object]:
        """environment.json's ``quantize`` (none, or int8 with its OpenVINO and NNCF versions) and,
        with int8, ``int8_models``: the int8 model of each model state, the seconds it took and
        whether its IR came from the cache (on Ray: made on the workers, which log it; the driver
        knows no counts, so none are given)."""
        scoring = self.steps.resolved_scoring
        if scoring is None or scoring.quantize == "none":
            return {"quantize": "none"}
        if self.config.execution.engine != "local":
            return {"quantize": scoring.describe_quantize(), "int8_models": {"states": "on the Ray workers"}}
        pool = self.steps.pool
        conversions = list(pool.conversions) if pool is not None else []
        made = [c for c in conversions if not c["from_cache"]]
        return {
            "quantize": scoring.describe_quantize(),
            "int8_models": {
                "converted": len(made),
                "from_cache": len(conversions) - len(made),
                "seconds": round(sum(c["seconds"] for c in conversions), 3),
                "states": conversions,
            },
        }

    def _compute(self) -> ResultsJson:
        """Score every system, write its runs (each as soon as it is scored) and the metrics;
        returns ``results.json`` (no environment)."""
        steps = self.steps
        systems = handlers(steps)
        self._score_domain_first(systems)
        writer = RunWriter(self.out, [s.name for s in systems], steps.reported_variant())
        outcomes: list[SystemOutcome] = []
        rows: list[MeasuredRow] = []
        for handler in systems:
            steps.system_name = handler.name  # named on the progress bars of what it scores
            outcome = handler.compute(steps, writer.write_file)
            if outcome.row is not None:  # its test runs are written and measured now
                rows.append(self._measure(outcome.row, writer))
            outcomes.append(outcome)
        self._write_dev_runs(outcomes, writer)
        write_metrics(self.out, {row.result.name: row.per_query() for row in rows})
        table_runs = {row.result.name: _table_run(row) for row in rows}
        return results_dict(steps, rows, outcomes, significance(steps, table_runs))

    def _score_domain_first(self, systems: list[Handler]) -> None:
        """The domain model's systems first, so it is released before the ranker is loaded."""
        steps = self.steps
        for handler in scored_first(systems):
            steps.system_name = handler.name
            steps.final_run(handler.state(), steps.data.test)
        if steps.pool is not None:
            steps.pool.release_domain()

    def _measure(self, row: SystemResult, writer: RunWriter) -> MeasuredRow:
        """Write a row's test runs and measure every metric of each of them."""
        from ..evaluation import evaluate

        metrics, test = self.config.metrics, self.data.test
        scores: dict[str | None, VariantScores] = {}
        for variant, run in row.runs.items():
            writer.write("test", variant, row.name, None, run)
            evaluation = evaluate(run, test.qrels, metrics)
            scores[variant] = {
                "mean": {m: float(evaluation.mean[canonical_metric(m)]) for m in metrics},
                "per_query": {m: evaluation.per_query[canonical_metric(m)] for m in metrics},
            }
        return MeasuredRow(row, scores, self.steps.reported_variant())

    def _write_dev_runs(self, outcomes: list[SystemOutcome], writer: RunWriter) -> None:
        """The dev runs of the systems scored on dev (and the first stage's), when there are any."""
        steps, dev = self.steps, self.data.dev
        if dev is None or not any(o.row is not None and o.row.dev for o in outcomes):
            return
        for outcome in outcomes:
            row = outcome.row
            if row is None:
                continue
            if not row.has_variants:
                writer.write("dev", None, row.name, None, steps.first_stage(dev))
            elif row.dev and row.state is not None:
                for variant, run in steps.variant_runs(row.state, dev).items():
                    writer.write("dev", variant, row.name, None, run)


def _table_run(row: MeasuredRow) -> Run:
    """The run of a row the significance tests see: its reported variant (the first stage's one run)."""
    runs = row.result.runs
    return runs[None] if None in runs else runs[row.reported]


__all__ = ["Experiment", "ExperimentResult", "RunStats"]
