"""The dry run: every step an experiment will take, whether it is cached, and its size."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..config import AblationSystem, DomainSystem, FirstStageSystem, MergeSystem, RankerSystem, SweepSystem
from .models import ModelState
from .preflight import Split, ablation_layers
from .runner import PlannedStep

if TYPE_CHECKING:
    from .runner import Experiment


def needed(exp: Experiment) -> Iterator[tuple[str, ModelState | None, Split | None]]:
    """(system name, state, split) of every re-ranking the run will do; split None = not yet known."""
    data = exp.data
    tuned = exp.config.fusion.method == "tuned" and data.dev is not None

    def with_weights(name: str, state: ModelState, splits: list[Split]) -> Iterator:
        if tuned:
            yield name, state, data.dev
        for split in splits:
            yield name, state, split

    for system in exp.config.systems:
        if isinstance(system, FirstStageSystem):
            continue
        if isinstance(system, RankerSystem):
            yield from with_weights(system.name, ModelState("ranker"), [data.test])
        elif isinstance(system, DomainSystem):
            yield from with_weights(system.name, ModelState("domain"), [data.test])
        elif isinstance(system, MergeSystem):
            state = ModelState.merged(system.alpha, system.layers, system.mode)
            yield from with_weights(system.name, state, [data.test])
        elif isinstance(system, SweepSystem):
            score_test = system.plot_test or system.select_on == "test"
            for alpha in system.alphas:
                state = ModelState.merged(alpha, system.layers, system.mode)
                if data.dev is not None:  # every α is scored on dev, whatever picks α
                    yield system.name, state, data.dev
                if score_test:
                    yield system.name, state, data.test
            if not score_test:
                yield system.name, None, None  # the test split at the chosen α
            # the ranker alone: the α plot's reference on every split the sweep scores
            ranker_splits = [s for s in (data.dev, data.test if score_test else None) if s is not None]
            yield from with_weights(system.name, ModelState("ranker"), ranker_splits)
        elif isinstance(system, AblationSystem):
            yield from with_weights(system.name, ModelState("ranker"), [data.test])
            yield from with_weights(system.name, ModelState.merged(system.alpha), [data.test])
            for mode in system.modes:
                for layer in ablation_layers(system, exp.ckpts.depth):
                    yield system.name, ModelState.merged(system.alpha, [layer], mode), data.test


def plan_steps(exp: Experiment) -> list[PlannedStep]:
    """Every cacheable step, whether it is cached, and how many pairs it scores."""
    steps: list[PlannedStep] = []
    reranks = list(needed(exp))
    # the dev candidates only when something is scored on dev (fusion tuned there, a sweep)
    uses_dev = any(split is not None and split.role == "dev" for _, _, split in reranks)
    splits = [exp.data.test] + ([exp.data.dev] if exp.data.dev is not None and uses_dev else [])
    fs_cached: dict[str, bool] = {}
    for split in splits:
        cached = exp.cache.has("first-stage", exp._fs_key(split))
        fs_cached[split.role] = cached
        steps.append(PlannedStep("first-stage", f"{exp.config.first_stage.kind} {split.role}", cached, None))
    seen: set[str] = set()
    top = exp.config.scoring.top_k
    for name, state, split in reranks:
        if state is None or split is None:
            steps.append(
                PlannedStep(
                    "rerank",
                    f"{name}: test at the chosen α",
                    None,
                    len(exp.data.test.queries) * top,
                    False,
                )
            )
            continue
        key = exp.cache.key("rerank", exp._rerank_inputs(state, split))
        if key in seen:
            continue
        seen.add(key)
        cached = exp.cache.has("rerank", key)
        if fs_cached[split.role]:
            run = exp.first_stage(split)
            pairs, exact = sum(min(top, len(d)) for d in run.values()), True
        else:
            pairs, exact = len(split.queries) * top, False
        steps.append(
            PlannedStep(
                "rerank",
                f"{name}: {state.label()} on {split.role}",
                cached,
                0 if cached else pairs,
                exact,
            )
        )
    return steps


def plan_text(exp: Experiment, status: str) -> str:
    """The dry-run report: systems, cache state, pairs to score."""
    data = exp.data
    config = exp.config
    lines = [
        f"experiment: {config.name} (fingerprint {config.fingerprint()})",
        f"output: {exp.out} ({status})",
        f"dataset: {data.name}: {len(data.corpus)} documents; test split {data.test.label!r}: "
        f"{len(data.test.queries)} queries"
        + (f"; dev {data.dev.label!r}: {len(data.dev.queries)} queries" if data.dev else "; no dev set"),
    ]
    for role, path in exp.ckpts.paths.items():
        where = "hub, weights not downloaded yet" if role in exp.ckpts.not_downloaded else str(path)
        lines.append(f"{role}: {where} ({exp.ckpts.fingerprints[role][:60]})")
    if exp.ckpts.depth is not None:
        lines.append(f"model depth: {exp.ckpts.depth} layers")
    lines.append("systems:")
    for system in config.systems:
        lines.append(f"  - {system.name} ({system.type})")
    lines.append("steps:")
    todo = pairs = 0
    for step in plan_steps(exp):
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
