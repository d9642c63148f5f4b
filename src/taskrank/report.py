"""Reports of an experiment: a paper-style Markdown table with significance marks, and plots.

Everything here works from plain dicts (the ``results.json`` of a results folder), so a report
can be re-rendered without re-running anything::

    import json
    from taskrank.report import render_markdown
    print(render_markdown(json.load(open("results/scifact/results.json"))))

The results dict holds:

- ``title``, ``description``; ``dataset``: ``{"name", "split", "dev", "queries", "documents", "notes"}``
- ``metrics``: metric names, in column order; ``primary_metric``
- ``systems``: a list of ``{"name", "type", "mean": {metric: value}, "details": str}`` in row order
- ``baselines``: names of the systems the others are tested against
- ``significance``: ``{"test", "p_value", "correction", "marks": {system: {metric: {"better": [baseline,
  ...], "worse": [...]}}}}``
- ``sweeps``: ``{system: {"alphas", "dev", "test", "best_alpha", "select_on", "weights"}}`` (optional)
- ``ablations``: ``{system: {"alpha", "layers", "only": [...], "except": [...], "ranker", "full"}}``
- ``environment``: versions, device, seed (optional)
- ``scoring``: the settings every system was scored with, ``{"kind", "max_length", "max_length_from",
  "options", "dtype", "batch_size", "top_k", "description"}`` (optional)

Plots use matplotlib's Agg backend (no display needed).
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


def results_table(results: Mapping[str, Any], *, digits: int = 3) -> str:
    """The paper-style Markdown table: one row per system, one column per metric.

    A superscript letter marks a significant improvement over the baseline of that letter; a
    ``₋`` followed by letters marks a significant loss. The best value of each column is bold.
    """
    metrics: list[str] = list(results["metrics"])
    systems: list[Mapping[str, Any]] = list(results["systems"])
    significance = results.get("significance") or {}
    letters = baseline_letters(results.get("baselines") or [])
    marks = significance.get("marks") or {}
    best: dict[str, float] = {}
    for metric in metrics:
        values = [s["mean"].get(metric) for s in systems]
        finite = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
        if finite:
            best[metric] = round(max(finite), digits)
    head = ["system", *(metric_label(m) for m in metrics), "details"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system in systems:
        name = system["name"]
        label = f"{name} ({letters[name]})" if name in letters else name
        cells = [label]
        for metric in metrics:
            value = system["mean"].get(metric)
            is_best = value is not None and not math.isnan(value) and round(value, digits) == best.get(metric)
            cells.append(_cell(name, metric, value, marks, letters, is_best))
        cells.append(str(system.get("details", "")).replace("|", "\\|"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def results_latex(results: Mapping[str, Any], *, digits: int = 3) -> str:
    """The results table as a LaTeX ``tabular`` (booktabs), significance letters as superscripts."""
    metrics: list[str] = list(results["metrics"])
    letters = baseline_letters(results.get("baselines") or [])
    marks = (results.get("significance") or {}).get("marks") or {}

    def esc(text: str) -> str:
        for char in "\\&%$#_{}":
            text = text.replace(char, "\\" + char)
        return text.replace("α", "$\\alpha$")

    lines = [
        "\\begin{tabular}{l" + "r" * len(metrics) + "}",
        "\\toprule",
        "System & " + " & ".join(esc(metric_label(m)) for m in metrics) + " \\\\",
        "\\midrule",
    ]
    for system in results["systems"]:
        name = system["name"]
        cells = [esc(name) + (f" ({letters[name]})" if name in letters else "")]
        for metric in metrics:
            better = "".join(
                letters[b] for b in marks.get(name, {}).get(metric, {}).get("better", ()) if b in letters
            )
            sup = f"$^{{{better}}}$" if better else ""
            cells.append(_fmt(system["mean"].get(metric), digits) + sup)
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _significance_note(results: Mapping[str, Any]) -> str:
    sig = results.get("significance") or {}
    letters = baseline_letters(results.get("baselines") or [])
    if not letters:
        return ""
    legend = ", ".join(f"{letter} = {name}" for name, letter in letters.items())
    test = {
        "student": "paired Student's t-test",
        "fisher": "Fisher's randomisation test",
    }
    correction = sig.get("correction", "none")
    corr_text = "" if correction in (None, "none") else f", {correction} correction"
    return (
        f"Superscripts mark a significant improvement over the baselines ({legend}); `₋x` marks a "
        f"significant loss against x ({test.get(sig.get('test', ''), sig.get('test', 'test'))}, "
        f"p < {sig.get('p_value', 0.01)}{corr_text}). Bold: best in column."
    )


def _sweep_section(name: str, sweep: Mapping[str, Any], metric: str, plot: str | None) -> str:
    label = metric_label(metric)
    oracle = (
        " — chosen on test: an oracle, not a zero-shot result" if sweep.get("select_on") == "test" else ""
    )
    lines = [
        f"### α sweep: {name}",
        "",
        f"Best α = {sweep.get('best_alpha')} (selected on {sweep.get('select_on')}{oracle}).",
    ]
    has_test = any(v is not None for v in sweep.get("test") or [])
    head = ["α", f"{label} dev"] + ([f"{label} test"] if has_test else [])
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    dev = sweep.get("dev") or [None] * len(sweep["alphas"])
    test = sweep.get("test") or [None] * len(sweep["alphas"])
    for alpha, d, t in zip(sweep["alphas"], dev, test, strict=False):
        mark = " ◀" if alpha == sweep.get("best_alpha") else ""
        cells = [f"{alpha:g}{mark}", _fmt(d)] + ([_fmt(t)] if has_test else [])
        lines.append("| " + " | ".join(cells) + " |")
    if plot:
        lines += ["", f"![{label} against α]({plot})"]
    return "\n".join(lines)


def _ablation_section(name: str, ablation: Mapping[str, Any], metric: str, plot: str | None) -> str:
    label = metric_label(metric)
    modes = [m for m in ("only", "except") if ablation.get(m)]
    lines = [
        f"### Layer ablation: {name} (α = {ablation.get('alpha')})",
        "",
        "`only L`: the domain vector added to layer L alone; `except L`: added to every layer but L. "
        f"Reference: ranker alone {_fmt(ablation.get('ranker'))}, all layers {_fmt(ablation.get('full'))}.",
        "",
        "| layer | " + " | ".join(f"{label} {m}" for m in modes) + " |",
        "|---|" + "---|" * len(modes),
    ]
    for i, layer in enumerate(ablation["layers"]):
        lines.append(f"| {layer} | " + " | ".join(_fmt(ablation[m][i]) for m in modes) + " |")
    if plot:
        lines += ["", f"![{label} per layer]({plot})"]
    return "\n".join(lines)


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
    parts.append("## Results\n\n" + results_table(results))
    note = _significance_note(results)
    if note:
        parts.append(note)
    for name, sweep in (results.get("sweeps") or {}).items():
        parts.append(_sweep_section(name, sweep, metric, plots.get(f"sweep:{name}")))
    for name, ablation in (results.get("ablations") or {}).items():
        parts.append(_ablation_section(name, ablation, metric, plots.get(f"ablation:{name}")))
    notes = list(dataset.get("notes") or []) + list(results.get("notes") or [])
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes))
    env = results.get("environment")
    if env:
        parts.append("## Environment\n\n" + "\n".join(f"- {k}: {v}" for k, v in env.items()))
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    with atomic_file(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    return out


def plot_alpha_sweep(
    sweep: Mapping[str, Any], path: str | os.PathLike[str], *, metric: str = "ndcg@10", title: str = ""
) -> Path:
    """Plot the metric against α on dev and test (where scored), marking the chosen α; writes a PNG.

    Example::

        plot_alpha_sweep({"alphas": [0, 0.5, 1], "dev": [0.3, 0.4, 0.35], "test": [0.31, 0.38, 0.33],
                          "best_alpha": 0.5}, "alpha.png")
    """
    alphas = list(sweep["alphas"])
    if not alphas:
        raise ConfigError("an α sweep plot needs at least one α")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    try:
        for split, style in (("dev", "o-"), ("test", "s--")):
            values = sweep.get(split) or []
            points = [(a, v) for a, v in zip(alphas, values, strict=False) if v is not None]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], style, label=split)
        best = sweep.get("best_alpha")
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", label=f"chosen α = {best:g}")
        ax.set_xlabel("α")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(title or f"{metric_label(metric)} against α")
        ax.grid(alpha=0.3)
        ax.legend()
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_layer_ablation(
    ablation: Mapping[str, Any], path: str | os.PathLike[str], *, metric: str = "ndcg@10", title: str = ""
) -> Path:
    """Plot the metric per layer for 'only' and 'except' ablations, with the ranker and the
    all-layer merge as reference lines; writes a PNG."""
    layers = list(ablation["layers"])
    if not layers:
        raise ConfigError("a layer ablation plot needs at least one layer")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.5, 0.35 * len(layers) + 2), 3.6))
    try:
        for mode, style in (("only", "o-"), ("except", "s-")):
            values = ablation.get(mode)
            if values:
                ax.plot(layers, values, style, label=f"{mode} layer")
        if ablation.get("ranker") is not None:
            ax.axhline(ablation["ranker"], color="black", linestyle=":", label="ranker (α = 0)")
        if ablation.get("full") is not None:
            ax.axhline(
                ablation["full"],
                color="grey",
                linestyle="--",
                label=f"all layers (α = {ablation.get('alpha')})",
            )
        ax.set_xticks(layers)
        ax.set_xlabel("layer")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(title or f"{metric_label(metric)} per layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        return _save(fig, path)
    finally:
        plt.close(fig)


def write_report(results: Mapping[str, Any], out_dir: str | os.PathLike[str], *, plots: bool = True) -> Path:
    """Write ``report.md`` and (with ``plots``) the PNG plots into ``out_dir``; returns the report path.

    Every file is written atomically.
    """
    from .atomic import write_text

    out = Path(out_dir)
    metric = results.get("primary_metric", "ndcg@10")
    paths: dict[str, str] = {}
    if plots:
        for i, (name, sweep) in enumerate((results.get("sweeps") or {}).items()):
            rel = f"plots/alpha-{i}.png"
            plot_alpha_sweep(
                sweep, out / rel, metric=metric, title=f"{name}: {metric_label(metric)} against α"
            )
            paths[f"sweep:{name}"] = rel
        for i, (name, ablation) in enumerate((results.get("ablations") or {}).items()):
            rel = f"plots/layers-{i}.png"
            plot_layer_ablation(
                ablation, out / rel, metric=metric, title=f"{name}: {metric_label(metric)} per layer"
            )
            paths[f"ablation:{name}"] = rel
    report = out / "report.md"
    write_text(report, render_markdown(results, paths))
    if results.get("latex"):
        write_text(out / "report.tex", results_latex(results))
    return report


__all__ = [
    "baseline_letters",
    "metric_label",
    "plot_alpha_sweep",
    "plot_layer_ablation",
    "render_markdown",
    "results_latex",
    "results_table",
    "write_report",
]
