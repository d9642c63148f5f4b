"""The experiment file: pydantic models of the YAML that drives ``taskrank run``.

Every model forbids unknown keys, so a misspelt key is an error that names its path and,
when the config came from a file, its line::

    experiment.yaml:14: systems[2].alpah: unknown key (valid keys: alpha, layers, mode, name, type)

Example::

    config = load_config("configs/paper/scifact-t5-base.yaml")
    print([system.name for system in config.systems])

The format is documented in ``docs/config.md``, whose tables are :func:`schema_markdown`'s output.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .arithmetic.selection import parse_layers as _parse_layer_set
from .errors import ConfigError, MergeError
from .vocabulary import KINDS

#: α must lie in this closed interval. The paper finds α ≥ 1.5 already hurts; beyond ±3 the
#: domain vector swamps the ranker, which is almost surely a typo (70 instead of 0.70).
ALPHA_RANGE: tuple[float, float] = (-3.0, 3.0)
SIGNIFICANCE_TESTS = ("student", "fisher")
CORRECTIONS = ("bonferroni", "none")
_METRIC = re.compile(r"^(ndcg|p|precision|recall|r|map|ap|mrr|rr)@[1-9][0-9]*$")
_DEFAULT_METRICS = ["ndcg@10", "p@10", "ndcg@3", "recall@100", "map@100"]

Kind = Literal["monot5", "cross-encoder", "bi-encoder", "query-likelihood"]
Mode = Literal["only", "except"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _check_alpha(value: float) -> float:
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


# --------------------------------------------------------------------------- sections


class DevConfig(_Strict):
    """Where the dev queries (for the α sweep and fusion tuning) come from."""

    split: str = Field("dev", description="split of the dataset whose qrels hold the dev queries")
    fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="use only the first fraction of that split's queries (SciFact: split train, 0.2)",
    )


class DatasetConfig(_Strict):
    """A BEIR-format dataset: a folder, or a BEIR name downloaded into the cache."""

    path: str = Field(description="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or a BEIR dataset name")
    name: str | None = Field(None, description="display name in the report (default: the folder name)")
    split: str = Field("test", description="split the systems are compared on")
    dev: DevConfig | None = Field(None, description="dev queries; leave out for datasets without a dev set")
    cache_dir: str | None = Field(None, description="where BEIR datasets given by name are downloaded")


class FirstStageConfig(_Strict):
    """Candidate generation: BM25 (bm25s) or an existing TREC run."""

    kind: Literal["bm25", "run"] = Field("bm25", description="bm25 or run (TREC run files)")
    k: int = Field(100, gt=0, description="candidates per query")
    k1: float = Field(1.5, gt=0, description="BM25 k1")
    b: float = Field(0.75, ge=0, le=1, description="BM25 b")
    language: str = Field("english", description="stemmer and stop-word language of BM25")
    run: str | None = Field(None, description="TREC run of the test split (kind: run)")
    dev_run: str | None = Field(None, description="TREC run of the dev split (kind: run, with a dev set)")

    @model_validator(mode="after")
    def _run_needs_file(self) -> FirstStageConfig:
        if self.kind == "run" and not self.run:
            raise ValueError("first stage kind 'run' needs the key 'run' (a TREC run file)")
        if self.kind == "bm25" and (self.run or self.dev_run):
            raise ValueError("'run'/'dev_run' are only used with kind: run")
        return self


class ModelsConfig(_Strict):
    """The model trio: θ_new = θ_ranker + α · (θ_domain − θ_pretrained)."""

    ranker: str = Field(description="the re-ranker (directory or hub id)")
    domain: str = Field(description="the domain fine-tune of the pretrained model")
    pretrained: str = Field(description="the common base model of ranker and domain")
    kind: Kind = Field(description="scoring family: " + ", ".join(KINDS))
    domain_kind: Kind | None = Field(
        None, description="scoring family of the domain model alone (default: kind)"
    )
    tokenizer: str | None = Field(None, description="tokenizer to use (default: the ranker's)")
    revisions: dict[str, str] = Field(
        default_factory=dict, description="hub revisions by role, e.g. {ranker: <commit>}"
    )
    vocab_policy: Literal["strict", "common"] = Field(
        "strict", description="vocabularies of different size: strict (error) or common rows only"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="extra options of the re-ranker kind")

    @field_validator("revisions")
    @classmethod
    def _roles(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(set(value) - {"ranker", "domain", "pretrained"})
        if bad:
            raise ValueError(f"unknown role(s) {', '.join(bad)}; valid: ranker, domain, pretrained")
        return value


class ScoringConfig(_Strict):
    """How the re-rankers run."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="model dtype (default: float32)"
    )
    batch_size: int = Field(32, gt=0, description="pairs per forward pass")
    max_length: int | None = Field(
        None,
        gt=0,
        description="tokens per query-document pair, for every system (default: the ranker's own, "
        "e.g. a sentence-transformers max_seq_length, else 512)",
    )
    top_k: int = Field(100, gt=0, description="candidates re-ranked per query (≤ first_stage.k)")
    threads: int | None = Field(
        None,
        gt=0,
        description="CPU threads torch scores with (default: $OMP_NUM_THREADS when set, else the cores "
        "this process may use: its CPU affinity capped by its cgroup CPU quota); recorded in "
        "environment.json",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", value):
            raise ValueError(f"device {value!r} is not one of auto, cpu, mps, cuda, cuda:N")
        return value


class FusionConfig(_Strict):
    """Fusion of first-stage and re-ranker scores: per-query min-max, then a weighted sum."""

    method: Literal["none", "fixed", "tuned"] = Field(
        "tuned", description="none (re-ranker scores only), fixed weights, or weights tuned on dev"
    )
    weights: tuple[float, float] = Field(
        (0.5, 0.5), description="(first stage, re-ranker) weights for 'fixed', and 'tuned' without a dev set"
    )
    step: float = Field(0.1, gt=0, le=0.5, description="grid step of the tuning")
    metric: str = Field("ndcg@10", description="metric the tuning maximises on dev")

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: tuple[float, float]) -> tuple[float, float]:
        if any(not math.isfinite(w) or w < 0 for w in value) or sum(value) <= 0:
            raise ValueError(f"fusion weights {list(value)} must be non-negative and not both zero")
        return value

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return _check_metric(value)


