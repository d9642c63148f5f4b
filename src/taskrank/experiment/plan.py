"""The dry run: every step an experiment will take, whether it is cached, and its size."""

from __future__ import annotations

from .steps import PlannedStep, Steps
from .systems import Need, handlers, in_run_order


def needed(steps: Steps) -> list[Need]:
    """Every re-ranking the run will do, system by system in the order the run scores them
    (see :mod:`.systems`)."""
    return [need for handler in in_run_order(handlers(steps)) for need in handler.needs(steps)]


def plan_steps(steps: Steps) -> list[PlannedStep]:
    """Every cacheable step, whether it is cached, and how many pairs it scores."""
    reranks = needed(steps)
    # the dev candidates only when something is scored on dev (fusion tuned there, a sweep)
    uses_dev = any(need.split is not None and need.split.role == "dev" for need in reranks)
    data = steps.data
    splits = [data.test]
    if data.dev is not None and uses_dev:
        splits.append(data.dev)
    for need in reranks:  # the pseudo-queries of label-free sweeps
        if need.split is not None and all(need.split is not split for split in splits):
            splits.append(need.split)
    planned: list[PlannedStep] = []
    fs_cached: dict[str, bool] = {}
    for split in splits:
        cached = steps.cache.has("first-stage", steps.fs_key(split))
        fs_cached[split.digest] = cached
        label = f"{steps.config.first_stage.kind} {split.role}"
        planned.append(PlannedStep("first-stage", label, cached, None))
    seen: set[str] = set()
    top = steps.config.scoring.top_k
    for need in reranks:
        state, target = need.state, need.split
        if state is None or target is None:
            pairs = len(data.test.queries) * top
            planned.append(
                PlannedStep("rerank", f"{need.system_name}: test at the chosen α", None, pairs, False)
            )
            continue
        key = steps.rerank_key(state, target)
        if key in seen:
            continue
        seen.add(key)
        cached = steps.cache.has("rerank", key)
        if fs_cached[target.digest]:
            run = steps.first_stage(target)
            pairs, exact = sum(min(top, len(d)) for d in run.values()), True
        else:
            pairs, exact = len(target.queries) * top, False
        label = f"{need.system_name}: {state.label()} on {target.role}"
        planned.append(PlannedStep("rerank", label, cached, 0 if cached else pairs, exact))
    return planned


def plan_text(steps: Steps, status: str) -> str:
    """The dry-run report: systems, cache state, pairs to score."""
    data, config, ckpts = steps.data, steps.config, steps.ckpts
    lines = [
        f"experiment: {config.name} (fingerprint {config.fingerprint()})",
        f"output: {config.output_path()} ({status})",
        f"dataset: {data.name}: {len(data.corpus)} documents; test split {data.test.label!r}: "
        f"{len(data.test.queries)} queries"
        + (f"; dev {data.dev.label!r}: {len(data.dev.queries)} queries" if data.dev else "; no dev set"),
    ]
    for role, path in ckpts.paths.items():
        where = "hub, weights not downloaded yet" if role in ckpts.not_downloaded else str(path)
        lines.append(f"{role}: {where} ({ckpts.fingerprints[role][:60]})")
    if ckpts.depth is not None:
        lines.append(f"model depth: {ckpts.depth} layers")
    lines.append("systems:")
    for system in config.systems:
        lines.append(f"  - {system.name} ({system.type})")
    lines.append("steps:")
    todo = pairs = 0
    for step in plan_steps(steps):
        state = {True: "cached", False: "to run", None: "after dev"}[step.cached]
        count = (
            "" if step.pairs is None or step.cached else f", {'' if step.exact else '≤'}{step.pairs} pairs"
        )
        lines.append(f"  {state:>9}  {step.step} {step.label}{count}")
        if not step.cached:
            todo += 1
            pairs += step.pairs or 0
    lines.append(f"total: {todo} step(s) to run, ≤{pairs} pairs to score")
    return "\n".join(lines)
