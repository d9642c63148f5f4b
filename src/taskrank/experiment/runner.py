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
from collections.abc import Iterator
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
from ..data.formats import top_k  # the one top-k cut, in trec_eval's order
from ..errors import ConfigError, DataError
from ..locking import lock_folder
from ..threads import resolve_threads, torch_threads
from .cache import FingerprintMemo, StepCache, digest
from .folder import EXPERIMENT_FILE, bookkeeping, check_output, clear_output, record_outputs
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

MODEL_FOLDER = "model"
"""``runs/<split>/model/``: the model-alone runs of systems whose reported runs are fused."""


# --------------------------------------------------------------------------- helpers


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
        self._scoring_for: str | None = None  # the system being computed, for the progress bars
        self._threads = 1  # torch's intra-op threads while scoring, resolved by prepare()
        self._slugs: dict[str, str] = {}  # system name → file name, set by _compute

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
        self._threads = resolve_threads(self.config.scoring.threads)  # once: cgroup files read once
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
        # the bar says what it scores: many passes of one model follow each other in a run
        model = {"ranker": "ranker", "domain": "domain model"}.get(state.role, f"TA {state.label()}")
        system = self._scoring_for
        label = (
            f"{system}: {model} · {split.role} split"
            if system and system != model
            else f"{model} · {split.role} split"
        )
        with torch_threads(self._threads):
            reranker = self._pool.reranker(state)  # the merge of a new α runs on these threads too
            log.info("re-ranking %s queries with %s", split.role, state.label())
            top = self.config.scoring.top_k
            run = reranker.rerank(
                candidates, self.data.corpus, split.queries, top_k=top, progress=self.progress, label=label
            )
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
            with record_outputs(self.out, bookkeeping(self.config)):
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
            # torch's intra-op threads while scoring (scoring.threads, else the cores this process may use)
            "threads": self._threads,
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
                self._scoring_for = system.name
                self.final_run(ModelState("domain"), test)
        if self._pool is not None:
            self._pool.release_domain()

        # the runs/<split>/model/ folder holds the model-alone runs: no system's runs may take it
        self._slugs = _unique_slugs([s.name for s in config.systems], reserved={MODEL_FOLDER})
        reported = self._reported_variant()
        table_runs: dict[str, Run] = {}  # the reported variant: the runs the significance tests see
        variant_runs: dict[str, dict[str, Run]] = {}
        dev_states: dict[str, ModelState] = {}  # the systems scored on dev, at the state they report
        rows: list[dict[str, Any]] = []
        sweeps: dict[str, Any] = {}
        ablations: dict[str, Any] = {}
        fusion_used: dict[str, Any] = {}
        for system in config.systems:
            self._scoring_for = system.name  # named on the progress bars of what it scores
            details = ""
            state: ModelState | None = None
            if isinstance(system, FirstStageSystem):
                table_runs[system.name] = self.first_stage(test)
                details = f"{config.first_stage.kind}, top {config.first_stage.k}"
            elif isinstance(system, AblationSystem):
                ablations[system.name] = self._ablation(system)
                continue
            elif isinstance(system, SweepSystem):
                sweep, state = self._sweep(system)
                sweeps[system.name] = sweep
                details = f"α={sweep['best_alpha']:g} (best on {system.select_on})"
            else:
                if isinstance(system, RankerSystem):
                    state = ModelState("ranker")
                elif isinstance(system, DomainSystem):
                    state = ModelState("domain")
                else:
                    state = ModelState.merged(system.alpha, system.layers, system.mode)
                    details = state.label() if state.role == "merge" else "α=0"
            if state is not None:
                details += self._weights_text(state, fusion_used, system.name)
                variant_runs[system.name] = self._variant_runs(state, test)
                table_runs[system.name] = variant_runs[system.name][reported]
                if self._scored_on_dev(system):
                    dev_states[system.name] = state
            rows.append({"name": system.name, "type": system.type, "details": details.strip("; ")})

        from ..evaluation import evaluate

        def scores(run: Run) -> dict[str, Any]:
            evaluation = evaluate(run, test.qrels, config.metrics)
            return {
                "mean": {m: float(evaluation.mean[_canonical(m)]) for m in config.metrics},
                "per_query": {m: evaluation.per_query[_canonical(m)] for m in config.metrics},
            }

        per_query: dict[str, Any] = {}
        for row in rows:
            name = row["name"]
            if name not in variant_runs:  # the first stage: one run
                self._write_run("test", None, name, None, table_runs[name])
                per_query[name] = scores(table_runs[name])
                row["mean"] = per_query[name]["mean"]
                continue
            by_variant = {}
            for variant, run in variant_runs[name].items():
                self._write_run("test", variant, name, None, run)
                by_variant[variant] = scores(run)
            row["mean"] = by_variant[reported]["mean"]
            row["reported_variant"] = reported
            row["variants"] = {variant: {"mean": value["mean"]} for variant, value in by_variant.items()}
            per_query[name] = {**by_variant[reported], "reported_variant": reported, "variants": by_variant}
        if data.dev is not None and dev_states:
            for system in config.systems:
                if isinstance(system, FirstStageSystem):
                    self._write_run("dev", None, system.name, None, self.first_stage(data.dev))
                elif system.name in dev_states:
                    for variant, run in self._variant_runs(dev_states[system.name], data.dev).items():
                        self._write_run("dev", variant, system.name, None, run)
        write_json(self.out / "metrics" / "test.json", per_query)
        significance = self._significance(table_runs)
        first_stage = self._first_stage_name()
        labels = {"fused": f"fused with {first_stage}", "model": "model alone"}
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
            "variants": {
                "reported": reported,
                "available": self._variants(),
                "labels": {variant: labels[variant] for variant in self._variants()},
                "first_stage": first_stage,
            },
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

    # -- the two variants of a re-ranking system ------------------------------------------------
    def _variants(self) -> list[str]:
        """``["fused", "model"]``, or ``["model"]`` with fusion ``none``."""
        return ["model"] if self.config.fusion.method == "none" else ["fused", "model"]

    def _reported_variant(self) -> str:
        """The variant the table's ``mean``, the significance marks and the α selection use: the
        configured fusion's final run (``fused``; ``model`` with fusion ``none``)."""
        return self._variants()[0]

    def _variant_runs(self, state: ModelState, split: Split) -> dict[str, Run]:
        """``{"fused": …, "model": …}``: the run of ``state`` fused with the first stage (unless
        fusion is ``none``) and its re-ranker scores alone."""
        runs = {"model": self.rerank(state, split)}
        if self.weights(state)[0] is None:
            return runs
        return {"fused": self.final_run(state, split), **runs}

    def _scored_on_dev(self, system: Any) -> bool:
        """Whether a re-ranking system is scored on dev: every α of a sweep, and every system
        whose fusion weights are tuned there."""
        if self.data.dev is None:
            return False
        return isinstance(system, SweepSystem) or self.config.fusion.method == "tuned"

    def _write_run(self, split: str, variant: str | None, system: str, stem: str | None, run: Run) -> None:
        """Write ``runs/<split>/<system>.trec`` (``<system>/<stem>.trec`` for a sweep's α or an
        ablation's variant); the model-alone run of a fused system goes under ``runs/<split>/model/``."""
        from ..data import write_run

        name = self._slugs[system]
        folder = self.out / "runs" / split
        tag = name if stem is None else f"{name}.{stem}"
        if variant == "model" and self._reported_variant() != "model":
            folder, tag = folder / MODEL_FOLDER, f"{tag}.model"
        write_run(run, folder / f"{name}.trec" if stem is None else folder / name / f"{stem}.trec", tag=tag)

    def _first_stage_name(self) -> str:
        """The first stage's name in the report: ``BM25``, or ``run`` for a TREC run file."""
        return "BM25" if self.config.first_stage.kind == "bm25" else "run"

    def _weights_words(self, weights: tuple[float, float] | None) -> str | None:
        """``BM25 0.8 · model 0.2``, and what a one-sided fusion equals; None without fusion."""
        from ..report import fusion_equals, weights_text

        if weights is None:
            return None
        name = self._first_stage_name()
        equals = fusion_equals(weights, name)
        return weights_text(weights, name) + (f"; {equals}" if equals else "")

    def _weights_text(self, state: ModelState, used: dict[str, Any], name: str) -> str:
        """``; BM25 0.8 · model 0.2, tuned on dev (ndcg@10)`` for a row's details (records the
        weights in ``used``); '' without fusion."""
        weights, source = self.weights(state)
        used[name] = {"weights": list(weights) if weights else None, "source": source}
        words = self._weights_words(weights)
        if words is None:
            return ""
        text, _, equals = words.partition("; ")
        return f"; {text}, {source.split(':')[0]}" + (f"; {equals}" if equals else "")

    def _first_stage_text(self) -> str:
        fs = self.config.first_stage
        if fs.kind == "run":
            return f"TREC run {fs.run}, top {fs.k}"
        top = self.config.scoring.top_k
        return f"BM25 (bm25s, k1={fs.k1}, b={fs.b}, {fs.language}), top {fs.k}; re-ranked: top {top}"

    def _fusion_text(self) -> str:
        from ..report import weights_text

        fusion = self.config.fusion
        name = self._first_stage_name()
        if fusion.method == "none":
            return "none: every re-ranking system is the model alone (re-ranker scores only)"
        how = f"per-query min-max of the {name} and model scores, then a weighted sum"
        if fusion.method == "fixed" or self.data.dev is None:
            extra = "" if fusion.method == "fixed" else " (no dev set to tune on)"
            return f"{how} with fixed weights {weights_text(fusion.weights, name)}{extra}"
        return (
            f"{how} with weights tuned per system on dev by grid search (step {fusion.step}, {fusion.metric})"
        )

    def _sweep(self, system: SweepSystem) -> tuple[dict[str, Any], ModelState]:
        """Score every α on dev (where there is one) and on test (``plot_test``, or when test picks),
        both variants; pick α on the reported variant. Returns the sweep's results and the chosen
        state. The ranker alone and the first stage are scored on the same splits, as references."""
        data = self.data
        variants = self._variants()
        reported = self._reported_variant()
        score_test = system.plot_test or system.select_on == "test"
        splits = {"dev": data.dev, "test": data.test if score_test else None}
        states = [ModelState.merged(alpha, system.layers, system.mode) for alpha in system.alphas]
        values: dict[str, dict[str, list[float | None]]] = {v: {"dev": [], "test": []} for v in variants}
        for alpha, state in zip(system.alphas, states, strict=True):
            for role, split in splits.items():
                runs = self._variant_runs(state, split) if split is not None else {}
                for variant in variants:
                    run = runs.get(variant)
                    values[variant][role].append(None if split is None else self.measure(run, split))
                    if run is not None:
                        self._write_run(role, variant, system.name, f"alpha={alpha:g}", run)
        chooser = values[reported]["dev" if system.select_on == "dev" else "test"]
        best_i = max(range(len(system.alphas)), key=lambda i: (chooser[i], -i))  # first best on ties
        state = states[best_i]
        if not score_test:  # the test split at the chosen α only
            for variant, run in self._variant_runs(state, data.test).items():
                values[variant]["test"][best_i] = self.measure(run, data.test)
        first: dict[str, Any] = {"name": self._first_stage_name(), "dev": None, "test": None}
        ranker: dict[str, dict[str, float | None]] = {v: {"dev": None, "test": None} for v in variants}
        for role, split in splits.items():
            if split is None:
                continue
            first[role] = self.measure(self.first_stage(split), split)
            for variant, run in self._variant_runs(ModelState("ranker"), split).items():
                ranker[variant][role] = self.measure(run, split)
        by_variant = {
            variant: {
                "dev": values[variant]["dev"] if data.dev is not None else None,
                "test": values[variant]["test"],
                "ranker": ranker[variant],
            }
            for variant in variants
        }
        weights, source = self.weights(state)
        sweep = {
            "alphas": list(system.alphas),
            "dev": by_variant[reported]["dev"],
            "test": by_variant[reported]["test"],
            "best_alpha": system.alphas[best_i],
            "select_on": system.select_on,
            "weights": list(weights) if weights else None,
            "weights_source": source,
            "weights_text": self._weights_words(weights),
            "ranker": ranker[reported],
            "first_stage": first,
            "reported_variant": reported,
            "variants": by_variant,
        }
        return sweep, state

    def _ablation(self, system: AblationSystem) -> dict[str, Any]:
        """Every layer's 'only'/'except' variant on test, both variants, with the ranker, the
        all-layer merge and the first stage as references."""
        test = self.data.test
        variants = self._variants()
        reported = self._reported_variant()
        ranker = ModelState("ranker")
        full = ModelState.merged(system.alpha)
        weights, _ = self.weights(full)  # every variant is fused with the all-layer merge's weights
        from ..evaluation import fuse

        first = top_k(self.first_stage(test), self.config.scoring.top_k)
        layers = ablation_layers(system, self.ckpts.depth)
        scores: dict[str, dict[str, Any]] = {v: {} for v in variants}
        for key, state in (("ranker", ranker), ("full", full)):
            for variant, run in self._variant_runs(state, test).items():
                scores[variant][key] = self.measure(run, test)
        for mode in ("only", "except"):
            if mode not in system.modes:
                continue
            for variant in variants:
                scores[variant][mode] = []
            for layer in layers:
                model_run = self.rerank(ModelState.merged(system.alpha, [layer], mode), test)
                runs = {"model": model_run}
                if weights:
                    runs["fused"] = fuse(first, model_run, weights=weights)
                for variant, run in runs.items():
                    self._write_run("test", variant, system.name, f"{mode}-layer-{layer}", run)
                    scores[variant][mode].append(self.measure(run, test))
        return {
            "alpha": system.alpha,
            "layers": layers,
            "split": test.label,
            **scores[reported],
            "first_stage": {
                "name": self._first_stage_name(),
                "value": self.measure(self.first_stage(test), test),
            },
            "weights": list(weights) if weights else None,
            "weights_text": self._weights_words(weights),
            "reported_variant": reported,
            "variants": scores,
        }

    def _significance(self, runs: dict[str, Run]) -> dict[str, Any]:
        """The paired tests of the table's runs: settings, every test with raw and corrected
        p-values (``tests``), and the marks the table shows (``marks``)."""
        from ..evaluation import compare

        sig = self.config.significance
        baselines = self.config.baselines()
        info: dict[str, Any] = {
            "test": sig.test,
            "p_value": sig.p_value,
            "correction": sig.correction,
            "baselines": baselines,
            "family": None,
            "num_comparisons": 0,
            "tests": [],
            "marks": {s: {m: {"better": [], "worse": []} for m in self.config.metrics} for s in runs},
        }
        if not baselines or len(runs) < 2:
            return info  # no pair to test: no baseline, or a single system
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
        by_key = {_canonical(m): m for m in self.config.metrics}
        info["family"] = comparison.family()
        info["num_comparisons"] = comparison.num_comparisons
        info["tests"] = [{**t.to_dict(), "metric": by_key[t.metric]} for t in comparison.tests]
        info["marks"] = significance_marks(comparison, list(runs), baselines, self.config.metrics)
        return info


