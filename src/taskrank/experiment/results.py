"""What the systems of an experiment produce, as dataclasses, and how they become ``results.json``.

The handlers (:mod:`taskrank.experiment.systems`) return a :class:`SystemOutcome` per system: a
table row (:class:`SystemResult`), an α sweep (:class:`SweepResult`) or a layer ablation
(:class:`AblationResult`); they hand each run to write (:class:`RunFile`) to the results folder's
writer as soon as it is scored. :func:`results_dict` assembles the ``results.json``
(:class:`ResultsJson`) the report is rendered from (its format is described in
:mod:`taskrank.report`); the typed dicts here are the shapes of its parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from ..vocabulary import canonical_metric
from .models import ModelState
from .steps import FusionWeights, Run, Steps

if TYPE_CHECKING:
    from ..evaluation import Comparison

#: ``{system: {metric: {"better": [baselines], "worse": [baselines]}}}``
Marks = dict[str, dict[str, dict[str, list[str]]]]


class SplitScores(TypedDict):
    """A reference's measure on the splits a sweep scores (None: the split is not scored)."""

    dev: float | None
    test: float | None


class SweepFirstStage(SplitScores):
    """The first stage as a sweep's reference: its name and its measures."""

    name: str


class SweepVariant(TypedDict):
    """A sweep's measures of one variant: one value per α on dev (None without a dev set) and
    on test (None where not scored), and the ranker alone."""

    dev: list[float | None] | None
    test: list[float | None]
    ranker: SplitScores


#: An ablation's measures of one variant: the references (``ranker``, ``full``) and one value
#: per layer for each mode it runs (``only``, ``except``; a keyword, hence this form).
AblationScores = TypedDict(
    "AblationScores",
    {"ranker": float, "full": float, "only": list[float], "except": list[float]},
    total=False,
)


class AblationFirstStage(TypedDict):
    """The first stage as an ablation's reference: its name and its measure on the split."""

    name: str
    value: float


class VariantScores(TypedDict):
    """A row's measures of one run: each metric's mean and its value per query."""

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]


class SignificanceInfo(TypedDict):
    """``results.json`` ``significance``: the settings, every paired test, the table's marks."""

    test: str
    p_value: float
    correction: str
    baselines: list[str]
    family: str | None  # None: no pair tested
    num_comparisons: int
    tests: list[dict[str, object]]
    marks: Marks


class DatasetInfo(TypedDict):
    """``results.json`` ``dataset``."""

    name: str
    split: str
    dev: str | None
    queries: int
    documents: int
    notes: list[str]


class VariantsInfo(TypedDict):
    """``results.json`` ``variants``: the reported one, those available, and their labels."""

    reported: str
    available: list[str]
    labels: dict[str, str]
    first_stage: str


class _ResultsJson(TypedDict):
    title: str
    description: str
    experiment: str
    dataset: DatasetInfo
    first_stage: str
    scoring: dict[str, object] | None
    fusion: str
    fusion_weights: dict[str, dict[str, object]]
    variants: VariantsInfo
    metrics: list[str]
    primary_metric: str
    baselines: list[str]
    systems: list[dict[str, object]]
    significance: SignificanceInfo
    sweeps: dict[str, dict[str, object]]
    ablations: dict[str, dict[str, object]]
    notes: list[str]
    latex: bool


class ResultsJson(_ResultsJson, total=False):
    """``results.json``, its top-level keys in file order (see :mod:`taskrank.report`);
    ``environment`` is added by the runner once every system has run."""

    environment: dict[str, object]


@dataclass
class RunFile:
    """A run to write under ``runs/<split>/`` (see :class:`taskrank.experiment.output.RunWriter`)."""

    split: str
    variant: str | None  # None: the first stage's one run
    system: str
    stem: str | None  # a sweep's α or an ablation's variant; None: the system's own run
    run: Run


#: Writes a run into the results folder (:meth:`taskrank.experiment.output.RunWriter.write_file`).
WriteRun = Callable[[RunFile], None]