def _check_metric(value: str) -> str:
    if not _METRIC.match(value.lower()):
        raise ValueError(f"metric {value!r} is not like ndcg@10, p@10, recall@100, map@100, mrr@10")
    return value.lower()


def _run_depth(data: dict[str, Any]) -> tuple[int, str, str] | None:
    """The depth of the shallowest run in the report, the key that sets it, and what that key
    does: ``scoring.top_k`` when a system re-ranks (a re-ranked run, fused or not, holds the
    top_k re-ranked documents only), else ``first_stage.k``. None while those keys are invalid
    or contradict each other (that is reported on its own)."""
    first_stage, scoring, systems = data.get("first_stage"), data.get("scoring"), data.get("systems")
    if first_stage is None or scoring is None or systems is None or scoring.top_k > first_stage.k:
        return None
    if any(system.needs_model for system in systems):
        return scoring.top_k, "scoring.top_k", f"re-ranks only {scoring.top_k} documents per query"
    return first_stage.k, "first_stage.k", f"retrieves only {first_stage.k} documents per query"


def _check_depth(metrics: Sequence[str], data: dict[str, Any], what: str = "", note: str = "") -> None:
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


class SignificanceConfig(_Strict):
    """Paired significance tests of every system against the baselines."""

    test: Literal["student", "fisher"] = Field(
        "student", description="paired test: Student's t-test or Fisher's randomisation test"
    )
    p_value: float = Field(0.01, gt=0, lt=1, description="significance level")
    correction: Literal["bonferroni", "none"] = Field(
        "bonferroni", description="multiple-comparison correction"
    )
    baselines: list[str] | None = Field(
        None, description="names of the baseline systems (default: first-stage, ranker and domain systems)"
    )


