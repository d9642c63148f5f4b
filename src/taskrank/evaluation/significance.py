"""Paired significance tests between systems and the comparison table that reports them.

Tests are paired over the judged queries: Student's t (scipy ``ttest_rel``) and Fisher's
randomisation test (sign flips of the per-query differences, scipy ``permutation_test``,
seeded; Smucker, Allan & Carterette, CIKM 2007, recommend it for IR).

The family of tests, per metric: with baselines, every system against every baseline other than
itself, two baselines against each other once; without, every pair of systems. Bonferroni
correction multiplies each p-value by the size of that family, the same for every row, so two
systems with identical per-query values get identical p-values and identical marks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..latex import latex_escape
from ..vocabulary import CORRECTIONS, SIGNIFICANCE_TESTS
from .metrics import DEFAULT_METRICS, RULES, Evaluation, canonical_metric, display_metric, evaluate

logger = logging.getLogger(__name__)

#: The paired tests, name -> description (taskrank.vocabulary's list, under its old name).
TESTS: dict[str, str] = SIGNIFICANCE_TESTS

# per-query differences this small are rounding noise, not a difference: such a pair gets p = 1
EQUAL_TOLERANCE = 1e-12


def paired_test(
    a: Sequence[float], b: Sequence[float], test: str = "student", *, seed: int = 42, resamples: int = 10_000
) -> float:
    """Two-sided p-value that paired samples ``a`` and ``b`` have the same mean.

    Identical samples (every difference within ``EQUAL_TOLERANCE``) give p = 1, never NaN;
    a constant non-zero difference gives p = 0 under Student's t (its t is infinite). The test
    is symmetric: swapping ``a`` and ``b`` gives the same p. Fisher's test enumerates all sign
    flips when there are at most ``resamples`` of them, and otherwise draws ``resamples`` with
    ``seed``.

    >>> paired_test([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], "fisher")  # 2 of 16 flips as extreme
    0.125
    """
    if test not in TEST_FUNCTIONS:
        raise ConfigError(f"unknown significance test {test!r}; valid: {', '.join(TESTS)}")
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ConfigError(f"paired samples must be 1-D and of equal length, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DataError("paired samples must be finite numbers, got NaN or infinity")
    diff = x - y
    if x.size < 2 or np.all(np.abs(diff) <= EQUAL_TOLERANCE):
        return 1.0  # no difference (scipy's ttest_rel would give NaN here)
    return TEST_FUNCTIONS[test](x, y, seed, resamples)


def _student(x: np.ndarray, y: np.ndarray, seed: int, resamples: int) -> float:
    from scipy import stats

    diff = x - y
    if np.all(diff == diff[0]):
        return 0.0  # a constant non-zero difference: the t statistic is infinite
    return float(stats.ttest_rel(x, y).pvalue)


def _fisher(x: np.ndarray, y: np.ndarray, seed: int, resamples: int) -> float:
    from scipy import stats

    result = stats.permutation_test(
        (x - y,),
        lambda d, axis: np.abs(np.mean(d, axis=axis)),
        permutation_type="samples",
        n_resamples=resamples,
        alternative="greater",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


#: The registry of paired tests: one function per name of ``vocabulary.SIGNIFICANCE_TESTS``.
TEST_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray, int, int], float]] = {
    "student": _student,
    "fisher": _fisher,
}
#: The registry of corrections: the corrected p of one of ``m`` comparisons.
CORRECTION_FUNCTIONS: dict[str, Callable[[float, int], float]] = {
    "bonferroni": lambda p, m: min(1.0, p * m),
    "none": lambda p, m: p,
}
if tuple(TEST_FUNCTIONS) != tuple(SIGNIFICANCE_TESTS) or tuple(CORRECTION_FUNCTIONS) != tuple(CORRECTIONS):
    raise RuntimeError("evaluation.significance implements other tests or corrections than the vocabulary")


@dataclass(frozen=True)
class PairTest:
    """One comparison: ``system`` against ``baseline`` on ``metric``.

    ``difference`` is mean(system) − mean(baseline); ``p_value`` the raw two-sided p-value,
    ``p_corrected`` after the correction; ``significant`` is ``p_corrected < level``.
    """

    metric: str
    system: str
    baseline: str
    difference: float
    p_value: float
    p_corrected: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: both p-values (raw and corrected), the decision and the winner."""
        return {
            "system": self.system,
            "baseline": self.baseline,
            "metric": self.metric,
            "difference": self.difference,
            "p_value_raw": self.p_value,
            "p_value_corrected": self.p_corrected,
            "significant": self.significant,
            "winner": self.winner,
        }

    @property
    def winner(self) -> str | None:
        """The significantly better of the two, or None."""
        if not self.significant or self.difference == 0:
            return None
        return self.system if self.difference > 0 else self.baseline