@dataclass
class SystemResult:
    """A row of the results table, before it is measured: the system's runs on test."""

    name: str
    type: str
    details: str
    runs: dict[str | None, Run]  # by variant; the first stage has one run, under None
    state: ModelState | None = None  # the weights that score it; None for the first stage
    fusion: FusionWeights | None = None
    dev: bool = False  # scored on dev too: its dev runs are written

    @property
    def has_variants(self) -> bool:
        """Whether the row has variants (a re-ranking system), not the first stage's one run."""
        return None not in self.runs


@dataclass
class SweepResult:
    """An α sweep (``results.json`` ``sweeps.<system>``; top-level values are the reported variant's)."""

    alphas: list[float]
    dev: list[float | None] | None
    test: list[float | None]
    best_alpha: float
    select_on: str
    weights: list[float] | None
    weights_source: str
    weights_text: str | None
    ranker: SplitScores
    first_stage: SweepFirstStage
    reported_variant: str
    variants: dict[str, SweepVariant]
    #: every label-free strategy's signal per α and choice (LabelFreeChoice.record()), when recorded
    label_free: dict[str, object] | None = None

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class AblationResult:
    """A layer ablation (``results.json`` ``ablations.<system>``)."""

    alpha: float
    layers: list[int]
    split: str
    scores: dict[str, AblationScores]  # by variant
    first_stage: AblationFirstStage
    weights: list[float] | None
    weights_text: str | None
    reported_variant: str

    def to_dict(self) -> dict[str, object]:
        # the reported variant's scores at the top level, between the settings and the references
        settings = {"alpha": self.alpha, "layers": self.layers, "split": self.split}
        references = {
            "first_stage": self.first_stage,
            "weights": self.weights,
            "weights_text": self.weights_text,
        }
        return {
            **settings,
            **self.scores[self.reported_variant],
            **references,
            "reported_variant": self.reported_variant,
            "variants": self.scores,
        }


@dataclass
class SystemOutcome:
    """What one system produced: a table row, a sweep or an ablation section (its runs are
    written as they are scored)."""

    name: str
    row: SystemResult | None = None  # None: an ablation has no row in the table
    sweep: SweepResult | None = None
    ablation: AblationResult | None = None


@dataclass
class MeasuredRow:
    """A row of ``results.json`` ``systems``, with its means (and per-query values for
    ``metrics/test.json``)."""

    result: SystemResult
    scores: dict[str | None, VariantScores]  # by variant; the first stage's one run under None
    reported: str

    def to_dict(self) -> dict[str, object]:
        row = self.result
        out: dict[str, object] = {"name": row.name, "type": row.type, "details": row.details.strip("; ")}
        if not row.has_variants:
            out["mean"] = self.scores[None]["mean"]
            return out
        out["mean"] = self.scores[self.reported]["mean"]
        out["reported_variant"] = self.reported
        out["variants"] = {variant: {"mean": value["mean"]} for variant, value in self.scores.items()}
        return out

    def per_query(self) -> dict[str, object]:
        if not self.result.has_variants:
            return dict(self.scores[None])
        reported = self.scores[self.reported]
        return {**reported, "reported_variant": self.reported, "variants": self.scores}


# --------------------------------------------------------------------------- texts


def weights_words(steps: Steps, weights: tuple[float, float] | None) -> str | None:
    """``BM25 0.8 · model 0.2``, and what a one-sided fusion equals; None without fusion."""
    from ..report import fusion_equals, weights_text

    if weights is None:
        return None
    name = steps.first_stage_name()
    equals = fusion_equals(weights, name)
    return weights_text(weights, name) + (f"; {equals}" if equals else "")


def details_weights(steps: Steps, fusion: FusionWeights) -> str:
    """``; BM25 0.8 · model 0.2, tuned on dev (ndcg@10)`` for a row's details; '' without fusion."""
    words = weights_words(steps, fusion.weights)
    if words is None:
        return ""
    text, _, equals = words.partition("; ")
    return f"; {text}, {fusion.source.split(':')[0]}" + (f"; {equals}" if equals else "")


def first_stage_text(steps: Steps) -> str:
    fs = steps.config.first_stage
    if fs.kind == "run":
        return f"TREC run {fs.run}, top {fs.k}"
    top = steps.config.scoring.top_k
    return f"BM25 (bm25s, k1={fs.k1}, b={fs.b}, {fs.language}), top {fs.k}; re-ranked: top {top}"


