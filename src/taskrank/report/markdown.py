"""``report.md``: the results table, the notes under it, the α sweep and layer ablation sections."""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..vocabulary import MODES, SIGNIFICANCE_TESTS
from .tables import (
    VARIANT_HEADS,
    ResultsJson,
    Section,
    baseline_letters,
    fmt,
    metric_label,
    results_table,
    variant_label,
)


def _significance_note(results: ResultsJson) -> str:
    """The sentence under the table: what the marks mean, or that no difference is significant.

    Results from before the tests were stored (no ``significance.tests``) keep the plain legend.
    """
    sig = results.get("significance") or {}
    letters = baseline_letters(results.get("baselines") or [])
    if not letters:
        return ""
    legend = ", ".join(f"{letter} = {name}" for name, letter in letters.items())
    test = SIGNIFICANCE_TESTS.get(sig.get("test", ""), sig.get("test", "test"))
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


def _variant_order(section: Section) -> list[str | None]:
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
    name: str, sweep: Section, metric: str, plot: str | None, labels: Mapping[str, str]
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
    free = sweep.get("label_free") or None
    if sweep.get("select_on") == "label-free" and free:
        chosen = _label_free_choice_words(sweep, free)
    if sweep.get("weights_text"):
        chosen += f" Fusion weights at that α: {sweep['weights_text']}."
    lines = [f"### α sweep: {name}", "", chosen]
    n = len(sweep["alphas"])

    def values(variant: str | None, split: str) -> list[float | None]:
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
        cells = [f"{alpha:g}{mark}", *(fmt(values(v, split)[i]) for v, split in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    first = sweep.get("first_stage")
    if first:  # references: the first stage (one run, in the reported group), the ranker alone
        cells = [fmt(first.get(split)) if variant in (None, reported) else "–" for variant, split in columns]
        lines.append(f"| {first.get('name', 'first stage')} (reference) | " + " | ".join(cells) + " |")
    if sweep.get("ranker") is not None or any((sweep.get("variants") or {}).values()):
        cells = []
        for variant, split in columns:
            source = sweep if variant is None else sweep["variants"][variant]
            cells.append(fmt((source.get("ranker") or {}).get(split)))
        if any(c != "–" for c in cells):
            lines.append("| ranker (reference) | " + " | ".join(cells) + " |")
    if free:
        lines += _label_free_table(sweep["alphas"], free)
    if plot:
        shown = f", {labels.get(reported, reported)}" if several and reported else ""
        lines += ["", f"![{label} against α{shown}]({plot})"]
    return "\n".join(lines)


def _label_free_choice_words(sweep: Section, free: Section) -> str:
    """The sentence that says which α was chosen without labels, and whether the vector is applied."""
    strategy = free.get("strategy")
    reason = ((free.get("strategies") or {}).get(strategy) or {}).get("reason", "")
    if sweep.get("best_alpha") == 0:
        # the reason ends "…: the domain vector is not applied"
        return f"Label-free selection ({strategy}, no relevance label read) chose α = 0. Why: {reason}."
    return f"Best α = {sweep.get('best_alpha')}, chosen without relevance labels by {strategy}: {reason}."


def _label_free_table(alphas: list[float], free: Section) -> list[str]:
    """Every label-free strategy's signal per α (higher: ranks better) and the α it would choose."""
    strategies = free.get("strategies") or {}
    head = ["label-free signal", *(f"α={a:g}" for a in alphas), "its choice"]
    lines = [
        "",
        "Label-free signals (no relevance labels; higher means the strategy expects better ranking"
        + (f"; {free['pseudo_queries']}" if free.get("pseudo_queries") else "")
        + "):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, outcome in strategies.items():
        signal = outcome.get("signal") or [None] * len(alphas)
        mark = " (decides)" if name == free.get("strategy") else ""
        alpha = outcome.get("alpha")
        cells = [f"{name}{mark}", *(fmt(v, 4) for v in signal), "–" if alpha is None else f"{alpha:g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ablation_section(
    name: str, ablation: Section, metric: str, plot: str | None, labels: Mapping[str, str]
) -> str:
    label = metric_label(metric)
    modes = [m for m in MODES if ablation.get(m)]
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
        text = f"ranker {fmt(source.get('ranker'))}, all layers {fmt(source.get('full'))}"
        refs.append(f"{labels.get(variant, variant)}: {text}" if variant else text)
    first = ablation.get("first_stage")
    if first and first.get("value") is not None:
        refs.append(f"{first.get('name', 'first stage')}: {fmt(first['value'])}")
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
            cells.append(fmt(source[mode][i]))
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    if plot:
        lines += ["", f"![{label} per layer]({plot})"]
    return "\n".join(lines)


def _variants_note(results: ResultsJson) -> str:
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


def render_markdown(results: ResultsJson, plots: Mapping[str, str] | None = None) -> str:
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
        parts.append("## Environment\n\n" + "\n".join(f"- {k}: {_env_value(v)}" for k, v in env.items()))
    return "\n\n".join(parts) + "\n"


def _env_value(value: object) -> str:
    """An environment.json value as a report line shows it: records as compact JSON (not Python's
    repr), a missing value as a dash."""
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return str(value)
