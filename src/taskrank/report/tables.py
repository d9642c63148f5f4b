"""The results table in Markdown and LaTeX, with significance marks, and the small texts
(metric labels, fusion weights) the report and the runner share."""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from ..latex import latex_escape
from ..vocabulary import display_metric

#: A JSON object of ``results.json`` as written by an experiment and read back (see
#: :mod:`taskrank.report`), whose values the report reads by key.
JsonObject = Mapping[str, Any]
#: ``results.json`` itself.
ResultsJson = JsonObject
#: A row of ``results.json`` ``systems``.
SystemRow = JsonObject
#: A section of ``results.json``: a ``sweeps.<system>`` or an ``ablations.<system>``.
Section = JsonObject
#: the marks of one table cell: ``{"better": [baselines], "worse": [baselines]}``
CellMarks = Mapping[str, Sequence[str]]
#: ``{system: {metric: CellMarks}}`` (``results.json`` ``significance.marks``)
Marks = Mapping[str, Mapping[str, CellMarks]]

_SUPERSCRIPT = str.maketrans(string.ascii_lowercase, "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖqʳˢᵗᵘᵛʷˣʸᶻ")


def metric_label(metric: str) -> str:
    """Display name of a metric: ``ndcg@10`` → ``nDCG@10`` (a name outside the metric grammar is
    shown as written).

    >>> metric_label("recall@100")
    'R@100'
    """
    try:
        return display_metric(metric)
    except ConfigError:
        return metric


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


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _cell(
    name: str, metric: str, value: float | None, marks: Marks, letters: Mapping[str, str], best: bool
) -> str:
    text = fmt(value)
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


def table_variants(results: ResultsJson) -> list[str | None]:
    """The column groups of the results table: the reported variant first, then the other
    (``["fused", "model"]``); ``[None]`` for a single group (fusion ``none``: the model alone
    only, or results written before the variants were stored)."""
    info = results.get("variants") or {}
    available = list(info.get("available") or [])
    if len(available) < 2:
        return [None]
    reported = info.get("reported", available[0])
    return [reported] + [v for v in available if v != reported]


def variant_label(results: ResultsJson, variant: str | None) -> str:
    """The long name of a variant (``fused with BM25``, ``model alone``); '' for ``None``."""
    if variant is None:
        return ""
    labels = (results.get("variants") or {}).get("labels") or {}
    return str(labels.get(variant, VARIANT_HEADS.get(variant, variant)))


def _value(system: SystemRow, variant: str | None, reported: str | None, metric: str) -> float | None:
    """A row's value in a column group: its variant's mean; a row without variants (the first
    stage) has one run, shown in the reported group only."""
    variants = system.get("variants")
    if variant is None or (variants is None and variant == reported):
        return system["mean"].get(metric)
    if variants is None:
        return None
    return (variants.get(variant) or {}).get("mean", {}).get(metric)


def _columns(results: ResultsJson) -> list[tuple[str | None, str]]:
    """(variant, metric) of every value column, group by group."""
    metrics: list[str] = list(results["metrics"])
    return [(variant, metric) for variant in table_variants(results) for metric in metrics]


def results_table(results: ResultsJson, *, digits: int = 3) -> str:
    """The paper-style Markdown table: one row per system, one column per metric, in two groups
    when the re-rankers are fused with the first stage: ``(fused)`` first (the reported variant:
    the one the significance marks use; fusion ``none`` has the model alone only), then
    ``(model alone)``, the re-ranker's scores only.

    A superscript letter marks a significant improvement over the baseline of that letter; a
    ``₋`` followed by letters marks a significant loss. The best value of each column is bold.
    """
    systems: list[SystemRow] = list(results["systems"])
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


def results_latex(results: ResultsJson, *, digits: int = 3) -> str:
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
            cells.append(fmt(_value(system, variant, reported, metric), digits) + sup)
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    """:func:`latex_escape`, with α as ``$\\alpha$`` (system names of this report hold α).

    >>> print(_latex_escape("TA α=0.5 ~ run_1"))
    TA $\\alpha$=0.5 \\textasciitilde{} run\\_1
    """
    return latex_escape(text).replace("α", r"$\alpha$")


def _latex_marks(entry: CellMarks, letters: Mapping[str, str]) -> str:
    """``$^{ab}_{-c}$``: better than baselines a and b, worse than c (as ``_cell`` in Markdown)."""
    better = "".join(letters[b] for b in entry.get("better", ()) if b in letters)
    worse = "".join(letters[b] for b in entry.get("worse", ()) if b in letters)
    if not better and not worse:
        return ""
    return "$" + (f"^{{{better}}}" if better else "") + (f"_{{-{worse}}}" if worse else "") + "$"
