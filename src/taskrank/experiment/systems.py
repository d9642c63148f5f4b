"""One handler per system type of an experiment: which re-rankings a system needs (for the dry
run's plan) and how its results are computed (for the run), side by side, from the same model
states and in the same order. A handler writes each run it produces beyond its table row (a
sweep's α, an ablation's layer) as soon as it is scored, so no system holds all of them at once.

    first-stage  the first stage's run itself
    ranker       the ranker alone              domain   the domain model alone
    merge        θ_ranker + α·τ (on some layers)
    sweep        every α on dev (and test), the best one reported
    ablation     each layer's 'only'/'except' merge on test (a section of the report, no table row)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from ..config import (
    AblationSystem,
    DomainSystem,
    FirstStageSystem,
    LabelFreeSettings,
    MergeSystem,
    RankerSystem,
    SweepSystem,
    System,
)
from ..errors import DataError
from ..labelfree.pseudo import NO_PSEUDO_QUERY
from ..labelfree.strategies import STRATEGIES, Lists
from ..vocabulary import MODES, Mode
from .models import ModelState
from .preflight import Split, ablation_layers
from .results import (
    AblationFirstStage,
    AblationResult,
    AblationScores,
    RunFile,
    SplitScores,
    SweepFirstStage,
    SweepResult,
    SweepVariant,
    SystemOutcome,
    SystemResult,
    WriteRun,
    details_weights,
    weights_words,
)
from .steps import Run, Steps

if TYPE_CHECKING:
    from ..labelfree import LabelFreeChoice

#: the splits a sweep scores
Role = Literal["dev", "test"]
#: a sweep's measures: variant → split → one value per α (None: not scored)
Values = dict[str, dict[Role, list[float | None]]]


@dataclass(frozen=True)
class Need:
    """A re-ranking the run will do: ``state`` on ``split``; both None when the state is only
    known after earlier steps (a sweep's test split at the α chosen on dev)."""

    system_name: str
    state: ModelState | None
    split: Split | None


class Handler:
    """What one system needs scored (:meth:`needs`) and how its results are computed (:meth:`compute`).

    :meth:`needs` lists the re-rankings in the order :meth:`compute` does them, so the dry run
    lists the steps in the order the run takes them."""

    def __init__(self, system: System) -> None:
        self.system = system

    @property
    def name(self) -> str:
        return self.system.name

    def needs(self, steps: Steps) -> Iterator[Need]:
        """Every re-ranking :meth:`compute` will do, in the order it does them (duplicates included)."""
        return iter(())

    def compute(self, steps: Steps, write: WriteRun) -> SystemOutcome:
        """The system's results; the runs beyond its table row go to ``write`` as they are scored
        (the row's own runs are written by the runner, which measures them)."""
        raise NotImplementedError

    def with_weights(self, steps: Steps, state: ModelState, splits: list[Split]) -> Iterator[Need]:
        """``state`` on ``splits``, after dev where the fusion weights are tuned there."""
        if steps.config.fusion.method == "tuned" and steps.data.dev is not None:
            yield Need(self.name, state, steps.data.dev)
        for split in splits:
            yield Need(self.name, state, split)


class FirstStageHandler(Handler):
    def compute(self, steps: Steps, write: WriteRun) -> SystemOutcome:
        fs = steps.config.first_stage
        run = steps.first_stage(steps.data.test)
        row = SystemResult(self.name, self.system.type, f"{fs.kind}, top {fs.k}", {None: run})
        return SystemOutcome(self.name, row=row)


class ModelHandler(Handler):
    """A system scored by one model state: the ranker, the domain model or a merge."""

    #: scored before every other system, so its model is released before the ranker is loaded
    first: ClassVar[bool] = False

    def state(self) -> ModelState:
        raise NotImplementedError

    def details(self) -> str:
        return ""

    def needs(self, steps: Steps) -> Iterator[Need]:
        return self.with_weights(steps, self.state(), [steps.data.test])

    def compute(self, steps: Steps, write: WriteRun) -> SystemOutcome:
        state = self.state()
        return SystemOutcome(self.name, row=model_row(steps, self.system, state, self.details()))


def model_row(steps: Steps, system: System, state: ModelState, details: str) -> SystemResult:
    """The table row of a system scored by ``state``: its fusion weights, its runs on test."""
    fusion = steps.weights(state)
    details += details_weights(steps, fusion)
    runs: dict[str | None, Run] = {v: run for v, run in steps.variant_runs(state, steps.data.test).items()}
    dev = steps.data.dev is not None and (
        isinstance(system, SweepSystem) or steps.config.fusion.method == "tuned"
    )  # scored on dev: every α of a sweep, and every system whose fusion weights are tuned there
    return SystemResult(system.name, system.type, details, runs, state, fusion, dev)


class RankerHandler(ModelHandler):
    def state(self) -> ModelState:
        return ModelState("ranker")


class DomainHandler(ModelHandler):
    first = True

    def state(self) -> ModelState:
        return ModelState("domain")


class MergeHandler(ModelHandler):
    system: MergeSystem

    def state(self) -> ModelState:
        return ModelState.merged(self.system.alpha, self.system.layers, self.system.mode)

    def details(self) -> str:
        state = self.state()
        return state.label() if state.role == "merge" else "α=0"


class SweepHandler(Handler):
    """Every α on dev (where there is one) and on test (``plot_test``, or when test picks), both
    variants; α is picked on the reported variant. The ranker alone and the first stage are
    scored on the same splits, as references."""

    system: SweepSystem

    def scores_test(self) -> bool:
        # label-free signals read the model's lists of the target (test) queries at every α
        return self.system.plot_test or self.system.select_on != "dev" or self.label_free() is not None

    def label_free(self) -> LabelFreeSettings | None:
        return self.system.label_free_settings()

    def pseudo_split(self, steps: Steps) -> Split | None:
        """The pseudo-queries the label-free signals score, when some are asked for and the
        corpus yields some (a :class:`DataError` when it yields none and they choose α)."""
        settings = self.label_free()
        if settings is None or settings.pseudo_queries == 0:
            return None
        pseudo = steps.pseudo_split(settings.pseudo_queries, settings.seed)
        if pseudo.queries:
            return pseudo
        if self.system.select_on == "label-free" and STRATEGIES[settings.strategy].needs_pseudo:
            others = ", ".join(name for name, cls in STRATEGIES.items() if not cls.needs_pseudo)
            raise DataError(
                f"dataset {steps.config.dataset.path!r}: {NO_PSEUDO_QUERY}, so sweep {self.name!r} "
                f"cannot choose α by {settings.strategy}; set its label_free.strategy to one of "
                f"{others} and label_free.pseudo_queries: 0"
            )
        return None  # the strategies that need them are recorded as not computed

    def states(self) -> list[ModelState]:
        system = self.system
        return [ModelState.merged(alpha, system.layers, system.mode) for alpha in system.alphas]

    def splits(self, steps: Steps) -> dict[Role, Split | None]:
        return {"dev": steps.data.dev, "test": steps.data.test if self.scores_test() else None}

    def needs(self, steps: Steps) -> Iterator[Need]:
        data = steps.data
        for state in self.states():
            if data.dev is not None:  # every α is scored on dev, whatever picks α
                yield Need(self.name, state, data.dev)
            if self.scores_test():
                yield Need(self.name, state, data.test)
            pseudo = self.pseudo_split(steps)
            if pseudo is not None:
                yield Need(self.name, state, pseudo)
        if not self.scores_test():
            yield Need(self.name, None, None)  # the test split at the chosen α
        # the ranker alone: the α plot's reference on every split the sweep scores
        splits = [s for s in self.splits(steps).values() if s is not None]
        yield from self.with_weights(steps, ModelState("ranker"), splits)

    def compute(self, steps: Steps, write: WriteRun) -> SystemOutcome:
        system, variants = self.system, steps.variants()
        self.pseudo_split(steps)  # a corpus without pseudo-queries fails before any α is scored
        states = self.states()
        values: Values = {v: {"dev": [], "test": []} for v in variants}
        lists: list[Lists] = []  # what the label-free signals read, one α at a time
        for alpha, state in zip(system.alphas, states, strict=True):
            model_runs: dict[Role, Run] = {}  # the model alone, per split: what the signals read
            for role, split in self.splits(steps).items():
                runs = steps.variant_runs(state, split) if split is not None else {}
                if "model" in runs:
                    model_runs[role] = runs["model"]
                for variant in variants:
                    run = runs.get(variant)
                    values[variant][role].append(
                        None if split is None or run is None else steps.measure(run, split)
                    )
                    if run is not None:  # written now: the sweep holds one α's runs at a time
                        write(RunFile(role, variant, system.name, f"alpha={alpha:g}", run))
            if self.label_free() is not None:  # the test split is scored at every α then
                lists.append(self._lists(steps, state, model_runs["test"]))
        choice = self._label_free_choice(steps, lists)
        if choice is not None and system.select_on == "label-free":
            best = choice.index
        else:
            chooser = values[steps.reported_variant()]["dev" if system.select_on == "dev" else "test"]
            best = max(range(len(system.alphas)), key=lambda i: (chooser[i], -i))  # first best on ties
        if not self.scores_test():  # the test split at the chosen α only
            for variant, run in steps.variant_runs(states[best], steps.data.test).items():
                values[variant]["test"][best] = steps.measure(run, steps.data.test)
        sweep = self._result(steps, values, best)
        sweep.label_free = choice.record() if choice is not None else None
        how = f"best on {system.select_on}"
        if choice is not None and system.select_on == "label-free":
            how = f"label-free, {choice.strategy}"
        row = model_row(steps, system, states[best], f"α={sweep.best_alpha:g} ({how})")
        return SystemOutcome(self.name, row=row, sweep=sweep)

    def _lists(self, steps: Steps, state: ModelState, target: Run) -> Lists:
        """The model's lists of one α that the label-free signals read: the target (test)
        queries' (``target``, already scored) and the pseudo-queries' (never a judgment)."""
        pseudo = self.pseudo_split(steps)
        pseudo_run = steps.rerank(state, pseudo) if pseudo is not None else None
        sources = (
            {qid: next(iter(docs)) for qid, docs in pseudo.qrels.items()} if pseudo is not None else None
        )
        return Lists(target, steps.data.test.queries, pseudo_run, sources)

    def _label_free_choice(self, steps: Steps, lists: list[Lists]) -> LabelFreeChoice | None:
        settings = self.label_free()
        if settings is None:
            return None
        from ..labelfree import label_free_choice

        pseudo = self.pseudo_split(steps)
        return label_free_choice(
            self.system.alphas,
            lists,
            strategy_name=settings.strategy,
            guard=settings.guard,
            pseudo=pseudo.label if pseudo is not None else None,
        )

    def _result(self, steps: Steps, values: Values, best: int) -> SweepResult:
        """The sweep's section, with the first stage and the ranker alone measured as references."""
        system, variants, reported = self.system, steps.variants(), steps.reported_variant()
        first: SweepFirstStage = {"name": steps.first_stage_name(), "dev": None, "test": None}
        ranker: dict[str, SplitScores] = {v: {"dev": None, "test": None} for v in variants}
        for role, split in self.splits(steps).items():
            if split is None:
                continue
            first[role] = steps.measure(steps.first_stage(split), split)
            for variant, run in steps.variant_runs(ModelState("ranker"), split).items():
                ranker[variant][role] = steps.measure(run, split)
        by_variant: dict[str, SweepVariant] = {
            variant: {
                "dev": values[variant]["dev"] if steps.data.dev is not None else None,
                "test": values[variant]["test"],
                "ranker": ranker[variant],
            }
            for variant in variants
        }
        fusion = steps.weights(self.states()[best])
        return SweepResult(
            alphas=list(system.alphas),
            dev=values[reported]["dev"] if steps.data.dev is not None else None,
            test=values[reported]["test"],
            best_alpha=system.alphas[best],
            select_on=system.select_on,
            weights=list(fusion.weights) if fusion.weights else None,
            weights_source=fusion.source,
            weights_text=weights_words(steps, fusion.weights),
            ranker=ranker[reported],
            first_stage=first,
            reported_variant=reported,
            variants=by_variant,
        )


class AblationHandler(Handler):
    """Every layer's 'only'/'except' variant on test, both variants, with the ranker, the
    all-layer merge and the first stage as references. Every variant is fused with the all-layer
    merge's weights."""

    system: AblationSystem

    def layer_state(self, layer: int, mode: str) -> ModelState:
        return ModelState.merged(self.system.alpha, [layer], mode)

    def references(self) -> dict[Literal["ranker", "full"], ModelState]:
        return {"ranker": ModelState("ranker"), "full": ModelState.merged(self.system.alpha)}

    def modes(self) -> list[Mode]:
        """The modes the system runs, in the order they are scored (and reported): only, except."""
        return [mode for mode in MODES if mode in self.system.modes]

    def needs(self, steps: Steps) -> Iterator[Need]:
        for state in self.references().values():
            yield from self.with_weights(steps, state, [steps.data.test])
        for mode in self.modes():
            for layer in ablation_layers(self.system, steps.ckpts.depth):
                yield Need(self.name, self.layer_state(layer, mode), steps.data.test)

    def compute(self, steps: Steps, write: WriteRun) -> SystemOutcome:
        system, test = self.system, steps.data.test
        variants = steps.variants()
        layers = ablation_layers(system, steps.ckpts.depth)
        scores: dict[str, AblationScores] = {v: {} for v in variants}
        references = self.references()
        for key, state in references.items():
            for variant, run in steps.variant_runs(state, test).items():
                scores[variant][key] = steps.measure(run, test)
        weights = steps.weights(references["full"]).weights  # every layer is fused with these
        for mode in self.modes():
            per_variant: dict[str, list[float]] = {variant: [] for variant in variants}
            for variant in variants:
                scores[variant][mode] = per_variant[variant]
            for layer in layers:
                model_run = steps.rerank(self.layer_state(layer, mode), test)
                runs = {"model": model_run}
                if weights:
                    runs["fused"] = steps.fuse(model_run, test, weights)
                for variant, run in runs.items():  # written now: one layer's runs held at a time
                    write(RunFile("test", variant, system.name, f"{mode}-layer-{layer}", run))
                    per_variant[variant].append(steps.measure(run, test))
        first: AblationFirstStage = {
            "name": steps.first_stage_name(),
            "value": steps.measure(steps.first_stage(test), test),
        }
        ablation = AblationResult(
            alpha=system.alpha,
            layers=layers,
            split=test.label,
            scores=scores,
            first_stage=first,
            weights=list(weights) if weights else None,
            weights_text=weights_words(steps, weights),
            reported_variant=steps.reported_variant(),
        )
        return SystemOutcome(self.name, ablation=ablation)


HANDLERS: dict[type, type[Handler]] = {
    FirstStageSystem: FirstStageHandler,
    RankerSystem: RankerHandler,
    DomainSystem: DomainHandler,
    MergeSystem: MergeHandler,
    SweepSystem: SweepHandler,
    AblationSystem: AblationHandler,
}


def handler(system: System) -> Handler:
    """The handler of ``system``'s type."""
    return HANDLERS[type(system)](system)


def handlers(steps: Steps) -> list[Handler]:
    """A handler per system of the experiment, in the config's order."""
    return [handler(system) for system in steps.config.systems]


def scored_first(systems: list[Handler]) -> list[ModelHandler]:
    """The systems the run scores before every other one (the domain model alone, so that it is
    released before the ranker is loaded)."""
    return [h for h in systems if isinstance(h, ModelHandler) and h.first]


def in_run_order(systems: list[Handler]) -> list[Handler]:
    """``systems`` in the order the run scores them: :func:`scored_first`, then the config's order."""
    first = scored_first(systems)
    return [*first, *(h for h in systems if h not in first)]


__all__ = ["HANDLERS", "Handler", "Need", "handler", "handlers", "in_run_order", "scored_first"]
