"""The whole experiment file: :class:`ExperimentConfig`, and the checks that span its sections
(unique system names, a metric no deeper than the runs it is computed on, baselines that exist)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..errors import ConfigError
from .sections import (
    DatasetConfig,
    ExecutionConfig,
    FirstStageConfig,
    FusionConfig,
    ModelsConfig,
    ReportConfig,
    ScoringConfig,
    SignificanceConfig,
    StrictModel,
    check_metric,
)
from .systems import (
    AblationSystem,
    DomainSystem,
    FirstStageSystem,
    RankerSystem,
    SweepSystem,
    System,
    SystemBase,
)

_DEFAULT_METRICS = ["ndcg@10", "p@10", "ndcg@3", "recall@100", "map@100"]


def _run_depth(data: Mapping[str, object]) -> tuple[int, str, str] | None:
    """The depth of the shallowest run in the report, the key that sets it, and what that key
    does: ``scoring.top_k`` when a system re-ranks (a re-ranked run, fused or not, holds the
    top_k re-ranked documents only), else ``first_stage.k``. None while those keys are invalid
    or contradict each other (that is reported on its own)."""
    first_stage, scoring, systems = data.get("first_stage"), data.get("scoring"), data.get("systems")
    if not (
        isinstance(first_stage, FirstStageConfig)
        and isinstance(scoring, ScoringConfig)
        and isinstance(systems, list)
    ):
        return None
    if scoring.top_k > first_stage.k:
        return None
    if any(isinstance(system, SystemBase) and system.needs_model for system in systems):
        return scoring.top_k, "scoring.top_k", f"re-ranks only {scoring.top_k} documents per query"
    return first_stage.k, "first_stage.k", f"retrieves only {first_stage.k} documents per query"


def _check_depth(metrics: Sequence[str], data: Mapping[str, object], what: str = "", note: str = "") -> None:
    """Refuse a metric whose cutoff is deeper than the runs it is computed on: R@100 of a run of
    30 documents is R@30 under another name (and P@100 divides by 100 documents that are not there)."""
    depth = _run_depth(data)
    if depth is None:
        return
    limit, key, does = depth
    deep = [m for m in metrics if int(m.rpartition("@")[2]) > limit]
    if deep:
        most = max(int(m.rpartition("@")[2]) for m in deep)
        looks = "looks at" if len(deep) == 1 else "look at up to"
        raise ValueError(
            f"{what}{', '.join(deep)} {looks} {most} documents per query, but {key} {does}; "
            f"lower the cutoff to {limit} or less, or raise {key}{note}"
        )


class ExperimentConfig(StrictModel):
    """One experiment: a dataset, a model trio, the systems to compare and how to report them."""

    name: str = Field(min_length=1, description="experiment name (report title)")
    description: str = Field("", description="free text copied into the report")
    output: str = Field(description="results folder")
    cache_dir: str | None = Field(None, description="step cache (default: <output>/cache)")
    seed: int = Field(42, description="seed of the randomised significance test (Fisher)")
    dataset: DatasetConfig
    first_stage: FirstStageConfig = Field(default_factory=FirstStageConfig)  # type: ignore[arg-type]
    models: ModelsConfig | None = Field(None, description="required when a system re-ranks")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)  # type: ignore[arg-type]
    systems: list[System] = Field(min_length=1, description="the systems to compare, in report order")
    fusion: FusionConfig = Field(default_factory=FusionConfig)  # type: ignore[arg-type]
    metrics: list[str] = Field(
        default_factory=lambda: list(_DEFAULT_METRICS),
        description="metrics of the report table (cutoffs at most scoring.top_k, or first_stage.k "
        "when nothing is re-ranked)",
    )
    significance: SignificanceConfig = Field(default_factory=SignificanceConfig)  # type: ignore[arg-type]
    report: ReportConfig = Field(default_factory=ReportConfig)  # type: ignore[arg-type]
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)  # type: ignore[arg-type]

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not value:
            raise ValueError("list at least one metric")
        out = [check_metric(m) for m in value]
        if len(set(out)) != len(out):
            raise ValueError(f"metrics repeat: {value}")
        note = (
            " (these are the default metrics; list yours under 'metrics')" if out == _DEFAULT_METRICS else ""
        )
        _check_depth(out, info.data, note=note)
        return out

    @field_validator("fusion")
    @classmethod
    def _fusion_depth(cls, value: FusionConfig, info: ValidationInfo) -> FusionConfig:
        if value.method == "tuned":
            _check_depth([value.metric], info.data, "metric ")
        return value

    @field_validator("report")
    @classmethod
    def _report_depth(cls, value: ReportConfig, info: ValidationInfo) -> ReportConfig:
        _check_depth([value.primary_metric], info.data, "primary_metric ")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        seen = self._unique_names()
        if self.models is None:
            needing = [s.name for s in self.systems if s.needs_model]
            if needing:
                raise ValueError(f"systems {needing} re-rank, so the section 'models' is required")
        if self.scoring.top_k > self.first_stage.k:
            raise ValueError(
                f"scoring.top_k ({self.scoring.top_k}) exceeds first_stage.k ({self.first_stage.k})"
            )
        self._check_quantize()
        has_dev = self.dataset.dev is not None
        for i, system in enumerate(self.systems):
            if isinstance(system, SweepSystem) and system.select_on == "dev" and not has_dev:
                raise ValueError(
                    f"systems[{i}] ({system.name!r}) picks α on dev, but dataset.dev is not set; "
                    "add dataset.dev, or set select_on: label-free (no labels) or test (an oracle choice)"
                )
            self._check_label_free(i, system)
        if self.first_stage.kind == "run" and has_dev and not self.first_stage.dev_run:
            raise ValueError("first_stage kind 'run' with a dev set needs 'dev_run' too")
        if self.significance.baselines is not None:
            self._check_baselines(self.significance.baselines, seen)
        return self

    def _check_quantize(self) -> None:
        """int8 scoring replaces the model call of some families only: every family scored must be one."""
        from ..rerankers.quantize import QUANTIZABLE_KINDS

        quantize = self.scoring.quantize
        if quantize == "none" or self.models is None:
            return
        for key in ("kind", "domain_kind"):
            kind = getattr(self.models, key)
            if kind is not None and kind not in QUANTIZABLE_KINDS:
                raise ValueError(
                    f"scoring.quantize {quantize} supports models.{key} {', '.join(QUANTIZABLE_KINDS)}, "
                    f"not {kind!r} (use quantize none)"
                )

    def _check_label_free(self, i: int, system: object) -> None:
        """Pseudo-queries need BM25 (a run file has no candidates for them); the deciding
        strategy must have what it needs."""
        if not isinstance(system, SweepSystem):
            return
        settings = system.label_free_settings()
        if settings is None:
            return
        where = f"systems[{i}] ({system.name!r})"
        pseudo = settings.pseudo_queries > 0
        decides = system.select_on == "label-free" and settings.strategy == "pseudo-queries"
        if pseudo and self.first_stage.kind != "bm25":
            raise ValueError(
                f"{where}: label_free.pseudo_queries needs a BM25 first stage (a run file has no "
                "candidates for pseudo-queries); set label_free.pseudo_queries: 0"
                + (" and label_free.strategy to nqc, wig or entropy" if decides else "")
            )
        if decides and not pseudo:
            raise ValueError(
                f"{where} chooses α by pseudo-queries, but label_free.pseudo_queries is 0; "
                "make some or choose another label_free.strategy"
            )

    def _unique_names(self) -> dict[str, int]:
        """Each system's index by name; a ``ValueError`` when two systems share a name."""
        seen: dict[str, int] = {}
        for i, system in enumerate(self.systems):
            if system.name in seen:
                raise ValueError(
                    f"systems[{seen[system.name]}] and systems[{i}] are both named {system.name!r}; "
                    "system names must be unique"
                )
            seen[system.name] = i
        return seen

    def _check_baselines(self, baselines: list[str], seen: Mapping[str, int]) -> None:
        unknown = [b for b in baselines if b not in seen]
        if unknown:
            raise ValueError(f"significance.baselines names unknown systems {unknown}; known: {list(seen)}")
        repeated = sorted({b for b in baselines if baselines.count(b) > 1})
        if repeated:
            raise ValueError(f"significance.baselines names {repeated[0]!r} twice")
        ablations = [s.name for s in self.systems if isinstance(s, AblationSystem)]
        rowless = [b for b in baselines if b in ablations]
        if rowless:
            raise ValueError(
                f"significance.baselines names the layer ablation {rowless[0]!r}, which has no row "
                "in the table to test against; choose a first-stage, ranker, domain, merge or sweep "
                "system"
            )

    # -- helpers
    def has_dev(self) -> bool:
        """Whether the experiment has dev queries."""
        return self.dataset.dev is not None

    def output_path(self) -> Path:
        """The results folder."""
        return Path(self.output).expanduser()

    def cache_path(self) -> Path:
        """The step cache folder."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else self.output_path() / "cache"

    def trio(self) -> ModelsConfig:
        """The ``models`` section; a :class:`ConfigError` when a system needs it and it is absent."""
        if self.models is None:
            raise ConfigError("this experiment re-ranks, so the section 'models' is required")
        return self.models

    def baselines(self) -> list[str]:
        """Systems every other system is tested against."""
        if self.significance.baselines is not None:
            return list(self.significance.baselines)
        return [s.name for s in self.systems if isinstance(s, FirstStageSystem | RankerSystem | DomainSystem)]

    def fingerprint(self) -> str:
        """Identity of what the experiment computes (output, cache and device settings excluded).

        Two configs with the same fingerprint produce the same results, so a results folder
        may be resumed by either; a different fingerprint is a different experiment.
        """
        data = self.model_dump(mode="json", exclude={"output", "cache_dir", "description", "execution"})
        data["scoring"].pop("batch_size", None)
        data["scoring"].pop("device", None)
        data["scoring"].pop("threads", None)
        if data["scoring"].get("quantize") == "none":  # the default: fingerprints of before stay
            data["scoring"].pop("quantize")
        data["report"].pop("plots", None)
        data["report"].pop("latex", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
