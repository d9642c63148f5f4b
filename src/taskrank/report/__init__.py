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
  {variant: {"dev", "test", "ranker"}}, "label_free": {"strategy", "alpha", "guard", "pseudo_queries",
  "strategies": {name: {"signal": [per α], "alpha", "p_value", "reason"}}, "notes"} or null}}`` (optional;
  top-level values are the reported variant's)
- ``ablations``: ``{system: {"alpha", "layers", "split", "only": [...], "except": [...], "ranker", "full",
  "first_stage": {"name", "value"}, "weights", "weights_text", "reported_variant", "variants": {variant:
  {"only", "except", "ranker", "full"}}}}``
- ``notes``: notes on the run as a whole, listed under the report's Notes after the dataset's
  (optional; an experiment writes none today)
- ``environment``: versions, device, dtype and ``dtype_reason`` (why: ``the default``, ``as asked``,
  ``auto: the CPU has amx_bf16``…), ``quantize`` (``none``, or ``int8 (OpenVINO …, NNCF …)`` with
  ``int8_models``: conversions, cache reads, seconds), seed, threads (optional)
- ``scoring``: the settings every system was scored with, ``{"kind", "max_length", "max_length_from",
  "options", "dtype", "dtype_reason", "quantize" (int8 only), "batch_size", "top_k", "description"}``
  (optional)

Plots are drawn with matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

from ..latex import latex_escape
from .markdown import render_markdown
from .plots import MIN_SPAN, plot_alpha_sweep, plot_layer_ablation
from .tables import (
    VARIANT_HEADS,
    baseline_letters,
    fusion_equals,
    metric_label,
    results_latex,
    results_table,
    table_variants,
    variant_label,
    weights_text,
)
from .writing import write_report

__all__ = [
    "MIN_SPAN",
    "VARIANT_HEADS",
    "baseline_letters",
    "fusion_equals",
    "latex_escape",
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