def _canonical(metric: str) -> str:
    from ..evaluation.metrics import canonical_metric

    return canonical_metric(metric)


def _unique_slugs(names: list[str], reserved: set[str] | None = None) -> dict[str, str]:
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


def significance_marks(
    comparison: Any, systems: list[str], baselines: list[str], metrics: list[str]
) -> dict[str, Any]:
    """``{system: {metric: {"better": [baselines], "worse": [baselines]}}}`` from a
    :class:`taskrank.evaluation.Comparison` (its significant paired tests).

    A test between two baselines marks both rows (one ``better``, the other ``worse``), so a
    baseline row carries its results against the other baselines like any other row."""
    marks: dict[str, Any] = {s: {m: {"better": [], "worse": []} for m in metrics} for s in systems}
    by_key = {_canonical(m): m for m in metrics}
    for test in comparison.tests:
        metric = by_key.get(test.metric)
        if metric is None or test.winner is None:
            continue
        for row, other in ((test.system, test.baseline), (test.baseline, test.system)):
            if other in baselines and row in marks:
                marks[row][metric]["better" if test.winner == row else "worse"].append(other)
    for per_metric in marks.values():
        for entry in per_metric.values():
            entry["better"] = [b for b in baselines if b in entry["better"]]
            entry["worse"] = [b for b in baselines if b in entry["worse"]]
    return marks
