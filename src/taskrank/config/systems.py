"""The systems an experiment compares, told apart by their ``type``, and the two annotated
types they share: :data:`Alpha` (α within :data:`~taskrank.vocabulary.ALPHA_RANGE`) and
:data:`Layers` (a layer selection the merge engine accepts)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field, field_validator

from ..arithmetic.selection import parse_layers as _parse_layer_set
from ..errors import MergeError
from ..vocabulary import (
    ALPHA_RANGE,
    DEFAULT_LABEL_FREE_STRATEGY,
    LABEL_FREE_STRATEGIES,
    MODES,
    LabelFreeStrategy,
    Mode,
)
from .sections import StrictModel


def check_alpha(value: float) -> float:
    """α itself, or a ``ValueError`` when it is not finite or lies outside :data:`ALPHA_RANGE`."""
    low, high = ALPHA_RANGE
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"alpha {value} is out of range [{low}, {high}]")
    return value


def parse_layers(spec: str | int | Sequence[int] | None) -> list[int] | None:
    """Expand a layer selection (``"0-3,11"``, ``5`` or ``[0, 1]``) into sorted layer indices.

    The rules are the merge engine's (:func:`taskrank.arithmetic.parse_layers`); a bad
    selection is a ``ValueError`` here, so pydantic reports it at its key path.

    >>> parse_layers("0-2,5")
    [0, 1, 2, 5]
    """
    try:
        layers = _parse_layer_set(spec)
    except MergeError as exc:
        raise ValueError(str(exc)) from None
    return None if layers is None else sorted(layers)


LayerSpec = str | list[int] | int | None


def _check_layers(value: LayerSpec) -> LayerSpec:
    parse_layers(value)
    return value  # kept as written: the report and the fingerprint show the user's spelling


#: A scale of the domain vector.
Alpha = Annotated[float, AfterValidator(check_alpha)]
#: A layer selection as written (``"0-3,11"``, ``5``, ``[0, 1]`` or none for every layer).
Layers = Annotated[LayerSpec, AfterValidator(_check_layers)]


def _all_modes() -> list[Mode]:
    return list(MODES)  # type: ignore[arg-type]  # MODES is get_args(Mode)


class SystemBase(StrictModel):
    """What every system has: a unique name, and whether it needs the model trio."""

    name: str = Field(min_length=1, description="unique name shown in the report")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value != value.strip() or any(ch in value for ch in "/\\\n\t"):
            raise ValueError(f"system name {value!r} must not contain slashes, tabs or surrounding spaces")
        return value

    @property
    def needs_model(self) -> bool:
        return True


class FirstStageSystem(SystemBase):
    """The first stage alone (BM25)."""

    type: Literal["first-stage"]

    @property
    def needs_model(self) -> bool:
        return False


class RankerSystem(SystemBase):
    """The ranker alone (α = 0)."""

    type: Literal["ranker"]


class DomainSystem(SystemBase):
    """The domain model alone, used as a re-ranker."""

    type: Literal["domain"]


class MergeSystem(SystemBase):
    """Task arithmetic at a fixed α, optionally on some layers only."""

    type: Literal["merge"]
    alpha: Alpha = Field(description="scale of the domain vector")
    layers: Layers = Field(None, description="layers like '0-3,11' (default: all)")
    mode: Mode = Field("only", description="apply to the layers ('only') or to all but them ('except')")


class LabelFreeSettings(StrictModel):
    """How a sweep values α without labels (docs/experiments.md): all signals recorded, one decides."""

    strategy: LabelFreeStrategy = Field(
        DEFAULT_LABEL_FREE_STRATEGY,
        description="the strategy that chooses α: " + ", ".join(LABEL_FREE_STRATEGIES),
    )
    pseudo_queries: int = Field(
        200, ge=0, description="pseudo-queries cut out of the corpus (0: none; needs a BM25 first stage)"
    )
    seed: int = Field(0, description="seed of the documents the pseudo-queries are cut from")
    guard: float | None = Field(
        0.05,
        gt=0,
        lt=1,
        description="p-value under which an α ≠ 0 must beat α = 0 (paired t-test) to be chosen; null: none",
    )


class SweepSystem(SystemBase):
    """An α sweep: every α is scored on dev; the best one is used on the test split."""

    type: Literal["sweep"]
    # list[float], not list[Alpha]: an α out of range is reported at the key 'alphas'
    alphas: list[float] = Field(
        default_factory=lambda: [round(0.1 * i, 1) for i in range(11)],
        description="α values (default 0–1 by 0.1)",
    )
    layers: Layers = Field(None, description="layers like '0-3,11' (default: all)")
    mode: Mode = Field("only", description="'only' or 'except' the layers")
    select_on: Literal["dev", "test", "label-free"] = Field(
        "dev",
        description="what picks the best α: the dev split, the test split (an oracle, marked so in the "
        "report) or 'label-free' signals (no qrels read; see label_free)",
    )
    label_free: LabelFreeSettings | None = Field(
        None, description="label-free signals to record (and use with select_on: label-free)"
    )
    plot_test: bool = Field(True, description="also score the test split at every α (for the α plot)")

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("an α sweep needs at least one α")
        for alpha in value:
            check_alpha(alpha)
        if len(set(value)) != len(value):
            raise ValueError(f"α values repeat: {value}")
        return value

    def label_free_settings(self) -> LabelFreeSettings | None:
        """The label-free settings in effect: the configured ones, the defaults when α is
        chosen label-free without any, None when no label-free signal is recorded."""
        if self.label_free is None and self.select_on == "label-free":
            return LabelFreeSettings.model_validate({})
        return self.label_free


class AblationSystem(SystemBase):
    """Per-layer ablation: the domain vector on one layer only, or on every layer but one."""

    type: Literal["ablation"]
    alpha: Alpha = Field(description="scale of the domain vector")
    layers: Layers = Field(None, description="layers to ablate (default: every layer)")
    modes: list[Mode] = Field(default_factory=_all_modes, description="'only' and/or 'except'")

    @field_validator("modes")
    @classmethod
    def _modes(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"modes {value} must be a non-empty list of distinct 'only'/'except'")
        return value


#: Every system class, written once: a new system type is added here (and given a handler in
#: :data:`taskrank.experiment.systems.HANDLERS`, which a test keeps in step).
AnySystem = FirstStageSystem | RankerSystem | DomainSystem | MergeSystem | SweepSystem | AblationSystem
#: A system of the config, told apart by its ``type`` (pydantic's discriminated union).
System = Annotated[AnySystem, Field(discriminator="type")]
#: The system classes, in the order the docs list them.
SYSTEM_CLASSES: tuple[type[SystemBase], ...] = get_args(AnySystem)
#: The ``type`` of each system class, in the order the docs list them.
SYSTEM_TYPES: tuple[str, ...] = tuple(
    get_args(cls.model_fields["type"].annotation)[0] for cls in SYSTEM_CLASSES
)
