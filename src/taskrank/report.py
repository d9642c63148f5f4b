"""Reports of an experiment: a paper-style Markdown table with significance marks, and plots.

Everything here works from plain dicts (the ``results.json`` of a results folder), so a report
can be re-rendered without re-running anything::

    import json
    from taskrank.report import render_markdown
    print(render_markdown(json.load(open("results/scifact/results.json"))))

The results dict holds:

- ``title``, ``description``; ``dataset``: ``{"name", "split", "dev", "queries", "documents", "notes"}``
- ``metrics``: metric names, in column order; ``primary_metric``
- ``variants``: ``{"reported": "fused" | "model", "available": [...], "labels": {"fused": "fused with
  BM25", "model": "model alone"}, "first_stage": "BM25"}``: a re-ranking system is scored as the
  model alone (re-ranker scores only) and, unless fusion is ``none``, fused with the first stage;
  the reported variant (fused, or the model with fusion ``none``) is the one the significance
  marks and the α selection use (optional: older results have one variant)
- ``systems``: a list of ``{"name", "type", "mean": {metric: value}, "details": str}`` in row order;
  a re-ranking row adds ``"reported_variant"`` and ``"variants": {variant: {"mean": {...}}}``, its
  ``mean`` being the reported variant's
- ``baselines``: names of the systems the others are tested against
- ``significance``: ``{"test", "p_value", "correction", "baselines", "family", "num_comparisons",
  "tests": [{"system", "baseline", "metric", "difference", "p_value_raw", "p_value_corrected",
  "significant", "winner"}], "marks": {system: {metric: {"better": [baseline, ...], "worse": [...]}}}}``
- ``sweeps``: ``{system: {"alphas", "dev", "test", "best_alpha", "select_on", "weights", "weights_text",
  "ranker": {"dev", "test"}, "first_stage": {"name", "dev", "test"}, "reported_variant", "variants":
  {variant: {"dev", "test", "ranker"}}}}`` (optional; top-level values are the reported variant's)
- ``ablations``: ``{system: {"alpha", "layers", "split", "only": [...], "except": [...], "ranker", "full",
  "first_stage": {"name", "value"}, "weights", "weights_text", "reported_variant", "variants": {variant:
  {"only", "except", "ranker", "full"}}}}``
- ``environment``: versions, device, seed (optional)
- ``scoring``: the settings every system was scored with, ``{"kind", "max_length", "max_length_from",
  "options", "dtype", "batch_size", "top_k", "description"}`` (optional)

Plots are drawn with matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

import math
import os
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .atomic import atomic_file
from .errors import ConfigError

_SUPERSCRIPT = str.maketrans(string.ascii_lowercase, "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖqʳˢᵗᵘᵛʷˣʸᶻ")

METRIC_LABELS = {
    "ndcg": "nDCG",
    "p": "P",
    "precision": "P",
    "recall": "R",
    "r": "R",
    "map": "MAP",
    "mrr": "MRR",
}


def metric_label(metric: str) -> str:
    """Display name of a metric: ``ndcg@10`` → ``nDCG@10``.

    >>> metric_label("recall@100")
    'R@100'
    """
    name, _, cutoff = metric.partition("@")
    label = METRIC_LABELS.get(name.lower(), name)
    return f"{label}@{cutoff}" if cutoff else label


def weights_text(weights: Sequence[float], first_stage: str = "BM25") -> str:
    """Fusion weights with each side named (``first_stage`` is the first stage's name).

    >>> weights_text((0.8, 0.2))
    'BM25 0.8 · model 0.2'
    """
    return f"{first_stage} {weights[0]:g} · model {weights[1]:g}"


def fusion_equals(weights: Sequence[float], first_stage: str = "BM25") -> str | None:
    """What a fusion that gives all its weight to one side equals, in words; None otherwise.

    >>> fusion_equals((1.0, 0.0))
    'equals BM25: fusion weight 1 on the first stage'
    >>> fusion_equals((0.5, 0.5)) is None
    True
    """
    if weights[1] == 0 and weights[0] > 0:
        return f"equals {first_stage}: fusion weight 1 on the first stage"
    if weights[0] == 0 and weights[1] > 0:
        return "equals the model alone: fusion weight 1 on the model"
    return None


def baseline_letters(baselines: Sequence[str]) -> dict[str, str]:
    """Letters marking significance against each baseline (``a`` for the first, …)."""
    if len(baselines) > 26:
        raise ConfigError(f"at most 26 significance baselines can be marked, got {len(baselines)}")
    return {name: string.ascii_lowercase[i] for i, name in enumerate(baselines)}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _cell(
    name: str, metric: str, value: Any, marks: Mapping[str, Any], letters: Mapping[str, str], best: bool
) -> str:
    text = _fmt(value)
    if best:
        text = f"**{text}**"
    entry = marks.get(name, {}).get(metric, {})
    better = "".join(letters[b] for b in entry.get("better", ()) if b in letters)
    worse = "".join(letters[b] for b in entry.get("worse", ()) if b in letters)
    if better:
        text += better.translate(_SUPERSCRIPT)
    if worse:
        text += "₋" + worse  # subscript minus: significantly worse than these baselines
    return text


VARIANT_HEADS = {"fused": "fused", "model": "model alone"}


def table_variants(results: Mapping[str, Any]) -> list[str | None]:
    """The column groups of the results table: the reported variant first, then the other
    (``["fused", "model"]``); ``[None]`` for a single group (fusion ``none``: the model alone
    only, or results written before the variants were stored)."""
    info = results.get("variants") or {}
    available = list(info.get("available") or [])
    if len(available) < 2:
        return [None]
    reported = info.get("reported", available[0])
    return [reported] + [v for v in available if v != reported]


def variant_label(results: Mapping[str, Any], variant: str | None) -> str:
    """The long name of a variant (``fused with BM25``, ``model alone``); '' for ``None``."""
    if variant is None:
        return ""
    labels = (results.get("variants") or {}).get("labels") or {}
    return str(labels.get(variant, VARIANT_HEADS.get(variant, variant)))


def _value(system: Mapping[str, Any], variant: str | None, reported: str | None, metric: str) -> Any:
    """A row's value in a column group: its variant's mean; a row without variants (the first
    stage) has one run, shown in the reported group only."""
    variants = system.get("variants")
    if variant is None or (variants is None and variant == reported):
        return system["mean"].get(metric)
    if variants is None:
        return None
    return (variants.get(variant) or {}).get("mean", {}).get(metric)


def _columns(results: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """(variant, metric) of every value column, group by group."""
    metrics: list[str] = list(results["metrics"])
    return [(variant, metric) for variant in table_variants(results) for metric in metrics]


def results_table(results: Mapping[str, Any], *, digits: int = 3) -> str:
    """The paper-style Markdown table: one row per system, one column per metric, in two groups
    when the re-rankers are fused with the first stage: ``(fused)`` first (the reported variant:
    the one the significance marks use; fusion ``none`` has the model alone only), then
    ``(model alone)``, the re-ranker's scores only.

    A superscript letter marks a significant improvement over the baseline of that letter; a
    ``₋`` followed by letters marks a significant loss. The best value of each column is bold.
    """
    systems: list[Mapping[str, Any]] = list(results["systems"])
    significance = results.get("significance") or {}
    letters = baseline_letters(results.get("baselines") or [])
    marks = significance.get("marks") or {}
    reported = (results.get("variants") or {}).get("reported")
    columns = _columns(results)
    best: dict[tuple[str | None, str], float] = {}
    for column in columns:
        values = [_value(s, column[0], reported, column[1]) for s in systems]
        finite = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
        if finite:
            best[column] = round(max(finite), digits)
    heads = [
        metric_label(metric) + (f" ({VARIANT_HEADS.get(variant, variant)})" if variant else "")
        for variant, metric in columns
    ]
    head = ["system", *heads, "details"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system in systems:
        name = system["name"]
        label = f"{name} ({letters[name]})" if name in letters else name
        cells = [label]
        for column in columns:
            variant, metric = column
            value = _value(system, variant, reported, metric)
            is_best = value is not None and not math.isnan(value) and round(value, digits) == best.get(column)
            shown = marks if variant in (None, reported) else {}  # the tests are of the reported runs
            cells.append(_cell(name, metric, value, shown, letters, is_best))
        cells.append(str(system.get("details", "")).replace("|", "\\|"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def results_latex(results: Mapping[str, Any], *, digits: int = 3) -> str:
    """The results table as a LaTeX ``tabular`` (booktabs), significance letters as superscripts;
    the column groups of :func:`results_table` under ``\\multicolumn`` heads."""
    metrics: list[str] = list(results["metrics"])
    letters = baseline_letters(results.get("baselines") or [])
    marks = (results.get("significance") or {}).get("marks") or {}
    reported = (results.get("variants") or {}).get("reported")
    groups = table_variants(results)
    columns = _columns(results)

    lines = ["\\begin{tabular}{l" + "r" * len(columns) + "}", "\\toprule"]
    if groups != [None]:
        width = len(metrics)
        lines.append(
            " & "
            + " & ".join(
                f"\\multicolumn{{{width}}}{{c}}{{{_latex_escape(variant_label(results, v))}}}" for v in groups
            )
            + " \\\\"
        )
        lines.append(
            "".join(f"\\cmidrule(lr){{{2 + i * width}-{1 + (i + 1) * width}}}" for i in range(len(groups)))
        )
    lines += [
        "System & " + " & ".join(_latex_escape(metric_label(m)) for _, m in columns) + " \\\\",
        "\\midrule",
    ]
    for system in results["systems"]:
        name = system["name"]
        cells = [_latex_escape(name) + (f" ({letters[name]})" if name in letters else "")]
        for variant, metric in columns:
            entry = marks.get(name, {}).get(metric, {}) if variant in (None, reported) else {}
            sup = _latex_marks(entry, letters)
            cells.append(_fmt(_value(system, variant, reported, metric), digits) + sup)
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"$<$", ">": r"$>$"}  # fmt: skip


def latex_escape(text: str) -> str:
    """``text`` safe in a LaTeX table cell: LaTeX's special characters escaped (every LaTeX
    table of taskrank, this report's and ``taskrank evaluate --format latex``, uses it).

    >>> print(latex_escape("run_1 ~ 50%"))
    run\\_1 \\textasciitilde{} 50\\%
    """
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_escape(text: str) -> str:
    """:func:`latex_escape`, with α as ``$\\alpha$`` (system names of this report hold α).

    >>> print(_latex_escape("TA α=0.5 ~ run_1"))
    TA $\\alpha$=0.5 \\textasciitilde{} run\\_1
    """
    return latex_escape(text).replace("α", r"$\alpha$")


def _latex_marks(entry: Mapping[str, Any], letters: Mapping[str, str]) -> str:
    """``$^{ab}_{-c}$``: better than baselines a and b, worse than c (as ``_cell`` in Markdown)."""
    better = "".join(letters[b] for b in entry.get("better", ()) if b in letters)
    worse = "".join(letters[b] for b in entry.get("worse", ()) if b in letters)
    if not better and not worse:
        return ""
    return "$" + (f"^{{{better}}}" if better else "") + (f"_{{-{worse}}}" if worse else "") + "$"


_TEST_NAMES = {"student": "paired Student's t-test", "fisher": "Fisher's randomisation test"}


def _significance_note(results: Mapping[str, Any]) -> str:
    """The sentence under the table: what the marks mean, or that no difference is significant.

    Results from before the tests were stored (no ``significance.tests``) keep the plain legend.
    """
    sig = results.get("significance") or {}
    letters = baseline_letters(results.get("baselines") or [])
    if not letters:
        return ""
    legend = ", ".join(f"{letter} = {name}" for name, letter in letters.items())
    test = _TEST_NAMES.get(sig.get("test", ""), sig.get("test", "test"))
    correction = sig.get("correction", "none")
    tests = sig.get("tests")
    count = sig.get("num_comparisons")
    if correction in (None, "none"):
        corr_text = ", no correction for multiple comparisons" if tests is not None else ""
    else:
        corr_text = f", {correction} correction" + (f" over {count} tests per metric" if count else "")
    family = f"; tested: {sig['family']}" if sig.get("family") else ""
    settings = f"{test}, two-sided, p < {sig.get('p_value', 0.01)}{corr_text}{family}"
    if tests is not None and not tests:
        return f"No significance tests: there is no pair of systems to compare. Baselines: {legend}."
    stored = " Every p-value, raw and corrected, is in results.json (`significance.tests`)." if tests else ""
    if tests is not None and not any(t.get("significant") for t in tests):
        return (
            f"No difference is significant ({settings}). Baselines: {legend}. Bold: best in column.{stored}"
        )
    return (
        f"Superscripts mark a significant improvement over the baselines ({legend}); `₋x` marks a "
        f"significant loss against x ({settings}). Bold: best in column.{stored}"
    )


def _variant_order(section: Mapping[str, Any]) -> list[str | None]:
    """The variants of a sweep or ablation section, the reported one first; ``[None]`` for a
    section written before the variants were stored (its top-level values only)."""
    variants = section.get("variants") or {}
    if not variants:
        return [None]
    reported = section.get("reported_variant")
    return [v for v in variants if v == reported] + [v for v in variants if v != reported]


def _head(text: str, variant: str | None, several: bool) -> str:
    return f"{text} ({VARIANT_HEADS.get(variant, variant)})" if several and variant else text


def _sweep_section(
    name: str, sweep: Mapping[str, Any], metric: str, plot: str | None, labels: Mapping[str, str]
) -> str:
    label = metric_label(metric)
    oracle = (
        " — chosen on test: an oracle, not a zero-shot result" if sweep.get("select_on") == "test" else ""
    )
    order = _variant_order(sweep)
    several = len(order) > 1
    reported = sweep.get("reported_variant")
    if reported == "model":
        among = ", among the model-alone runs"
    elif reported:
        among = f", among the runs {labels.get(reported, reported)}"
    else:
        among = ""
    chosen = f"Best α = {sweep.get('best_alpha')} (selected on {sweep.get('select_on')}{among}{oracle})."
    if sweep.get("weights_text"):
        chosen += f" Fusion weights at that α: {sweep['weights_text']}."
    lines = [f"### α sweep: {name}", "", chosen]
    n = len(sweep["alphas"])

    def values(variant: str | None, split: str) -> list[Any]:
        source = sweep if variant is None else sweep["variants"][variant]
        return list(source.get(split) or [None] * n)

    columns = [
        (variant, split)
        for variant in order
        for split in ("dev", "test")
        if split == "dev" or any(v is not None for v in values(variant, "test"))
    ]
    head = ["α", *(_head(f"{label} {split}", variant, several) for variant, split in columns)]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, alpha in enumerate(sweep["alphas"]):
        mark = " ◀" if alpha == sweep.get("best_alpha") else ""
        cells = [f"{alpha:g}{mark}", *(_fmt(values(v, split)[i]) for v, split in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    first = sweep.get("first_stage")
    if first:  # references: the first stage (one run, in the reported group), the ranker alone
        cells = [_fmt(first.get(split)) if variant in (None, reported) else "–" for variant, split in columns]
        lines.append(f"| {first.get('name', 'first stage')} (reference) | " + " | ".join(cells) + " |")
    if sweep.get("ranker") is not None or any((sweep.get("variants") or {}).values()):
        cells = []
        for variant, split in columns:
            source = sweep if variant is None else sweep["variants"][variant]
            cells.append(_fmt((source.get("ranker") or {}).get(split)))
        if any(c != "–" for c in cells):
            lines.append("| ranker (reference) | " + " | ".join(cells) + " |")
    if plot:
        shown = f", {labels.get(reported, reported)}" if several and reported else ""
        lines += ["", f"![{label} against α{shown}]({plot})"]
    return "\n".join(lines)


def _ablation_section(
    name: str, ablation: Mapping[str, Any], metric: str, plot: str | None, labels: Mapping[str, str]
) -> str:
    label = metric_label(metric)
    modes = [m for m in ("only", "except") if ablation.get(m)]
    order = _variant_order(ablation)
    several = len(order) > 1
    split = ablation.get("split")
    where = f", {split} split" if split else ""
    lines = [
        f"### Layer ablation: {name} (α = {ablation.get('alpha')}{where})",
        "",
        "`only L`: the domain vector added to layer L alone; `except L`: added to every layer but L.",
    ]
    if ablation.get("weights_text") and "fused" in order:
        weights = ablation["weights_text"]
        lines[-1] += f" Every variant is fused with the all-layer merge's weights ({weights})."
    refs = []
    for variant in order:
        source = ablation if variant is None else ablation["variants"][variant]
        text = f"ranker {_fmt(source.get('ranker'))}, all layers {_fmt(source.get('full'))}"
        refs.append(f"{labels.get(variant, variant)}: {text}" if variant else text)
    first = ablation.get("first_stage")
    if first and first.get("value") is not None:
        refs.append(f"{first.get('name', 'first stage')}: {_fmt(first['value'])}")
    lines[-1] += " Reference: " + "; ".join(refs) + "."
    columns = [(variant, mode) for variant in order for mode in modes]
    lines += [
        "",
        "| layer | " + " | ".join(_head(f"{label} {mode}", v, several) for v, mode in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for i, layer in enumerate(ablation["layers"]):
        cells = []
        for variant, mode in columns:
            source = ablation if variant is None else ablation["variants"][variant]
            cells.append(_fmt(source[mode][i]))
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    if plot:
        lines += ["", f"![{label} per layer]({plot})"]
    return "\n".join(lines)


def _variants_note(results: Mapping[str, Any]) -> str:
    """The sentence under the table: which variant each column group is, and which one the
    significance marks and the α selection use."""
    info = results.get("variants") or {}
    available = list(info.get("available") or [])
    if not available:
        return ""
    reported = info.get("reported")
    if len(available) == 1:
        return (
            f"Every re-ranking row is the **{variant_label(results, reported)}** (fusion: none, the "
            "re-ranker's scores only); the significance marks and the α selection use these scores."
        )
    first = info.get("first_stage", "")
    return (
        "Each re-ranking system is shown twice: **(fused)**, its scores fused with the first stage's"
        + (f" ({first})" if first else "")
        + " with the weights in *details*, and **(model alone)**, the re-ranker's scores only; a "
        "first-stage row has no model-alone value. "
        f"The configured fusion makes *{variant_label(results, reported)}* the reported variant: the "
        "significance marks and the α selection use it."
    )


def render_markdown(results: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """The whole ``report.md``: the table, the chosen α and fusion weights, sweeps, ablations.

    ``plots`` maps ``"sweep:<system>"`` / ``"ablation:<system>"`` to a PNG path relative to the report.
    """
    plots = plots or {}
    metric = results.get("primary_metric", "ndcg@10")
    dataset = results.get("dataset") or {}
    parts = [f"# {results.get('title', 'taskrank experiment')}"]
    if results.get("description"):
        parts.append(str(results["description"]).strip())
    facts = []
    if dataset:
        facts.append(
            f"Dataset **{dataset.get('name')}**, split `{dataset.get('split')}`: "
            f"{dataset.get('queries')} queries, "
            f"{dataset.get('documents')} documents; dev: {dataset.get('dev') or 'none'}."
        )
    if results.get("first_stage"):
        facts.append(f"First stage: {results['first_stage']}.")
    scoring = results.get("scoring")
    if scoring:
        facts.append(f"Scoring (every system): {scoring['description']}.")
    if results.get("fusion"):
        facts.append(f"Fusion: {results['fusion']}.")
    if facts:
        parts.append("\n".join(f"- {f}" for f in facts))
    labels = (results.get("variants") or {}).get("labels") or {}
    parts.append("## Results\n\n" + results_table(results))
    variants_note = _variants_note(results)
    if variants_note:
        parts.append(variants_note)
    note = _significance_note(results)
    if note:
        parts.append(note)
    for name, sweep in (results.get("sweeps") or {}).items():
        parts.append(_sweep_section(name, sweep, metric, plots.get(f"sweep:{name}"), labels))
    for name, ablation in (results.get("ablations") or {}).items():
        parts.append(_ablation_section(name, ablation, metric, plots.get(f"ablation:{name}"), labels))
    notes = list(dataset.get("notes") or []) + list(results.get("notes") or [])
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes))
    env = results.get("environment")
    if env:
        parts.append("## Environment\n\n" + "\n".join(f"- {k}: {v}" for k, v in env.items()))
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- plots


MIN_SPAN = 0.05
"""The smallest y-range of a plot, in metric units (metrics lie in [0, 1]): a narrower axis would
draw differences of a few thousandths, noise on a few dozen queries, as steep effects."""

_SPLIT_COLOURS = {"dev": "C0", "test": "C1"}


def _figure(width: float, height: float) -> Any:
    """A figure outside pyplot's global state (nothing to close, no backend to switch)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    with atomic_file(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    return out


def _honest_ylim(ax: Any, values: Sequence[Any]) -> None:
    """A y-range over ``values`` at least :data:`MIN_SPAN` wide, not below 0."""
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    span = max(high - low, MIN_SPAN)
    middle, half = (low + high) / 2, 0.6 * span
    bottom, top = middle - half, middle + half
    if bottom < 0:
        bottom, top = 0.0, top - bottom
    ax.set_ylim(bottom, top)


def _legend_outside(ax: Any) -> None:
    """The legend right of the axes, where it cannot hide a point or a line."""
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small", frameon=False
    )


