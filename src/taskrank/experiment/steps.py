"""The cached steps of an experiment and their keys: the first stage, the re-ranking of its
candidates by one model state, the fusion weights of a state, its final run, and the measure.

A step's key is the sha256 of its inputs (:meth:`taskrank.experiment.cache.StepCache.key`): the
inputs written here are the cache's contract with its users, so a change to them recomputes
every cache (bump ``CACHE_VERSION`` when a value changes meaning instead).

One model is loaded for all ranker-family states (the ranker alone, merges, sweeps, ablations):
the α updates are made in place with :class:`taskrank.arithmetic.AlphaSweep`, so a whole sweep
costs one load (see :class:`taskrank.experiment.models.ModelPool`).
"""

from __future__ import annotations

import logging
from collections import ChainMap
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ..config import ExperimentConfig
from ..data.formats import top_k  # the one top-k cut, in trec_eval's order
from ..errors import DataError
from ..threads import torch_threads
from ..vocabulary import canonical_metric
from .cache import StepCache, digest
from .models import Inputs, ModelPool, ModelState, Scoring, model_inputs
from .preflight import Checkpoints, Data, Split

if TYPE_CHECKING:
    import torch

    from .distributed import RayEngine

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
"""A TREC run in memory: ``{query id: {document id: score}}``."""


@dataclass
class PlannedStep:
    """One cacheable step of a plan."""

    step: str  # "first-stage" or "rerank"
    label: str
    cached: bool | None  # None: not known before earlier steps run
    pairs: int | None
    exact: bool = True


@dataclass(frozen=True)
class FusionWeights:
    """The fusion weights (first stage, model) of a model state, and where they come from;
    ``weights`` is None when the model's scores are used alone (fusion ``none``)."""

    weights: tuple[float, float] | None
    source: str

    def record(self) -> dict[str, object]:
        """As ``results.json`` ``fusion_weights`` records it."""
        return {"weights": list(self.weights) if self.weights else None, "source": self.source}


