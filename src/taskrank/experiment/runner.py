"""The runner: config → data → first stage → per system: model → re-rank → fuse → evaluate →
compare → report, with every expensive step in a content-addressed cache.

One model is loaded for all ranker-family systems (the ranker alone, merges, sweeps, ablations):
the α updates are made in place with :class:`taskrank.arithmetic.AlphaSweep`, so a whole sweep
costs one load. The domain model, when it is scored alone, is loaded once and released before
the ranker is loaded.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import remove_stale_temporaries, write_json, write_text
from ..config import (
    AblationSystem,
    DomainSystem,
    ExperimentConfig,
    FirstStageSystem,
    RankerSystem,
    SweepSystem,
    dump_config,
)
from ..errors import ConfigError, DataError
from ..locking import lock_folder
from .cache import FingerprintMemo, StepCache, digest
from .folder import EXPERIMENT_FILE, check_output, clear_output, record_outputs
from .models import ModelPool, ModelState, Scoring, resolve_scoring
from .preflight import (
    Checkpoints,
    Data,
    Split,
    ablation_layers,
    load_data,
    resolve_checkpoints,
)

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]


# --------------------------------------------------------------------------- helpers


def top_k(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    """The ``k`` best-scored documents of each query (ties broken by document id)."""
    out: Run = {}
    for qid, docs in run.items():
        ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))[:k]
        out[qid] = dict(ranked)
    return out


def slug(name: str) -> str:
    """A file name for a system name.

    >>> slug("TA α=0.7 (dev)")
    'TA_α=0.7_dev'
    """
    text = re.sub(r"[^\w.=@+-]+", "_", name, flags=re.UNICODE).strip("_.")
    return text or "system"


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from .. import __version__

    return {
        "taskrank": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class ExperimentResult:
    """What a run produced: the results folder, the report, the results dict and run statistics."""

    output: Path
    report: Path
    results: dict[str, Any]
    table: str
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class PlannedStep:
    """One cacheable step of a plan."""

    step: str  # "bm25" or "rerank"
    label: str
    cached: bool | None  # None: not known before earlier steps run
    pairs: int | None
    exact: bool = True


# --------------------------------------------------------------------------- the runner


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
        self.notes: list[str] = []
        self.pairs_scored = 0
        self._fs: dict[str, tuple[Run, str]] = {}
        self._fs_keys: dict[str, str] = {}
        self._weights: dict[ModelState, tuple[tuple[float, float] | None, str]] = {}
        self._pool: ModelPool | None = None
        self._data: Data | None = None
        self._ckpts: Checkpoints | None = None
        self._device: Any = None
        self._scoring: Scoring | None = None
        self._extra_runs: list[tuple[str, str, Run]] = []  # (system, file stem, run) of sweeps/ablations

    # -- preparation (no heavy work) -----------------------------------------------------
    def prepare(self, *, download: bool = True) -> str:
        """Validate everything the config points at; returns the output status
        (``new``/``resume``/``overwrite``). Raises before any model is loaded or data is scored.
        With ``download=False`` hub checkpoints are looked up without fetching their weights."""
        from ..rerankers.base import resolve_device

        status = check_output(self.config, overwrite=self.overwrite)
        self._data = load_data(self.config, progress=self.progress)
        self._ckpts = resolve_checkpoints(self.config, self.memo, download=download)
        self._device = resolve_device(self.config.scoring.device)
        self._scoring = resolve_scoring(self.config, self._ckpts)
        for i, system in enumerate(self.config.systems):
            if isinstance(system, AblationSystem):
                ablation_layers(system, self._ckpts.depth)  # unknown depth: an error now, not later
            if isinstance(system, SweepSystem) and system.select_on == "dev" and self._data.dev is None:
                raise DataError(
                    f"systems[{i}] ({system.name!r}) picks α on dev, but there are no dev queries"
                )
        return status

    @property
    def data(self) -> Data:
        if self._data is None:
            raise RuntimeError("call prepare() first")
        return self._data

    @property
    def ckpts(self) -> Checkpoints:
        if self._ckpts is None:
            raise RuntimeError("call prepare() first")
        return self._ckpts

    # -- keys --------------------------------------------------------------------------------
    def _fs_inputs(self, split: Split) -> dict[str, Any]:
        fs = self.config.first_stage
        if fs.kind == "bm25":
            from ..retrieval import bm25_params

            return {
                "corpus": self.data.corpus_digest,
                "queries": split.digest,
                "k": fs.k,
                "bm25": bm25_params(fs.language, fs.k1, fs.b),
            }
        run = self._read_run_file(split)
        return {"run": digest(run), "queries": split.digest, "k": fs.k}

    def _fs_key(self, split: Split) -> str:
        if split.role not in self._fs_keys:  # computed once: a run file is read and hashed once
            self._fs_keys[split.role] = self.cache.key("first-stage", self._fs_inputs(split))
        return self._fs_keys[split.role]

    def _model_id(self, state: ModelState) -> dict[str, Any]:
        fp = self.ckpts.fingerprints
        models = self.config.trio()
        if state.role == "domain":
            return {"domain": fp["domain"]}
        if state.role == "ranker":
            return {"ranker": fp["ranker"]}
        return {
            "ranker": fp["ranker"],
            "domain": fp["domain"],
            "pretrained": fp["pretrained"],
            "alpha": state.alpha,
            "layers": list(state.layers) if state.layers is not None else None,
            "mode": state.mode,
            "vocab_policy": models.vocab_policy,
        }

    @property
    def scoring(self) -> Scoring:
        """The scoring settings every system is scored with, resolved once by :meth:`prepare`."""
        if self._scoring is None:
            raise RuntimeError("call prepare() first (and re-rank only with a 'models' section)")
        return self._scoring

    def _scoring_id(self, state: ModelState) -> dict[str, Any]:
        # the resolved settings, not the config's: a changed default of the ranker's folder
        # (its max_seq_length, pooling…) makes new keys
        settings = self.scoring.of(state.role)
        return {
            "kind": settings.kind,
            "options": dict(sorted(settings.options.items())),
            "tokenizer": None if state.role == "domain" else self.config.trio().tokenizer,
            "max_length": settings.max_length,
            "top_k": self.scoring.top_k,
            "dtype": self.scoring.dtype,
            "device": self._device.type if self._device is not None else None,
        }

    def _rerank_inputs(self, state: ModelState, split: Split) -> dict[str, Any]:
        return {
            "model": self._model_id(state),
            "scoring": self._scoring_id(state),
            "candidates": self._fs_key(split),
            "corpus": self.data.corpus_digest,
            "queries": split.digest,
        }

    # -- steps -------------------------------------------------------------------------------
    def _read_run_file(self, split: Split) -> Run:
        from ..data import read_run

        fs = self.config.first_stage
        file = fs.run if split.role == "test" else fs.dev_run
        run = read_run(file)
        missing = [q for q in split.queries if q not in run]
        if missing:
            raise DataError(
                f"first-stage run {file} has no candidates for {len(missing)} {split.role} queries "
                f"(e.g. {missing[0]!r})"
            )
        return {q: run[q] for q in split.queries}

    def first_stage(self, split: Split) -> Run:
        """The first-stage candidates of ``split`` (cached), cut to ``first_stage.k``."""
        if split.role in self._fs:
            return self._fs[split.role][0]
        fs = self.config.first_stage
        inputs = self._fs_inputs(split)
        key = self._fs_key(split)
        run = self.cache.get("first-stage", key)
        if run is None:
            if fs.kind == "bm25":
                from ..retrieval import bm25_search

                log.info(
                    "BM25 over %d documents for %d %s queries",
                    len(self.data.corpus),
                    len(split.queries),
                    split.role,
                )
                run = bm25_search(
                    self.data.corpus,
                    split.queries,
                    k=fs.k,
                    language=fs.language,
                    k1=fs.k1,
                    b=fs.b,
                    cache_dir=self.cache.root / "bm25-index",
                    progress=self.progress,
                    source=f"of dataset {self.config.dataset.path}",
                )
            else:
                run = self._read_run_file(split)
            run = top_k(run, fs.k)
            self.cache.put("first-stage", key, run, inputs)
        self._fs[split.role] = (run, key)
        return run

    def rerank(self, state: ModelState, split: Split) -> Run:
        """Model scores of the ``top_k`` candidates of ``split`` with the weights of ``state`` (cached)."""
        candidates = self.first_stage(split)
        inputs = self._rerank_inputs(state, split)
        key = self.cache.key("rerank", inputs)
        run = self.cache.get("rerank", key)
        if run is not None:
            return run
        if self._pool is None:
            self._pool = ModelPool(self.config, self.ckpts, self.scoring, self._device, self.progress)
        reranker = self._pool.reranker(state)
        log.info("re-ranking %s queries with %s", split.role, state.label())
        top = self.config.scoring.top_k
        run = reranker.rerank(candidates, self.data.corpus, split.queries, top_k=top, progress=self.progress)
        self.pairs_scored += sum(len(docs) for docs in run.values())
        self.cache.put("rerank", key, run, inputs)
        return run

    def weights(self, state: ModelState) -> tuple[tuple[float, float] | None, str]:
        """Fusion weights (first stage, model) of ``state`` and where they come from."""
        if state in self._weights:
            return self._weights[state]
        fusion = self.config.fusion
        result: tuple[tuple[float, float] | None, str]
        if fusion.method == "none":
            result = (None, "model scores only")
        elif fusion.method == "fixed":
            result = (tuple(fusion.weights), "fixed")  # type: ignore[assignment]
        elif self.data.dev is None:
            result = (tuple(fusion.weights), "fixed: no dev set to tune on")  # type: ignore[assignment]
        else:
            from ..evaluation import tune_fusion

            dev = self.data.dev
            fs = top_k(self.first_stage(dev), self.config.scoring.top_k)
            w, _ = tune_fusion(fs, self.rerank(state, dev), dev.qrels, metric=fusion.metric, step=fusion.step)
            result = ((round(float(w[0]), 6), round(float(w[1]), 6)), f"tuned on dev ({fusion.metric})")
        self._weights[state] = result
        return result

    def final_run(self, state: ModelState, split: Split) -> Run:
        """The run a system contributes: model scores fused with the first stage (or alone)."""
        weights, _ = self.weights(state)
        model_run = self.rerank(state, split)
        if weights is None:
            return model_run
        from ..evaluation import fuse

        first = top_k(self.first_stage(split), self.config.scoring.top_k)
        return fuse(first, model_run, weights=weights)

    def measure(self, run: Run, split: Split, metric: str | None = None) -> float:
        from ..evaluation import evaluate
        from ..evaluation.metrics import canonical_metric

        metric = metric or self.config.report.primary_metric
        return float(evaluate(run, split.qrels, [metric]).mean[canonical_metric(metric)])

    # -- planning ----------------------------------------------------------------------------
    def plan(self) -> list[PlannedStep]:
        """Every cacheable step, whether it is cached, and how many pairs it scores."""
        from .plan import plan_steps

        return plan_steps(self)

    def plan_text(self, status: str) -> str:
        """The dry-run report: systems, cache state, pairs to score."""
        from .plan import plan_text

        return plan_text(self, status)

    # -- the run -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _results_folder(self) -> Iterator[str]:
        """Hold the results folder for the block: locked against other runs, checked again under
        the lock (it may have changed since :meth:`prepare`), cleared with ``overwrite`` (only what
        its manifest lists), with every file written into it listed in the manifest first.
        Yields the output status."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"output {self.out}: cannot create it ({exc.strerror})") from exc
        with lock_folder(self.out, "output"):
            status = check_output(self.config, overwrite=self.overwrite)
            remove_stale_temporaries(self.out)  # temporaries of killed runs of this host
            if not self.cache.root.resolve().is_relative_to(self.out.resolve()):
                remove_stale_temporaries(self.cache.root)
            if status == "overwrite":
                clear_output(self.config)
            with record_outputs(self.out):
                yield status

    def _start_folder(self) -> None:
        self.memo.flush()
        # the marker first: a run killed right after it is still recognised and resumed
        write_json(
            self.out / EXPERIMENT_FILE,
            {"name": self.config.name, "fingerprint": self.config.fingerprint()},
        )
        write_text(self.out / "config.yaml", dump_config(self.config))

    def run(self) -> ExperimentResult:
        """Run the experiment, resuming from the cache, and write the results folder.

        The folder is locked while the run writes it: a second run on it is refused with a
        :class:`ConfigError` naming the holder's pid."""
        started = time.time()
        self.prepare()
        with self._results_folder() as status:
            return self._run(status, started)

    def _run(self, status: str, started: float) -> ExperimentResult:
        self._start_folder()
        log.info("experiment %s: %s output %s", self.config.name, status, self.out)
        try:
            results = self._compute()
        finally:
            if self._pool is not None:
                self._pool.close()
        results["environment"] = {
            **_versions(),
            "device": str(self._device),
            "dtype": self.config.scoring.dtype or "float32",
            "seed": self.config.seed,
        }
        write_json(self.out / "environment.json", results["environment"])
        write_json(self.out / "results.json", results)
        from ..report import results_table, write_report

        report = write_report(results, self.out, plots=self.config.report.plots)
        stats = {
            "status": status,
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "model_loads": list(self._pool.loads) if self._pool is not None else [],
            "pairs_scored": self.pairs_scored,
            "seconds": round(time.time() - started, 2),
        }
        log.info("experiment done: %s", stats)
        return ExperimentResult(self.out, report, results, results_table(results), stats)

    def _compute(self) -> dict[str, Any]:
        config = self.config
        data = self.data
        test = data.test
        # the domain model first, so it is released before the ranker is loaded
        for system in config.systems:
            if isinstance(system, DomainSystem):
                self.final_run(ModelState("domain"), test)
        if self._pool is not None:
            self._pool.release_domain()

        table_runs: dict[str, Run] = {}
        rows: list[dict[str, Any]] = []
        sweeps: dict[str, Any] = {}
        ablations: dict[str, Any] = {}
        dev_runs: dict[str, Run] = {}
        fusion_used: dict[str, Any] = {}
        for system in config.systems:
            details = ""
            if isinstance(system, FirstStageSystem):
                run = self.first_stage(test)
                details = f"{config.first_stage.kind}, top {config.first_stage.k}"
            elif isinstance(system, AblationSystem):
                ablations[system.name] = self._ablation(system)
                continue
            elif isinstance(system, SweepSystem):
                sweep, run, state = self._sweep(system)
                sweeps[system.name] = sweep
                details = f"α={sweep['best_alpha']:g} (best on {system.select_on})"
                details += self._weights_text(state, fusion_used, system.name)
                if data.dev is not None:
                    dev_runs[system.name] = self.final_run(state, data.dev)
            else:
                if isinstance(system, RankerSystem):
                    state = ModelState("ranker")
                elif isinstance(system, DomainSystem):
                    state = ModelState("domain")
                else:
                    state = ModelState.merged(system.alpha, system.layers, system.mode)
                    details = state.label() if state.role == "merge" else "α=0"
                run = self.final_run(state, test)
                details += self._weights_text(state, fusion_used, system.name)
            table_runs[system.name] = run
            rows.append({"name": system.name, "type": system.type, "details": details.strip("; ")})

        from ..data import write_run

        slugs = _unique_slugs([s.name for s in config.systems])
        for name, stem, run in self._extra_runs:
            write_run(
                run, self.out / "runs" / "test" / slugs[name] / f"{stem}.trec", tag=f"{slugs[name]}.{stem}"
            )
        per_query: dict[str, Any] = {}
        from ..evaluation import evaluate

        for row in rows:
            run = table_runs[row["name"]]
            write_run(run, self.out / "runs" / "test" / f"{slugs[row['name']]}.trec", tag=slugs[row["name"]])
            evaluation = evaluate(run, test.qrels, config.metrics)
            row["mean"] = {m: float(evaluation.mean[_canonical(m)]) for m in config.metrics}
            per_query[row["name"]] = {
                "mean": row["mean"],
                "per_query": {m: evaluation.per_query[_canonical(m)] for m in config.metrics},
            }
        for name, run in dev_runs.items():
            write_run(run, self.out / "runs" / "dev" / f"{slugs[name]}.trec", tag=slugs[name])
        write_json(self.out / "metrics" / "test.json", per_query)
        significance = self._significance(table_runs)
        return {
            "title": config.name,
            "description": config.description,
            "experiment": config.fingerprint(),
            "dataset": {
                "name": data.name,
                "split": test.label,
                "dev": f"{data.dev.label} ({len(data.dev.queries)} queries)" if data.dev else None,
                "queries": len(test.queries),
                "documents": len(data.corpus),
                "notes": data.notes,
            },
            "first_stage": self._first_stage_text(),
            "scoring": self._scoring.to_dict() if self._scoring is not None else None,
            "fusion": self._fusion_text(),
            "fusion_weights": fusion_used,
            "metrics": list(config.metrics),
            "primary_metric": config.report.primary_metric,
            "baselines": config.baselines(),
            "systems": rows,
            "significance": significance,
            "sweeps": sweeps,
            "ablations": ablations,
            "notes": self.notes,
            "latex": config.report.latex,
        }

    def _weights_text(self, state: ModelState, used: dict[str, Any], name: str) -> str:
        weights, source = self.weights(state)
        used[name] = {"weights": list(weights) if weights else None, "source": source}
        if weights is None:
            return ""
        return f"; w=({weights[0]:g}, {weights[1]:g}) {source.split(':')[0]}"

    def _first_stage_text(self) -> str:
        fs = self.config.first_stage
        if fs.kind == "run":
            return f"TREC run {fs.run}, top {fs.k}"
        top = self.config.scoring.top_k
        return f"BM25 (bm25s, k1={fs.k1}, b={fs.b}, {fs.language}), top {fs.k}; re-ranked: top {top}"

    def _fusion_text(self) -> str:
        fusion = self.config.fusion
        if fusion.method == "none":
            return "none (model scores only)"
        if fusion.method == "fixed" or self.data.dev is None:
            extra = "" if fusion.method == "fixed" else " (no dev set to tune on)"
            return f"per-query min-max, weights (first stage, model) = {tuple(fusion.weights)}{extra}"
        return (
            "per-query min-max, weights tuned per system on dev by grid search "
            f"(step {fusion.step}, {fusion.metric})"
        )

    def _sweep(self, system: SweepSystem) -> tuple[dict[str, Any], Run, ModelState]:
        data = self.data
        dev_values: list[float | None] = []
        test_values: list[float | None] = []
        score_test = system.plot_test or system.select_on == "test"
        for alpha in system.alphas:
            state = ModelState.merged(alpha, system.layers, system.mode)
            dev_values.append(self.measure(self.final_run(state, data.dev), data.dev) if data.dev else None)
            if score_test:
                test_run = self.final_run(state, data.test)
                self._extra_runs.append((system.name, f"alpha={alpha:g}", test_run))
            test_values.append(self.measure(test_run, data.test) if score_test else None)
        chooser = dev_values if system.select_on == "dev" else test_values
        best_i = max(range(len(system.alphas)), key=lambda i: (chooser[i], -i))  # first best on ties
        best = system.alphas[best_i]
        state = ModelState.merged(best, system.layers, system.mode)
        run = self.final_run(state, data.test)
        if not score_test:
            test_values[best_i] = self.measure(run, data.test)
        weights, source = self.weights(state)
        sweep = {
            "alphas": list(system.alphas),
            "dev": dev_values if data.dev is not None else None,
            "test": test_values,
            "best_alpha": best,
            "select_on": system.select_on,
            "weights": list(weights) if weights else None,
            "weights_source": source,
        }
        return sweep, run, state

    def _ablation(self, system: AblationSystem) -> dict[str, Any]:
        test = self.data.test
        ranker = ModelState("ranker")
        full = ModelState.merged(system.alpha)
        weights, _ = self.weights(full)  # every variant is fused with the all-layer merge's weights
        from ..evaluation import fuse

        first = top_k(self.first_stage(test), self.config.scoring.top_k)
        layers = ablation_layers(system, self.ckpts.depth)
        result: dict[str, Any] = {
            "alpha": system.alpha,
            "layers": layers,
            "ranker": self.measure(self.final_run(ranker, test), test),
            "full": self.measure(self.final_run(full, test), test),
            "weights": list(weights) if weights else None,
        }
        for mode in ("only", "except"):
            if mode not in system.modes:
                continue
            values = []
            for layer in layers:
                model_run = self.rerank(ModelState.merged(system.alpha, [layer], mode), test)
                run = fuse(first, model_run, weights=weights) if weights else model_run
                self._extra_runs.append((system.name, f"{mode}-layer-{layer}", run))
                values.append(self.measure(run, test))
            result[mode] = values
        return result

    def _significance(self, runs: dict[str, Run]) -> dict[str, Any]:
        from ..evaluation import compare

        sig = self.config.significance
        baselines = self.config.baselines()
        info: dict[str, Any] = {
            "test": sig.test,
            "p_value": sig.p_value,
            "correction": sig.correction,
            "marks": {},
        }
        if not baselines or not [name for name in runs if name not in baselines]:
            return info  # nothing to test against the baselines
        comparison = compare(
            runs,
            self.data.test.qrels,
            self.config.metrics,
            baselines=baselines,
            test=sig.test,
            p_value=sig.p_value,
            correction=sig.correction,
            seed=self.config.seed,
        )
        info["marks"] = significance_marks(comparison, list(runs), baselines, self.config.metrics)
        return info