def plot_alpha_sweep(
    sweep: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    metric: str = "ndcg@10",
    title: str = "",
    variant: str = "",
) -> Path:
    """Plot the metric against α on dev and test (where scored), marking the chosen α, with
    horizontal reference lines for the first stage (``sweep["first_stage"]``: ``{"name", "dev",
    "test"}``) and the ranker alone (``sweep["ranker"]``: ``{"dev", "test"}``) on each split;
    writes a PNG. ``variant`` names what the values are (e.g. ``fused with BM25``): the ranker
    reference is of the same variant.

    Example::

        plot_alpha_sweep({"alphas": [0, 0.5, 1], "dev": [0.3, 0.4, 0.35], "test": [0.31, 0.38, 0.33],
                          "best_alpha": 0.5, "first_stage": {"name": "BM25", "dev": 0.33, "test": 0.3},
                          "ranker": {"dev": 0.3, "test": 0.31}}, "alpha.png", variant="fused with BM25")
    """
    alphas = list(sweep["alphas"])
    if not alphas:
        raise ConfigError("an α sweep plot needs at least one α")
    fig = _figure(7.0, 3.8)
    ax = fig.add_subplot()
    plotted: list[Any] = []
    splits = []
    for split, style in (("dev", "o-"), ("test", "s--")):
        values = sweep.get(split) or []
        points = [(a, v) for a, v in zip(alphas, values, strict=False) if v is not None]
        if points:
            splits.append(split)
            colour = _SPLIT_COLOURS[split]
            ax.plot([p[0] for p in points], [p[1] for p in points], style, color=colour, label=split)
            plotted += [p[1] for p in points]
    first = sweep.get("first_stage") or {}
    ranker = sweep.get("ranker") or {}
    for split in splits:
        colour = _SPLIT_COLOURS[split]
        if first.get(split) is not None:
            name = first.get("name", "first stage")
            ax.axhline(first[split], color=colour, linestyle="-.", linewidth=1.2, label=f"{name} ({split})")
            plotted.append(first[split])
        if ranker.get(split) is not None:
            ax.axhline(ranker[split], color=colour, linestyle=":", linewidth=1.5, label=f"ranker ({split})")
            plotted.append(ranker[split])
    best = sweep.get("best_alpha")
    if best is not None:
        ax.axvline(best, color="grey", linewidth=8, alpha=0.2, label=f"chosen α = {best:g}")
    _honest_ylim(ax, plotted)
    ax.set_xlabel("α")
    ax.set_ylabel(metric_label(metric) + (f" ({variant})" if variant else ""))
    ax.set_title(title or f"{metric_label(metric)} against α")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return _save(fig, path)


