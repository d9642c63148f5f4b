"""Writing a report into a results folder: ``report.md``, its plots and ``report.tex``."""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import write_text
from .markdown import render_markdown
from .plots import plot_alpha_sweep, plot_layer_ablation
from .tables import ResultsJson, metric_label, results_latex, variant_label


def write_report(results: ResultsJson, out_dir: str | os.PathLike[str], *, plots: bool = True) -> Path:
    """Write ``report.md`` and (with ``plots``) the PNG plots into ``out_dir``; returns the report path.

    The plots show the reported variant (:func:`table_variants`), named on their y-axis. Every
    file is written atomically.
    """

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
