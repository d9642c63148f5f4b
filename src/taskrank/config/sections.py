"""The sections of the experiment file: dataset, first stage, models, scoring, fusion,
significance and report. Every model forbids unknown keys."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ConfigError
from ..vocabulary import (
    DEVICE_PATTERN,
    DEVICES_TEXT,
    KINDS,
    Correction,
    Kind,
    Quantize,
    ScoringDtype,
    SignificanceTest,
    VocabPolicy,
    parse_metric,
)


class StrictModel(BaseModel):
    """A section of the experiment file: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def check_metric(value: str) -> str:
    """A metric of the experiment file: the grammar of :func:`taskrank.vocabulary.parse_metric`,
    with a cutoff (``ndcg@10``, not ``ndcg``); a ``ValueError`` otherwise, for pydantic to place.

    The name comes back lower-cased but in the family's spelling it was written in (``P@10`` ->
    ``p@10``, ``precision@10`` stays): the metrics are part of the experiment's fingerprint.
    """
    try:
        _, cutoff = parse_metric(value)
    except ConfigError:
        cutoff = None
    if cutoff is None:
        raise ValueError(f"metric {value!r} is not like ndcg@10, p@10, recall@100, map@100, mrr@10")
    family = value.strip().lower().partition("@")[0]
    return f"{family}@{cutoff}"


class DevConfig(StrictModel):
    """Where the dev queries (for the α sweep and fusion tuning) come from."""

    split: str = Field("dev", description="split of the dataset whose qrels hold the dev queries")
    fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="use only the first fraction of that split's queries (SciFact: split train, 0.2)",
    )


class DatasetConfig(StrictModel):
    """A BEIR-format dataset: a folder, or a BEIR name downloaded into the cache."""

    path: str = Field(description="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or a BEIR dataset name")
    name: str | None = Field(None, description="display name in the report (default: the folder name)")
    split: str = Field("test", description="split the systems are compared on")
    dev: DevConfig | None = Field(None, description="dev queries; leave out for datasets without a dev set")
    cache_dir: str | None = Field(None, description="where BEIR datasets given by name are downloaded")


class FirstStageConfig(StrictModel):
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


class ModelsConfig(StrictModel):
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
    vocab_policy: VocabPolicy = Field(
        "strict", description="vocabularies of different size: strict (error) or common rows only"
    )
    # a re-ranker kind's options are whatever its class takes; the registry checks them
    options: dict[str, Any] = Field(default_factory=dict, description="extra options of the re-ranker kind")

    @field_validator("revisions")
    @classmethod
    def _roles(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(set(value) - {"ranker", "domain", "pretrained"})
        if bad:
            raise ValueError(f"unknown role(s) {', '.join(bad)}; valid: ranker, domain, pretrained")
        return value


class ScoringConfig(StrictModel):
    """How the re-rankers run."""

    device: str = Field("auto", description=DEVICES_TEXT)
    dtype: ScoringDtype | None = Field(
        None,
        description="model dtype; auto: bfloat16 on a GPU that supports it or a CPU with AMX or avx512_bf16, "
        "else float32 (default: float32, bit-comparable with other machines); the dtype used and why are "
        "recorded in environment.json and the report",
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
        "this process may use: its CPU affinity capped by its cgroup CPU quota; on Ray, each "
        "worker's execution.cpus_per_worker); recorded in environment.json",
    )

    quantize: Quantize = Field(
        "none",
        description="int8: score through OpenVINO with int8 weights and activations (CPU only; monot5, "
        "cross-encoder and bi-encoder; float32 weights, so dtype auto means float32; the openvino extra). "
        "Each model state's compressed model is cached under cache_dir/openvino",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"device {value!r} is not one of {DEVICES_TEXT}")
        return value

    @model_validator(mode="after")
    def _quantizable(self) -> ScoringConfig:
        if self.quantize == "none":
            return self
        if self.dtype in ("bfloat16", "float16"):
            raise ValueError(
                f"scoring.quantize {self.quantize} converts float32 weights; scoring.dtype {self.dtype} "
                "cannot be used with it (use float32 or auto, or quantize none)"
            )
        if self.device != "cpu" and self.device != "auto":
            raise ValueError(
                f"scoring.quantize {self.quantize} runs on the CPU only; scoring.device is {self.device!r} "
                "(use cpu, or quantize none)"
            )
        return self


class FusionConfig(StrictModel):
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
        return check_metric(value)


class SignificanceConfig(StrictModel):
    """Paired significance tests of every system against the baselines."""

    test: SignificanceTest = Field(
        "student", description="paired test: Student's t-test or Fisher's randomisation test"
    )
    p_value: float = Field(0.01, gt=0, lt=1, description="significance level")
    correction: Correction = Field("bonferroni", description="multiple-comparison correction")
    baselines: list[str] | None = Field(
        None, description="names of the baseline systems (default: first-stage, ranker and domain systems)"
    )


class ReportConfig(StrictModel):
    """What the report shows."""

    primary_metric: str = Field(
        "ndcg@10", description="metric that picks a sweep's best α, and of the α and ablation plots"
    )
    plots: bool = Field(True, description="draw the PNG plots")
    latex: bool = Field(False, description="also write report.tex")

    @field_validator("primary_metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return check_metric(value)


class ExecutionConfig(StrictModel):
    """Where the re-ranking steps run: this process, or the workers of a Ray cluster (each loads
    the models once and moves between α values in place). Results are the same either way."""

    engine: Literal["local", "ray"] = Field("local", description="local (this process) or ray")
    address: str | None = Field(
        None, description="Ray cluster to join ('auto', 'ray://host:10001'); none: start a local one"
    )
    workers: int | None = Field(
        None, ge=1, description="Ray workers (default: as many as the cluster's CPUs or GPUs allow)"
    )
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs each Ray worker takes (0: CPU workers)")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each Ray worker takes")
