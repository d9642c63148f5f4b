"""The plots of a report: the metric against α, and per layer (matplotlib's Agg canvas, no display)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_file
from ..errors import ConfigError
from .tables import Section, metric_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MIN_SPAN = 0.05
"""The smallest y-range of a plot, in metric units (metrics lie in [0, 1]): a narrower axis would
draw differences of a few thousandths, noise on a few dozen queries, as steep effects."""

_SPLIT_COLOURS = {"dev": "C0", "test": "C1"}


def _figure(width: float, height: float) -> Figure:
    """A figure outside pyplot's global state (nothing to close, no backend to switch)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    with atomic_file(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    return out


def _honest_ylim(ax: Axes, values: Sequence[float | None]) -> None:
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


def _legend_outside(ax: Axes) -> None:
    """The legend right of the axes, where it cannot hide a point or a line."""
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small", frameon=False
    )


def plot_alpha_sweep(
    sweep: Section,
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
    free = sweep.get("label_free") or None
    fig = _figure(7.0, 6.4 if free else 3.8)
    if free:
        ax, below = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        _plot_signals(below, alphas, free)
    else:
        ax = fig.add_subplot()
    plotted: list[float] = []
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
    if not free:
        ax.set_xlabel("α")
    ax.set_ylabel(metric_label(metric) + (f" ({variant})" if variant else ""))
    ax.set_title(title or f"{metric_label(metric)} against α")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return _save(fig, path)


def _plot_signals(ax: Axes, alphas: list[float], free: Section) -> None:
    """Each label-free strategy's signal against α, scaled to [0, 1] within the strategy (their
    units differ), with the α it chooses marked; the deciding strategy drawn thicker."""
    for i, (name, outcome) in enumerate((free.get("strategies") or {}).items()):
        points = [(a, v) for a, v in zip(alphas, outcome.get("signal") or [], strict=False) if v is not None]
        if not points:
            continue
        values = [v for _, v in points]
        low, high = min(values), max(values)
        scaled = [(v - low) / (high - low) if high > low else 0.5 for v in values]
        deciding = name == free.get("strategy")
        colour = f"C{i + 2}"
        label = f"{name}{' (decides)' if deciding else ''}"
        ax.plot(
            [a for a, _ in points],
            scaled,
            "^-",
            color=colour,
            linewidth=2.5 if deciding else 1.2,
            label=label,
        )
        chosen = outcome.get("alpha")
        if chosen is not None and chosen in alphas:
            k = [a for a, _ in points].index(chosen) if chosen in [a for a, _ in points] else None
            if k is not None:
                ax.plot([chosen], [scaled[k]], "*", color=colour, markersize=14)
    ax.set_ylim(-0.1, 1.1)
    ax.set_xlabel("α")
    ax.set_ylabel("label-free signal\n(scaled per strategy)")
    ax.grid(alpha=0.3)
    _legend_outside(ax)


def plot_layer_ablation(
    ablation: Section,
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
    plotted: list[float] = []
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