class Steps:
    """The cached steps of one prepared experiment (see :meth:`Experiment.prepare`).

    Every value is computed at most once per run, and looked up in the step cache first."""

    def __init__(
        self,
        config: ExperimentConfig,
        data: Data,
        ckpts: Checkpoints,
        cache: StepCache,
        *,
        scoring: Scoring | None,
        device: torch.device | None,
        threads: int,
        progress: bool,
    ) -> None:
        self.config = config
        self.data = data
        self.ckpts = ckpts
        self.cache = cache
        self.resolved_scoring = scoring  # None when nothing is re-ranked
        self.device = device
        self.threads = threads  # torch's intra-op threads while scoring
        self.progress = progress
        self.pool: ModelPool | None = None
        self.engine: RayEngine | None = None  # the re-ranking steps on Ray (execution.engine: ray)
        self.pairs_scored = 0
        self.system_name: str | None = None  # the system being computed, named on the progress bars
        self._fs: dict[tuple[str, str], Run] = {}  # by (role, query digest)
        self._fs_keys: dict[tuple[str, str], str] = {}
        self._weights: dict[ModelState, FusionWeights] = {}
        self._pseudo: dict[tuple[int, int], Split] = {}

    @property
    def scoring(self) -> Scoring:
        """The scoring settings every system is scored with, resolved once by ``prepare()``."""
        if self.resolved_scoring is None:
            raise RuntimeError("call prepare() first (and re-rank only with a 'models' section)")
        return self.resolved_scoring

    # -- keys --------------------------------------------------------------------------------
    def fs_inputs(self, split: Split) -> Inputs:
        """The inputs of the first stage of ``split``."""
        fs = self.config.first_stage
        if fs.kind == "bm25":
            from ..retrieval import bm25_params

            return {
                "corpus": self.data.corpus_digest,
                "queries": split.digest,
                "k": fs.k,
                "bm25": bm25_params(fs.language, fs.k1, fs.b),
            }
        run = self.read_run_file(split)
        return {"run": digest(run), "queries": split.digest, "k": fs.k}

    def fs_key(self, split: Split) -> str:
        """The cache key of the first stage of ``split``."""
        memo = (split.role, split.digest)
        if memo not in self._fs_keys:  # computed once: a run file is read and hashed once
            self._fs_keys[memo] = self.cache.key("first-stage", self.fs_inputs(split))
        return self._fs_keys[memo]

    def model_id(self, state: ModelState) -> Inputs:
        """The weights of ``state``, as the checkpoints' fingerprints and the merge settings."""
        return model_inputs(state, self.config, self.ckpts, self.scoring.dtype)

    def scoring_id(self, state: ModelState) -> Inputs:
        """How ``state`` is scored."""
        # the resolved settings, not the config's: a changed default of the ranker's folder
        # (its max_seq_length, pooling…) makes new keys
        settings = self.scoring.of(state.role)
        inputs: Inputs = {
            "kind": settings.kind,
            "options": dict(sorted(settings.options.items())),
            "tokenizer": None if state.role == "domain" else self.config.trio().tokenizer,
            "max_length": settings.max_length,
            "top_k": self.scoring.top_k,
            "dtype": self.scoring.dtype,
            "device": self.device.type if self.device is not None else None,
        }
        if self.scoring.quantize != "none":  # only then: every other key stays as it was
            from ..rerankers.quantize import ACTIVATION_GROUP, WEIGHTS

            inputs["quantize"] = {
                "mode": self.scoring.quantize,
                "weights": WEIGHTS,
                "activation_group": ACTIVATION_GROUP,
                **dict(self.scoring.quantize_versions),
            }
        return inputs

    def rerank_inputs(self, state: ModelState, split: Split) -> Inputs:
        """The inputs of the re-ranking of ``split`` by ``state``."""
        inputs: Inputs = {
            "model": self.model_id(state),
            "scoring": self.scoring_id(state),
            "candidates": self.fs_key(split),
            "corpus": self.data.corpus_digest,
            "queries": split.digest,
        }
        if split.documents is not None:  # only then: the keys of every other split stay as they were
            inputs["documents"] = digest(split.documents)
        return inputs

    def rerank_key(self, state: ModelState, split: Split) -> str:
        """The cache key of the re-ranking of ``split`` by ``state``."""
        return self.cache.key("rerank", self.rerank_inputs(state, split))

    # -- the first stage ---------------------------------------------------------------------
    def read_run_file(self, split: Split) -> Run:
        """The configured first-stage run file of ``split``, restricted to its queries."""
        from ..data import read_run

        fs = self.config.first_stage
        file = fs.run if split.role == "test" else fs.dev_run
        if file is None:  # the config's checks require it: a run file for each split scored
            raise DataError(f"first_stage has no run file for the {split.role} queries")
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
        memo = (split.role, split.digest)
        if memo in self._fs:
            return self._fs[memo]
        inputs = self.fs_inputs(split)
        key = self.fs_key(split)
        run = self.cache.get("first-stage", key)
        if run is None:
            run = top_k(self._retrieve(split), self.config.first_stage.k)
            self.cache.put("first-stage", key, run, inputs)
        self._fs[memo] = run
        return run

    def _retrieve(self, split: Split) -> Run:
        fs = self.config.first_stage
        if fs.kind != "bm25":
            return self.read_run_file(split)
        from ..retrieval import bm25_search

        log.info(
            "BM25 over %d documents for %d %s queries", len(self.data.corpus), len(split.queries), split.role
        )
        return bm25_search(
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

    def candidates(self, split: Split) -> Run:
        """The first stage of ``split`` cut to the ``top_k`` the models re-rank."""
        return top_k(self.first_stage(split), self.config.scoring.top_k)

    def first_stage_name(self) -> str:
        """The first stage's name in the report: ``BM25``, or ``run`` for a TREC run file."""
        return "BM25" if self.config.first_stage.kind == "bm25" else "run"

    # -- re-ranking --------------------------------------------------------------------------
    def corpus_of(self, split: Split) -> dict[str, dict[str, str]]:
        """The documents ``split``'s queries are scored against: the corpus, with the split's
        own :attr:`~Split.documents` in place of the corpus's where it has them."""
        if split.documents is None:
            return self.data.corpus
        # a view, not a copy of the corpus: the re-ranker only looks documents up
        return cast("dict[str, dict[str, str]]", ChainMap(split.documents, self.data.corpus))

    def pseudo_split(self, count: int, seed: int) -> Split:
        """``count`` pseudo-queries cut out of the corpus with ``seed`` (made once per run), as a
        split whose judgments say where each query was cut from."""
        from ..labelfree import make_pseudo_queries

        memo = (count, seed)
        if memo not in self._pseudo:
            pseudo = make_pseudo_queries(self.data.corpus, count, seed)
            label = pseudo.describe()
            self._pseudo[memo] = Split(
                "pseudo", label, pseudo.queries, pseudo.qrels(), documents=pseudo.documents
            )
        return self._pseudo[memo]

    def rerank(self, state: ModelState, split: Split) -> Run:
        """Model scores of the ``top_k`` candidates of ``split`` with the weights of ``state`` (cached)."""
        candidates = self.first_stage(split)
        inputs = self.rerank_inputs(state, split)
        key = self.cache.key("rerank", inputs)
        run = self.cache.get("rerank", key)
        if run is not None:
            return run
        if self.engine is not None:
            top = self.config.scoring.top_k
            label = self._bar_label(state, split)
            run = self.engine.rerank(state, candidates, self.corpus_of(split), split.queries, top, label)
            return self._scored(run, key, inputs)
        if self.pool is None:
            self.pool = ModelPool(self.config, self.ckpts, self.scoring, self.device, self.progress)
        with torch_threads(self.threads):
            reranker = self.pool.reranker(state)  # the merge of a new α runs on these threads too
            log.info("re-ranking %s queries with %s", split.role, state.label())
            run = reranker.rerank(
                candidates,
                self.corpus_of(split),
                split.queries,
                top_k=self.config.scoring.top_k,
                progress=self.progress,
                label=self._bar_label(state, split),
            )
        return self._scored(run, key, inputs)

    def _scored(self, run: Run, key: str, inputs: Inputs) -> Run:
        self.pairs_scored += sum(len(docs) for docs in run.values())
        self.cache.put("rerank", key, run, inputs)
        return run

    def start_engine(self) -> None:
        """Connect to the Ray cluster and start its workers (``execution.engine: ray``), before
        any step runs: a bad address or resource request fails here."""
        if self.config.execution.engine != "ray" or self.resolved_scoring is None or self.engine is not None:
            return
        from .distributed import RayEngine
        from .plan import plan_steps

        device = self.device.type if self.device is not None else "cpu"
        # each worker scores on scoring.threads, else on the CPUs it holds (not the driver's cores);
        # environment.json records the workers' number
        self.threads = self.config.scoring.threads or max(1, int(self.config.execution.cpus_per_worker))
        self.engine = RayEngine(self.config, self.ckpts, self.scoring, self.threads, self.progress, device)
        planned = plan_steps(self)  # the total of the engine's one bar: the pairs still to score
        self.engine.expect(sum(s.pairs or 0 for s in planned if s.step == "rerank" and s.cached is False))

    def _bar_label(self, state: ModelState, split: Split) -> str:
        # the bar says what it scores: many passes of one model follow each other in a run
        model = {"ranker": "ranker", "domain": "domain model"}.get(state.role, f"TA {state.label()}")
        system = self.system_name
        if system and system != model:
            return f"{system}: {model} · {split.role} split"
        return f"{model} · {split.role} split"

    # -- fusion ------------------------------------------------------------------------------
    def weights(self, state: ModelState) -> FusionWeights:
        """Fusion weights (first stage, model) of ``state`` and where they come from."""
        if state not in self._weights:
            self._weights[state] = self._fusion_weights(state)
        return self._weights[state]

    def _fusion_weights(self, state: ModelState) -> FusionWeights:
        fusion = self.config.fusion
        if fusion.method == "none":
            return FusionWeights(None, "model scores only")
        fixed = fusion.weights
        if fusion.method == "fixed":
            return FusionWeights(fixed, "fixed")
        if self.data.dev is None:
            return FusionWeights(fixed, "fixed: no dev set to tune on")
        from ..evaluation import tune_fusion

        dev = self.data.dev
        w, _ = tune_fusion(
            self.candidates(dev), self.rerank(state, dev), dev.qrels, metric=fusion.metric, step=fusion.step
        )
        tuned = (round(float(w[0]), 6), round(float(w[1]), 6))
        return FusionWeights(tuned, f"tuned on dev ({fusion.metric})")

    def fuse(self, model_run: Run, split: Split, weights: tuple[float, float]) -> Run:
        """``model_run`` fused with the re-ranked candidates of ``split``."""
        from ..evaluation import fuse

        return fuse(self.candidates(split), model_run, weights=weights)

    def final_run(self, state: ModelState, split: Split) -> Run:
        """The run a system contributes: model scores fused with the first stage (or alone)."""
        weights = self.weights(state).weights
        model_run = self.rerank(state, split)
        if weights is None:
            return model_run
        return self.fuse(model_run, split, weights)

    # -- the two variants of a re-ranking system ------------------------------------------------
    def variants(self) -> list[str]:
        """``["fused", "model"]``, or ``["model"]`` with fusion ``none``."""
        return ["model"] if self.config.fusion.method == "none" else ["fused", "model"]

    def reported_variant(self) -> str:
        """The variant the table's ``mean``, the significance marks and the α selection use: the
        configured fusion's final run (``fused``; ``model`` with fusion ``none``)."""
        return self.variants()[0]

    def variant_runs(self, state: ModelState, split: Split) -> dict[str, Run]:
        """``{"fused": …, "model": …}``: the run of ``state`` fused with the first stage (unless
        fusion is ``none``) and its re-ranker scores alone."""
        weights = self.weights(state).weights  # first: tuned on dev, before the split is scored
        runs = {"model": self.rerank(state, split)}
        if weights is None:
            return runs
        return {"fused": self.final_run(state, split), **runs}

    # -- measuring ---------------------------------------------------------------------------
    def measure(self, run: Run, split: Split, metric: str | None = None) -> float:
        """The mean of ``metric`` (the primary metric by default) of ``run`` on ``split``."""
        from ..evaluation import evaluate

        metric = metric or self.config.report.primary_metric
        return float(evaluate(run, split.qrels, [metric]).mean[canonical_metric(metric)])

    def take_models(self, previous: Steps) -> None:
        """Take over the models ``previous`` loaded (the experiment is prepared again) when they
        score as these steps do, so none is loaded twice; free them otherwise."""
        pool, previous.pool = previous.pool, None
        self.pairs_scored += previous.pairs_scored
        if pool is None:
            return
        same = (pool.checkpoints.paths, pool.checkpoints.fingerprints, pool.scoring, pool.device) == (
            self.ckpts.paths,
            self.ckpts.fingerprints,
            self.resolved_scoring,
            self.device,
        )
        if same:
            self.pool = pool
        else:
            pool.close()

    def close(self) -> None:
        """Free the loaded models (and the Ray workers)."""
        if self.pool is not None:
            self.pool.close()
        if self.engine is not None:
            self.engine.close()
            self.engine = None


__all__ = ["FusionWeights", "PlannedStep", "Run", "Steps"]