def plot_layer_ablation(
    ablation: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    metric: str = "ndcg@10",
    title: str = "",
    variant: str = "",
) -> Path:
    """Plot the metric of each layer's 'only' and 'except' variant as separate points (layers are
    not a continuum: no line joins them), with the ranker, the all-layer merge and the first stage
    (``ablation["first_stage"]``: ``{"name", "value"}``) as reference lines and the spread of the
    variants shaded; writes a PNG. The y-axis spans at least :data:`MIN_SPAN`; the title names the
    split (``ablation["split"]``) and ``variant``."""
    layers = list(ablation["layers"])
    if not layers:
        raise ConfigError("a layer ablation plot needs at least one layer")
    fig = _figure(max(6.5, 0.35 * len(layers) + 3.5), 3.8)
    ax = fig.add_subplot()
    plotted: list[Any] = []
    offsets = {"only": -0.1, "except": 0.1}
    for mode, marker in (("only", "o"), ("except", "s")):
        values = ablation.get(mode)
        if values:
            x = [layer + offsets[mode] for layer in layers]
            ax.plot(x, values, marker=marker, linestyle="none", markersize=7, label=f"{mode} layer L")
            plotted += list(values)
    variants = [v for v in plotted if v is not None]
    if len(variants) > 1:
        low, high = min(variants), max(variants)
        ax.axhspan(low, high, color="grey", alpha=0.12, label=f"spread of the variants: {high - low:.3f}")
    if ablation.get("ranker") is not None:
        ax.axhline(ablation["ranker"], color="black", linestyle=":", label="ranker (α = 0)")
        plotted.append(ablation["ranker"])
    if ablation.get("full") is not None:
        ax.axhline(
            ablation["full"], color="grey", linestyle="--", label=f"all layers (α = {ablation.get('alpha')})"
        )
        plotted.append(ablation["full"])
    first = ablation.get("first_stage") or {}
    if first.get("value") is not None:
        ax.axhline(first["value"], color="C2", linestyle="-.", label=first.get("name", "first stage"))
        plotted.append(first["value"])
    _honest_ylim(ax, plotted)
    ax.set_xticks(layers)
    ax.set_xlim(min(layers) - 0.5, max(layers) + 0.5)
    ax.set_xlabel("layer L")
    ax.set_ylabel(metric_label(metric) + (f" ({variant})" if variant else ""))
    split = ablation.get("split")
    ax.set_title(title or f"{metric_label(metric)} per layer" + (f", {split} split" if split else ""))
    ax.grid(alpha=0.3, axis="y")
    _legend_outside(ax)
    return _save(fig, path)