class ReportConfig(_Strict):
    """What the report shows."""

    primary_metric: str = Field(
        "ndcg@10", description="metric that picks a sweep's best α, and of the α and ablation plots"
    )
    plots: bool = Field(True, description="draw the PNG plots")
    latex: bool = Field(False, description="also write report.tex")

    @field_validator("primary_metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return _check_metric(value)


# --------------------------------------------------------------------------- systems


class _System(_Strict):
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


class FirstStageSystem(_System):
    """The first stage alone (BM25)."""

    type: Literal["first-stage"]

    @property
    def needs_model(self) -> bool:
        return False


class RankerSystem(_System):
    """The ranker alone (α = 0)."""

    type: Literal["ranker"]


class DomainSystem(_System):
    """The domain model alone, used as a re-ranker."""

    type: Literal["domain"]


class MergeSystem(_System):
    """Task arithmetic at a fixed α, optionally on some layers only."""

    type: Literal["merge"]
    alpha: float = Field(description="scale of the domain vector")
    layers: str | list[int] | int | None = Field(None, description="layers like '0-3,11' (default: all)")
    mode: Mode = Field("only", description="apply to the layers ('only') or to all but them ('except')")

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float) -> float:
        return _check_alpha(value)

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: Any) -> Any:
        parse_layers(value)
        return value


class SweepSystem(_System):
    """An α sweep: every α is scored on dev; the best one is used on the test split."""

    type: Literal["sweep"]
    alphas: list[float] = Field(
        default_factory=lambda: [round(0.1 * i, 1) for i in range(11)],
        description="α values (default 0–1 by 0.1)",
    )
    layers: str | list[int] | int | None = Field(None, description="layers like '0-3,11' (default: all)")
    mode: Mode = Field("only", description="'only' or 'except' the layers")
    select_on: Literal["dev", "test"] = Field(
        "dev", description="split that picks the best α; 'test' is an oracle and is marked so in the report"
    )
    plot_test: bool = Field(True, description="also score the test split at every α (for the α plot)")

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("an α sweep needs at least one α")
        for alpha in value:
            _check_alpha(alpha)
        if len(set(value)) != len(value):
            raise ValueError(f"α values repeat: {value}")
        return value

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: Any) -> Any:
        parse_layers(value)
        return value


class AblationSystem(_System):
    """Per-layer ablation: the domain vector on one layer only, or on every layer but one."""

    type: Literal["ablation"]
    alpha: float = Field(description="scale of the domain vector")
    layers: str | list[int] | int | None = Field(None, description="layers to ablate (default: every layer)")
    modes: list[Mode] = Field(
        default_factory=lambda: ["only", "except"], description="'only' and/or 'except'"
    )

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float) -> float:
        return _check_alpha(value)

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: Any) -> Any:
        parse_layers(value)
        return value

    @field_validator("modes")
    @classmethod
    def _modes(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"modes {value} must be a non-empty list of distinct 'only'/'except'")
        return value


System = Annotated[
    FirstStageSystem | RankerSystem | DomainSystem | MergeSystem | SweepSystem | AblationSystem,
    Field(discriminator="type"),
]
SYSTEM_TYPES = ("first-stage", "ranker", "domain", "merge", "sweep", "ablation")


# --------------------------------------------------------------------------- the experiment