@dataclass
class Comparison:
    """Mean metrics per system plus paired tests; renders itself as Markdown, LaTeX and JSON."""

    systems: list[str]
    metrics: tuple[str, ...]
    evaluations: dict[str, Evaluation]
    tests: list[PairTest]
    test: str
    p_value: float
    correction: str
    num_comparisons: int
    seed: int
    baselines: list[str] = field(default_factory=list)

    def mean(self, system: str, metric: str) -> float:
        """Mean value of ``metric`` for ``system``."""
        return self.evaluations[system].mean[canonical_metric(metric)]

    def beats(self, system: str, metric: str) -> list[str]:
        """The systems ``system`` is significantly better than on ``metric``."""
        key = canonical_metric(metric)
        losers = []
        for t in self.tests:
            if t.metric == key and t.winner == system:
                losers.append(t.baseline if t.system == system else t.system)
        return [s for s in self.systems if s in losers]

    def letters(self) -> dict[str, str]:
        """The letter that marks each system in the tables (a, b, …, z, aa, …)."""
        out = {}
        for i, name in enumerate(self.systems):
            label, n = "", i
            while True:
                label = chr(ord("a") + n % 26) + label
                n = n // 26 - 1
                if n < 0:
                    break
            out[name] = label
        return out

    def family(self) -> str:
        """In words, which pairs are tested (the family the correction counts)."""
        if self.baselines:
            return (
                f"every system against every baseline other than itself ({', '.join(self.baselines)}), "
                "baselines against each other once"
            )
        return "every pair of systems"

    def notes(self) -> list[str]:
        """The legend: what a superscript means, the test and correction, the counting rules."""
        first = self.evaluations[self.systems[0]]
        settings = (
            f"{TESTS[self.test]} (two-sided) on the per-query values, p < {self.p_value:g} after "
            f"{CORRECTIONS[self.correction]} over {self.num_comparisons} comparison(s) per metric "
            f"({self.family()})"
        )
        if not self.num_comparisons:
            legend = "No significance tests: there is no pair of systems to compare (a single system)."
        elif not any(t.significant for t in self.tests):
            legend = f"No difference is significant: {settings}."
        else:
            legend = f"A superscript letter marks a significant improvement over that system: {settings}."
        lines = [
            legend,
            f"{RULES[0]} {len(first.queries)} judged queries evaluated.",
            RULES[1]
            + " "
            + "; ".join(f"{s}: {len(self.evaluations[s].empty)}" for s in self.systems)
            + " such queries.",
        ]
        excluded = {s: len(self.evaluations[s].excluded) for s in self.systems}
        if any(excluded.values()):
            lines.append(
                "Run queries without judgments excluded: "
                + "; ".join(f"{s}: {n}" for s, n in excluded.items() if n)
                + "."
            )
        if self.test == "fisher":
            lines.append(f"Randomisation test seed: {self.seed}.")
        return lines

    def _best(self, metric: str) -> float:
        return max(self.mean(s, metric) for s in self.systems)

    def to_markdown(self, digits: int = 4) -> str:
        """A Markdown table (best value per metric in bold) followed by its legend."""
        letters = self.letters()
        header = "| | system | " + " | ".join(display_metric(m) for m in self.metrics) + " |"
        lines = [header, "|---|---|" + "---:|" * len(self.metrics)]
        for s in self.systems:
            cells = []
            for m in self.metrics:
                value = f"{self.mean(s, m):.{digits}f}"
                if self.mean(s, m) == self._best(m):
                    value = f"**{value}**"
                marks = "".join(letters[x] for x in self.beats(s, m))
                cells.append(value + (f"<sup>{marks}</sup>" if marks else ""))
            lines.append(f"| {letters[s]} | {s} | " + " | ".join(cells) + " |")
        return "\n".join([*lines, "", *(f"- {n}" for n in self.notes())]) + "\n"

    def to_latex(self, digits: int = 4, caption: str | None = None) -> str:
        """A booktabs ``table`` (best value per metric in bold); the legend goes in the caption."""
        letters = self.letters()
        cols = "ll" + "r" * len(self.metrics)
        rows = []
        for s in self.systems:
            cells = []
            for m in self.metrics:
                value = f"{self.mean(s, m):.{digits}f}"
                if self.mean(s, m) == self._best(m):
                    value = f"\\textbf{{{value}}}"
                marks = "".join(letters[x] for x in self.beats(s, m))
                cells.append(value + (f"$^{{{marks}}}$" if marks else ""))
            rows.append(f"({letters[s]}) & {latex_escape(s)} & " + " & ".join(cells) + r" \\")
        legend = " ".join(latex_escape(n) for n in self.notes())
        text = caption + " " + legend if caption else legend
        return "\n".join(
            [
                r"\begin{table}[t]",
                r"\centering",
                f"\\begin{{tabular}}{{{cols}}}",
                r"\toprule",
                " & System & " + " & ".join(latex_escape(display_metric(m)) for m in self.metrics) + r" \\",
                r"\midrule",
                *rows,
                r"\bottomrule",
                r"\end{tabular}",
                f"\\caption{{{text}}}",
                r"\end{table}",
                "",
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, means, every test with raw and corrected p-values, notes."""
        return {
            "systems": list(self.systems),
            "metrics": list(self.metrics),
            "test": self.test,
            "p_value": self.p_value,
            "correction": self.correction,
            "num_comparisons": self.num_comparisons,
            "seed": self.seed,
            "baselines": list(self.baselines),
            "num_queries": len(self.evaluations[self.systems[0]].queries),
            "mean": {s: {m: self.mean(s, m) for m in self.metrics} for s in self.systems},
            "beats": {s: {m: self.beats(s, m) for m in self.metrics} for s in self.systems},
            "family": self.family(),
            "tests": [t.to_dict() for t in self.tests],
            "empty_queries": {s: len(self.evaluations[s].empty) for s in self.systems},
            "notes": self.notes(),
        }


def comparison_pairs(systems: Sequence[str], baselines: Sequence[str]) -> list[tuple[str, str]]:
    """The ``(system, baseline)`` pairs that ``compare`` tests, per metric.

    Every system against every baseline other than itself, in row order; two baselines are
    tested once, the one listed later in ``baselines`` as the system. Without baselines, every
    pair of systems. A baseline row is tested like any other, so a system whose run equals a
    baseline's gets the same tests (and marks) as that baseline.

    >>> comparison_pairs(["bm25", "ranker", "merged"], ["bm25", "ranker"])
    [('ranker', 'bm25'), ('merged', 'bm25'), ('merged', 'ranker')]
    """
    systems = list(systems)
    if not baselines:
        return [(systems[j], systems[i]) for i in range(len(systems)) for j in range(i + 1, len(systems))]
    order = {b: i for i, b in enumerate(baselines)}
    return [
        (s, b)
        for s in systems
        for b in baselines
        if s != b and not (s in order and order[s] < order[b])  # tested the other way round
    ]


def compare(
    runs: Mapping[str, Mapping[str, Mapping[str, float]]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    baselines: Sequence[str] | None = None,
    test: str = "student",
    p_value: float = 0.01,
    correction: str = "bonferroni",
    seed: int = 42,
) -> Comparison:
    """Evaluate several runs on the same judged queries and test the differences.

    With ``baselines`` every system, baselines included, is tested against every baseline
    other than itself, and two baselines against each other once (as ``(later, earlier)`` in
    ``baselines`` order); without, every pair is tested. Bonferroni multiplies each p by the
    number of tests per metric, the same for every row.

    >>> table = compare({"bm25": bm25, "merged": merged}, qrels, baselines=["bm25"])  # doctest: +SKIP
    >>> print(table.to_markdown())  # doctest: +SKIP
    """
    if test not in TESTS:
        raise ConfigError(f"unknown significance test {test!r}; valid: {', '.join(TESTS)}")
    if correction not in CORRECTION_FUNCTIONS:
        raise ConfigError(f"unknown correction {correction!r}; valid: {', '.join(CORRECTIONS)}")
    if not 0 < p_value < 1:
        raise ConfigError(f"p_value must be in (0, 1), got {p_value}")
    systems = list(runs)
    if not systems:
        raise ConfigError("compare needs at least one run")
    keys = tuple(dict.fromkeys(canonical_metric(m) for m in metrics))
    base = list(dict.fromkeys(baselines or []))
    unknown = [b for b in base if b not in runs]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {', '.join(unknown)}; systems: {', '.join(systems)}")
    pairs = comparison_pairs(systems, base)
    evaluations = {name: evaluate(run, qrels, keys) for name, run in runs.items()}
    m = len(pairs)
    tests: list[PairTest] = []
    for key in keys:
        for system, baseline in pairs:
            a = evaluations[system].values(key)
            b = evaluations[baseline].values(key)
            p = paired_test(a, b, test, seed=seed)
            corrected = CORRECTION_FUNCTIONS[correction](p, m)
            diff = float(np.mean(a) - np.mean(b))
            tests.append(PairTest(key, system, baseline, diff, p, corrected, corrected < p_value))
    return Comparison(systems, keys, evaluations, tests, test, p_value, correction, m, seed, base)