def write_report(results: Mapping[str, Any], out_dir: str | os.PathLike[str], *, plots: bool = True) -> Path:
    """Write ``report.md`` and (with ``plots``) the PNG plots into ``out_dir``; returns the report path.

    The plots show the reported variant (:func:`table_variants`), named on their y-axis. Every
    file is written atomically.
    """
    from .atomic import write_text

    out = Path(out_dir)
    metric = results.get("primary_metric", "ndcg@10")
    label = metric_label(metric)
    paths: dict[str, str] = {}
    if plots:
        for i, (name, sweep) in enumerate((results.get("sweeps") or {}).items()):
            rel = f"plots/alpha-{i}.png"
            variant = variant_label(results, sweep.get("reported_variant"))
            title = f"{name}: {label} against α"
            plot_alpha_sweep(sweep, out / rel, metric=metric, title=title, variant=variant)
            paths[f"sweep:{name}"] = rel
        for i, (name, ablation) in enumerate((results.get("ablations") or {}).items()):
            rel = f"plots/layers-{i}.png"
            split = ablation.get("split")
            title = f"{name}: {label} per layer" + (f", {split} split" if split else "")
            variant = variant_label(results, ablation.get("reported_variant"))
            plot_layer_ablation(ablation, out / rel, metric=metric, title=title, variant=variant)
            paths[f"ablation:{name}"] = rel
    report = out / "report.md"
    write_text(report, render_markdown(results, paths))
    if results.get("latex"):
        write_text(out / "report.tex", results_latex(results))
    return report


__all__ = [
    "baseline_letters",
    "fusion_equals",
    "metric_label",
    "plot_alpha_sweep",
    "plot_layer_ablation",
    "render_markdown",
    "results_latex",
    "results_table",
    "table_variants",
    "variant_label",
    "weights_text",
    "write_report",
]
