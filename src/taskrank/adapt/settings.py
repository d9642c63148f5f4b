"""The hyperparameters of ``adapt`` and ``train_ranker``, validated on construction.

Both are pydantic models (``extra="forbid"``, strict types: ``2.5`` steps or ``True`` as a
batch size are refused, not rounded), built from the shared field types below, so every rule
is written once. The description of a field is its rule, and a bad value is a
:class:`ConfigError` that names the field and the value: ``lr must be a number in (0, 1], got 3.0``.

Example::

    AdaptSettings(steps=500, lr=3e-4).model_dump()
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from ..errors import ConfigError
from ..vocabulary import OBJECTIVE_NAMES, TRAINABLE_KINDS, Objective, TrainableKind

# --------------------------------------------------------------------------- shared field types

Steps = Annotated[int, Field(ge=1, le=10_000_000, description="a positive integer")]
PositiveInt = Annotated[int, Field(ge=1, description="a positive integer")]
MaxLength = Annotated[int, Field(ge=8, description="an integer of at least 8")]
LearningRate = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False, description="a number in (0, 1]")]
WarmupRatio = Annotated[float, Field(ge=0.0, lt=1.0, description="in [0, 1)")]
WeightDecay = Annotated[float, Field(ge=0.0, allow_inf_nan=False, description="a non-negative number")]
Seed = Annotated[int, Field(ge=0, description="a non-negative integer")]
Probability = Annotated[float, Field(gt=0.0, lt=1.0, description="in (0, 1)")]


def _message(model: type[BaseModel], error: ErrorDetails) -> str:
    """One validation error as ``<field> must be <rule>, got <value>``, the rule being the field's
    description."""
    key = str(error["loc"][0]) if error["loc"] else "settings"
    if error["type"] == "value_error":  # a validator's own, complete message
        return error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown setting {key!r}"
    limit = (error.get("ctx") or {}).get("le")
    if error["type"] == "less_than_equal" and isinstance(limit, int):
        return f"{key} must be at most {limit:,}, got {error['input']!r}"
    field = model.model_fields.get(key)
    rule = field.description if field is not None and field.description else "valid"
    return f"{key} must be {rule}, got {error['input']!r}"


class TrainingSettings(BaseModel):
    """What the settings of ``adapt`` and ``train_ranker`` share: strict validation whose first
    error is a :class:`ConfigError` naming the field, the rule and the value."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)

    def __init__(self, **values: object) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_message(type(self), exc.errors()[0])) from None


class AdaptSettings(TrainingSettings):
    """Hyperparameters of one ``adapt`` run (validated on construction)."""

    steps: Steps = 200
    lr: LearningRate = 1e-4
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    max_length: MaxLength = 128
    warmup_ratio: WarmupRatio = 0.1
    weight_decay: WeightDecay = 0.01
    max_grad_norm: float = Field(1.0, gt=0.0, allow_inf_nan=False, description="a positive number")
    seed: Seed = 0
    save_every: int = Field(100, ge=0, description="a non-negative integer (0 = no periodic checkpoints)")
    mlm_probability: Probability = 0.15
    noise_density: Probability = 0.15
    mean_span_length: float = Field(3.0, ge=1.0, description="at least 1")
    #: ``auto``: contrastive for a sentence-transformers folder, else what the architecture calls for.
    objective: Objective = "auto"
    #: contrastive: each crop keeps a share of its window drawn uniformly from [crop_min, crop_max].
    crop_min: float = Field(0.1, gt=0.0, le=1.0, description="a number in (0, 1]")
    crop_max: float = Field(0.5, gt=0.0, le=1.0, description="a number in (0, 1]")
    #: contrastive: the softmax temperature of the in-batch cosine similarities (scale = 1 / temperature).
    temperature: float = Field(0.05, gt=0.0, le=10.0, allow_inf_nan=False, description="a number in (0, 10]")
    #: tsdae: the share of tokens deleted from the encoder's input.
    deletion_ratio: Probability = 0.6

    @field_validator("objective", mode="before")
    @classmethod
    def _known_objective(cls, value: object) -> object:
        if value not in OBJECTIVE_NAMES:
            raise ValueError(f"unknown objective {value!r}; valid: {', '.join(OBJECTIVE_NAMES)}")
        return value

    @model_validator(mode="after")
    def _crop_range(self) -> AdaptSettings:
        if self.crop_min > self.crop_max:
            raise ValueError(f"crop_min ({self.crop_min}) must not exceed crop_max ({self.crop_max})")
        return self


class RankerSettings(TrainingSettings):
    """Hyperparameters of :func:`taskrank.adapt.training.train_ranker` (validated on construction)."""

    kind: TrainableKind = "monot5"
    steps: Steps = 150
    lr: LearningRate = 3e-3
    batch_size: PositiveInt = 32
    max_length: MaxLength = 128
    warmup_ratio: WarmupRatio = 0.1
    weight_decay: WeightDecay = 0.01
    seed: Seed = 0
    true_token: str = "▁true"
    false_token: str = "▁false"

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: object) -> object:
        if value not in TRAINABLE_KINDS:
            raise ValueError(f"unknown ranker kind {value!r}; valid: {', '.join(TRAINABLE_KINDS)}")
        return value


__all__ = ["AdaptSettings", "RankerSettings", "TrainingSettings"]