def fusion_text(steps: Steps) -> str:
    from ..report import weights_text

    fusion = steps.config.fusion
    name = steps.first_stage_name()
    if fusion.method == "none":
        return "none: every re-ranking system is the model alone (re-ranker scores only)"
    how = f"per-query min-max of the {name} and model scores, then a weighted sum"
    if fusion.method == "fixed" or steps.data.dev is None:
        extra = "" if fusion.method == "fixed" else " (no dev set to tune on)"
        return f"{how} with fixed weights {weights_text(fusion.weights, name)}{extra}"
    return f"{how} with weights tuned per system on dev by grid search (step {fusion.step}, {fusion.metric})"


# --------------------------------------------------------------------------- significance


def significance(steps: Steps, runs: dict[str, Run]) -> SignificanceInfo:
    """The paired tests of the table's runs: settings, every test with raw and corrected
    p-values (``tests``), and the marks the table shows (``marks``)."""
    from ..evaluation import compare

    config = steps.config
    sig = config.significance
    baselines = config.baselines()
    info: SignificanceInfo = {
        "test": sig.test,
        "p_value": sig.p_value,
        "correction": sig.correction,
        "baselines": baselines,
        "family": None,
        "num_comparisons": 0,
        "tests": [],
        "marks": {s: {m: {"better": [], "worse": []} for m in config.metrics} for s in runs},
    }
    if not baselines or len(runs) < 2:
        return info  # no pair to test: no baseline, or a single system
    comparison = compare(
        runs,
        steps.data.test.qrels,
        config.metrics,
        baselines=baselines,
        test=sig.test,
        p_value=sig.p_value,
        correction=sig.correction,
        seed=config.seed,
    )
    by_key = {canonical_metric(m): m for m in config.metrics}
    info["family"] = comparison.family()
    info["num_comparisons"] = comparison.num_comparisons
    info["tests"] = [{**t.to_dict(), "metric": by_key[t.metric]} for t in comparison.tests]
    info["marks"] = significance_marks(comparison, list(runs), baselines, config.metrics)
    return info


def significance_marks(
    comparison: Comparison, systems: list[str], baselines: list[str], metrics: list[str]
) -> Marks:
    """``{system: {metric: {"better": [baselines], "worse": [baselines]}}}`` from a
    :class:`taskrank.evaluation.Comparison` (its significant paired tests).

    A test between two baselines marks both rows (one ``better``, the other ``worse``), so a
    baseline row carries its results against the other baselines like any other row."""
    marks: Marks = {s: {m: {"better": [], "worse": []} for m in metrics} for s in systems}
    by_key = {canonical_metric(m): m for m in metrics}
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


# --------------------------------------------------------------------------- results.json


def results_dict(
    steps: Steps,
    rows: list[MeasuredRow],
    outcomes: list[SystemOutcome],
    significance_info: SignificanceInfo,
) -> ResultsJson:
    """``results.json`` (without ``environment``, which the runner adds)."""
    config, data = steps.config, steps.data
    test = data.test
    first_stage = steps.first_stage_name()
    labels = {"fused": f"fused with {first_stage}", "model": "model alone"}
    variants = steps.variants()
    fusion_used = {
        o.row.name: o.row.fusion.record() for o in outcomes if o.row is not None and o.row.fusion is not None
    }
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
        "first_stage": first_stage_text(steps),
        "scoring": steps.resolved_scoring.to_dict() if steps.resolved_scoring is not None else None,
        "fusion": fusion_text(steps),
        "fusion_weights": fusion_used,
        "variants": {
            "reported": steps.reported_variant(),
            "available": variants,
            "labels": {variant: labels[variant] for variant in variants},
            "first_stage": first_stage,
        },
        "metrics": list(config.metrics),
        "primary_metric": config.report.primary_metric,
        "baselines": config.baselines(),
        "systems": [row.to_dict() for row in rows],
        "significance": significance_info,
        "sweeps": {o.name: o.sweep.to_dict() for o in outcomes if o.sweep is not None},
        "ablations": {o.name: o.ablation.to_dict() for o in outcomes if o.ablation is not None},
        # notes on the run as a whole (the dataset's are under dataset.notes): the runner has
        # none to add today; the key stays in the format, and the report lists any it holds
        "notes": [],
        "latex": config.report.latex,
    }