def _canonical(metric: str) -> str:
    from ..evaluation.metrics import canonical_metric

    return canonical_metric(metric)


def _unique_slugs(names: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = slug(name)
        candidate, i = base, 2
        while candidate.lower() in used:
            candidate, i = f"{base}-{i}", i + 1
        used.add(candidate.lower())
        out[name] = candidate
    return out


def significance_marks(
    comparison: Any, systems: list[str], baselines: list[str], metrics: list[str]
) -> dict[str, Any]:
    """``{system: {metric: {"better": [baselines], "worse": [baselines]}}}`` from a
    :class:`taskrank.evaluation.Comparison` (its significant paired tests)."""
    marks: dict[str, Any] = {s: {m: {"better": [], "worse": []} for m in metrics} for s in systems}
    by_key = {_canonical(m): m for m in metrics}
    for test in comparison.tests:
        metric = by_key.get(test.metric)
        if metric is None or test.winner is None or test.baseline not in baselines:
            continue
        entry = marks[test.system][metric]
        entry["better" if test.winner == test.system else "worse"].append(test.baseline)
    for per_metric in marks.values():
        for entry in per_metric.values():
            entry["better"] = [b for b in baselines if b in entry["better"]]
            entry["worse"] = [b for b in baselines if b in entry["worse"]]
    return marks