class ExperimentConfig(_Strict):
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

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not value:
            raise ValueError("list at least one metric")
        out = [_check_metric(m) for m in value]
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
        seen: dict[str, int] = {}
        for i, system in enumerate(self.systems):
            if system.name in seen:
                raise ValueError(
                    f"systems[{seen[system.name]}] and systems[{i}] are both named {system.name!r}; "
                    "system names must be unique"
                )
            seen[system.name] = i
        if self.models is None:
            needing = [s.name for s in self.systems if s.needs_model]
            if needing:
                raise ValueError(f"systems {needing} re-rank, so the section 'models' is required")
        if self.scoring.top_k > self.first_stage.k:
            raise ValueError(
                f"scoring.top_k ({self.scoring.top_k}) exceeds first_stage.k ({self.first_stage.k})"
            )
        has_dev = self.dataset.dev is not None
        for i, system in enumerate(self.systems):
            if isinstance(system, SweepSystem) and system.select_on == "dev" and not has_dev:
                raise ValueError(
                    f"systems[{i}] ({system.name!r}) picks α on dev, but dataset.dev is not set; "
                    "add dataset.dev or set select_on: test (an oracle choice)"
                )
        if self.first_stage.kind == "run" and has_dev and not self.first_stage.dev_run:
            raise ValueError("first_stage kind 'run' with a dev set needs 'dev_run' too")
        if self.significance.baselines is not None:
            unknown = [b for b in self.significance.baselines if b not in seen]
            if unknown:
                raise ValueError(
                    f"significance.baselines names unknown systems {unknown}; known: {list(seen)}"
                )
            repeated = sorted(
                {b for b in self.significance.baselines if self.significance.baselines.count(b) > 1}
            )
            if repeated:
                raise ValueError(f"significance.baselines names {repeated[0]!r} twice")
            ablations = [s.name for s in self.systems if isinstance(s, AblationSystem)]
            rowless = [b for b in self.significance.baselines if b in ablations]
            if rowless:
                raise ValueError(
                    f"significance.baselines names the layer ablation {rowless[0]!r}, which has no row "
                    "in the table to test against; choose a first-stage, ranker, domain, merge or sweep "
                    "system"
                )
        return self

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
        data = self.model_dump(mode="json", exclude={"output", "cache_dir", "description"})
        data["scoring"].pop("batch_size", None)
        data["scoring"].pop("device", None)
        data["scoring"].pop("threads", None)
        data["report"].pop("plots", None)
        data["report"].pop("latex", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def _loc_text(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "<top level>"


def _clean_loc(loc: Sequence[int | str], data: Any) -> list[int | str]:
    """Drop pydantic's union-tag segments (``systems.0.merge.alpha`` → ``systems[0].alpha``)."""
    out: list[int | str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and isinstance(part, str) and node.get("type") == part:
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return out


def _node_line(root: Any, loc: Sequence[int | str]) -> int | None:
    """Line (1-based) of the YAML node at ``loc``, or of its deepest existing parent."""
    import yaml

    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    line = key.start_mark.line + 1
                    nxt = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        node = nxt
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _valid_keys(loc: Sequence[int | str], data: Any) -> list[str] | None:
    """Keys allowed at the parent of ``loc`` (for 'unknown key' messages)."""
    annotation: Any = ExperimentConfig
    node = data
    for part in loc[:-1]:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        model = _model_of(annotation, node)
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        annotation = field.annotation
        node = node.get(part) if isinstance(node, dict) else None
    model = _model_of(annotation, node)
    return sorted(model.model_fields) if model is not None else None


def _model_of(annotation: Any, node: Any) -> Any:
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            if arg.__name__.endswith("System") and isinstance(node, dict):
                tag = arg.model_fields["type"].annotation
                if node.get("type") in get_args(tag):
                    return arg
                continue
            return arg
        found = _model_of(arg, node)
        if found is not None:
            return found
    return None


def _format_errors(exc: ValidationError, data: Any, source: str, root: Any = None) -> str:
    lines = []
    for err in exc.errors():
        loc = _clean_loc(err["loc"], data)
        where = _loc_text(loc)
        if err["type"] == "extra_forbidden":
            valid = _valid_keys(loc, data)
            msg = "unknown key" + (f" (valid keys: {', '.join(valid)})" if valid else "")
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown system type; valid types: {', '.join(SYSTEM_TYPES)}"
        elif err["type"] == "union_tag_not_found":
            msg = f"a system needs a 'type': one of {', '.join(SYSTEM_TYPES)}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        line = _node_line(root, loc) if root is not None else None
        prefix = f"{source}:{line}" if line else source
        lines.append(f"{prefix}: {where}: {msg}")
    return "invalid experiment config:\n  " + "\n  ".join(lines)


def parse_config(data: Any, source: str = "<config>", *, _root: Any = None) -> ExperimentConfig:
    """Validate a config given as a dict (as read from YAML).

    >>> parse_config({"name": "x", "output": "out", "dataset": {"path": "scifact"},
    ...               "systems": [{"name": "BM25", "type": "first-stage"}]}).systems[0].name
    'BM25'
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: an experiment config must be a mapping, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, data, source, _root)) from None


def _yaml_loader() -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            # An alias repeats a node without copying text, so a few hundred bytes can expand
            # to gigabytes ("billion laughs"): a config spells every value out instead.
            event = self.peek_event()
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                what = f"alias *{anchor}" if isinstance(event, yaml.AliasEvent) else f"anchor &{anchor}"
                raise ConfigError(
                    f"line {event.start_mark.line + 1}: YAML {what}: anchors and aliases are not "
                    "allowed in an experiment config; write the value out"
                )
            return super().compose_node(parent, index)

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"line {key_node.start_mark.line + 1}: key {key!r} repeats (first on line {seen[key]})"
                )
            seen[key] = key_node.start_mark.line + 1
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


def load_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read and validate an experiment YAML file.

    Errors name the file, line and key path at fault (a :class:`ConfigError`).

    Example::

        config = load_config("configs/demo.yaml")
    """
    import yaml

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"experiment config {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"experiment config {file} cannot be read: {exc}") from exc
    try:
        loader = _yaml_loader()
        data = yaml.load(text, Loader=loader)
        root = yaml.compose(text, Loader=loader)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"experiment config {file} is empty")
    return parse_config(data, str(file), _root=root)


def dump_config(config: ExperimentConfig) -> str:
    """The config as YAML text (every default spelt out), as copied into a results folder."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # load_config refuses anchors and aliases, so none may be written

    return yaml.dump(config.model_dump(mode="json"), Dumper=Dumper, sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- documentation


def _type_text(annotation: Any) -> str:
    from typing import get_args, get_origin

    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if "FirstStageSystem" in str(annotation):
        return "list of systems (below), told apart by `type`"
    text = str(annotation).replace("typing.", "")
    for name in ("str", "int", "float", "bool"):
        text = text.replace(f"<class '{name}'>", name)
    text = re.sub(r"(?:taskrank\.config|__main__)\.(\w+)", r"\1", text)
    return f"`{text}`".replace("|", "\\|")


def _default_text(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section defaults)"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "**required**"
    return f"`{json.dumps(value)}`"


def _model_table(model: type[BaseModel]) -> str:
    rows = [f"### {model.__name__}", "", (model.__doc__ or "").strip(), ""]
    rows += ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, field in model.model_fields.items():
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_text(field.annotation)} | {_default_text(field)} | {desc} |")
    return "\n".join(rows)


SCHEMA_MODELS: tuple[type[BaseModel], ...] = (
    ExperimentConfig,
    DatasetConfig,
    DevConfig,
    FirstStageConfig,
    ModelsConfig,
    ScoringConfig,
    FusionConfig,
    SignificanceConfig,
    ReportConfig,
    FirstStageSystem,
    RankerSystem,
    DomainSystem,
    MergeSystem,
    SweepSystem,
    AblationSystem,
)


def schema_markdown() -> str:
    """Markdown tables of every section and system type (the body of ``docs/config.md``)."""
    parts = [_model_table(m) for m in SCHEMA_MODELS]
    parts.append(f"α must lie in [{ALPHA_RANGE[0]}, {ALPHA_RANGE[1]}].")
    return "\n\n".join(parts) + "\n"


__all__ = [
    "ALPHA_RANGE",
    "KINDS",
    "AblationSystem",
    "DatasetConfig",
    "DevConfig",
    "DomainSystem",
    "ExperimentConfig",
    "FirstStageConfig",
    "FirstStageSystem",
    "FusionConfig",
    "MergeSystem",
    "ModelsConfig",
    "RankerSystem",
    "ReportConfig",
    "ScoringConfig",
    "SignificanceConfig",
    "SweepSystem",
    "dump_config",
    "load_config",
    "parse_config",
    "parse_layers",
    "schema_markdown",
]


_PAGE_INTRO = """# The experiment file

`taskrank run EXPERIMENT.yaml` reads one YAML file that says everything about an experiment:
the dataset, the first stage, the model trio, the systems to compare, fusion, metrics,
significance testing and the results folder. Every section forbids unknown keys, so a
misspelt key is an error that names the file, the line and the key path:

    exp.yaml:14: systems[2].alpah: unknown key (valid keys: alpha, layers, mode, name, type)

Relative paths are relative to the directory `taskrank run` is started from. The results
folder receives a copy of the config with every default spelt out (`config.yaml`).

YAML anchors and aliases (`&name`, `*name`) are refused, with the line of the first one: an
alias repeats a node without repeating its text, so a file of a few hundred bytes can expand
to gigabytes. Write each value out.

A small example (the recipes under `configs/paper/` are complete ones):

```yaml
name: SciFact — monoT5-base + SciFive
output: results/scifact-t5-base
dataset: {path: scifact, split: test, dev: {split: train, fraction: 0.2}}
models:
  ranker: castorini/monot5-base-msmarco
  domain: razent/SciFive-base-Pubmed_PMC
  pretrained: google-t5/t5-base
  kind: monot5
systems:
  - {name: BM25, type: first-stage}
  - {name: monoT5, type: ranker}
  - {name: SciFive, type: domain}
  - {name: TA α=0.7, type: merge, alpha: 0.7}
  - {name: TA dev-tuned α, type: sweep}
  - {name: layers, type: ablation, alpha: 0.7}
```

Checked before any heavy work starts: the dataset and every checkpoint can be found, layer
indices exist in the ranker (its config's number of layers), system names are unique, and the
results folder is empty, new, or holds only what taskrank wrote there.

No metric looks deeper than the runs it is computed on. A re-ranked run, fused with the first
stage or not, holds the `scoring.top_k` re-ranked documents of each query; a first-stage row
holds `first_stage.k`. So every cutoff in `metrics`, `report.primary_metric` and (with tuned
fusion) `fusion.metric` must be at most `scoring.top_k` when a system re-ranks, and at most
`first_stage.k` otherwise. A deeper one (R@100 of top-30 runs would be R@30 under another
name, and P@100 would divide by documents that are not there) is refused when the config is
read, naming the metric, its cutoff and the key that limits it:

    exp.yaml:31: metrics: recall@100 looks at 100 documents per query, but scoring.top_k
      re-ranks only 30 documents per query; lower the cutoff to 30 or less, or raise scoring.top_k

(one line in the terminal). Metrics without a cutoff (`map`, `mrr`, which `taskrank evaluate`
accepts; the experiment file always asks for one) are computed on each run as it is.

The results folder (`output`) must be a folder of its own: one that holds files taskrank did
not write (the dataset, this file, notes) is refused, naming one of them, and nothing in it is
deleted, `--overwrite` or not. taskrank lists every file it writes there in
`.taskrank-manifest.json` (each before the file appears, so a killed run's files are listed
too); `--overwrite` replaces a different experiment's results by deleting only the listed
files, and keeps the step cache `cache/`. A folder written by a version without that list is
not cleared: remove it yourself. While a run writes the folder it holds a lock on it
(`.taskrank.lock`): a second run on the same folder is refused at once, naming the first one's
pid.

Steps already computed are taken from the step cache (`cache_dir`); what it and the other
caches trust before they reuse a result is in [cache.md](cache.md).

This page's tables are generated from the schema (`python -m taskrank.config > docs/config.md`);
a test fails when they drift apart.

## Sections

"""


def config_page() -> str:
    """The whole ``docs/config.md`` page."""
    return _PAGE_INTRO + schema_markdown()


if __name__ == "__main__":
    import sys

    sys.stdout.write(config_page())
