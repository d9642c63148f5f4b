"""taskrank's words: every choice list the config, the command line and the registries accept.

Each list is written once, here, in a module that imports neither torch nor numpy, so the
command line can show the choices in ``--help`` and the config can validate against them
without loading a model. A registry (re-rankers, merge dtypes, significance tests) checks at
import that it implements exactly the names listed here; a test checks the same.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from .errors import ConfigError

# --------------------------------------------------------------------------- re-rankers

Kind = Literal["monot5", "cross-encoder", "bi-encoder", "query-likelihood"]
#: The re-ranker kinds (scoring families); :mod:`taskrank.rerankers` registers one class each.
KINDS: tuple[str, ...] = get_args(Kind)

TrainableKind = Literal["monot5", "cross-encoder"]
#: The kinds ``taskrank train`` can fine-tune a ranker of.
TRAINABLE_KINDS: tuple[str, ...] = get_args(TrainableKind)

# --------------------------------------------------------------------------- precision and devices

Dtype = Literal["float32", "bfloat16", "float16"]
#: Model and merge dtypes, by their torch names.
DTYPES: tuple[str, ...] = get_args(Dtype)
#: Short names accepted wherever a dtype is asked for.
DTYPE_ALIASES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}

ScoringDtype = Literal["auto", "float32", "bfloat16", "float16"]
#: Scoring precisions (``scoring.dtype``, ``--dtype``): a dtype, or ``auto``, bfloat16 where the
#: hardware computes in it natively (a GPU that supports it, a CPU with AMX or avx512_bf16) and
#: float32 elsewhere (:func:`taskrank.devices.choose_dtype`).
SCORING_DTYPES: tuple[str, ...] = get_args(ScoringDtype)

Quantize = Literal["none", "int8"]
#: Quantised scoring (``scoring.quantize``, ``--quantize``): none, or int8 through OpenVINO on the
#: CPU (:mod:`taskrank.rerankers.quantize`).

TrainingDtype = Literal["auto", "float32", "bfloat16"]
#: Training precisions of ``adapt`` and ``train``: ``auto`` is bfloat16 autocast on a GPU that has it.
TRAINING_DTYPES: tuple[str, ...] = get_args(TrainingDtype)

#: Device names: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICES_TEXT = "auto, cpu, cuda, cuda:N, mps"


def canonical_dtype(name: str) -> str:
    """``"bf16" -> "bfloat16"``; a :class:`ConfigError` listing the valid names otherwise."""
    key = name.strip().lower()
    key = DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        valid = ", ".join((*DTYPES, *DTYPE_ALIASES))
        raise ConfigError(f"unknown dtype {name!r}; valid: {valid}")
    return key


# --------------------------------------------------------------------------- task arithmetic

Mode = Literal["only", "except"]
#: Layer-selection modes: the paper's "add" ablation is ``only``, its "remove" is ``except``.
MODES: tuple[str, ...] = get_args(Mode)

VocabPolicy = Literal["strict", "common"]
#: What a merge does when the vocabularies differ in size.
VOCAB_POLICIES: tuple[str, ...] = get_args(VocabPolicy)

#: α must lie in this closed interval. The paper finds α ≥ 1.5 already hurts; beyond ±3 the
#: domain vector swamps the ranker, which is almost surely a typo (70 instead of 0.70).
ALPHA_RANGE: tuple[float, float] = (-3.0, 3.0)

# --------------------------------------------------------------------------- evaluation

#: Metric families and the names a paper prints for them.
METRIC_FAMILIES: dict[str, str] = {"ndcg": "nDCG", "p": "P", "recall": "R", "map": "MAP", "mrr": "MRR"}
#: Other spellings of the families.
METRIC_ALIASES: dict[str, str] = {"precision": "p", "r": "recall", "ap": "map", "rr": "mrr"}
_METRIC_RE = re.compile(r"^([a-z]+)(?:@(\d+))?$")

#: The objectives of ``taskrank adapt``. ``auto`` chooses from the pretrained checkpoint: a
#: sentence-transformers folder gets a retrieval objective, anything else the objective of its
#: architecture (masked LM, span corruption, causal LM).
Objective = Literal["auto", "mlm", "span-corruption", "causal-lm", "contrastive", "tsdae"]
#: The adapt objectives, ``auto`` first.
OBJECTIVE_NAMES: tuple[str, ...] = get_args(Objective)

#: The label-free ways of choosing α (``select_on: label-free``); each is one registered class
#: of :mod:`taskrank.labelfree`.
LabelFreeStrategy = Literal["pseudo-queries", "nqc", "wig", "entropy"]
#: The label-free α selection strategies.
LABEL_FREE_STRATEGIES: tuple[str, ...] = get_args(LabelFreeStrategy)
#: The strategy that chooses when none is named: the one with the lowest regret measured in
#: benchmarks/label-free.md.
DEFAULT_LABEL_FREE_STRATEGY: LabelFreeStrategy = "wig"

#: The names of the paired significance tests and of the corrections, as types (for the config);
#: SIGNIFICANCE_TESTS and CORRECTIONS below describe the same names.
SignificanceTest = Literal["student", "fisher"]
Correction = Literal["bonferroni", "none"]

#: Paired significance tests.
SIGNIFICANCE_TESTS: dict[str, str] = {
    "student": "paired Student's t-test",
    "fisher": "Fisher's randomisation test",
}
#: Corrections for testing several systems against one baseline.
CORRECTIONS: dict[str, str] = {"bonferroni": "Bonferroni correction", "none": "no correction"}


def parse_metric(name: str) -> tuple[str, int | None]:
    """Normalise a metric name: ``"nDCG@10" -> ("ndcg", 10)``, ``"P@10" -> ("p", 10)``.

    The cutoff is optional (``"map"`` is MAP over every retrieved document).

    >>> parse_metric("R@100")
    ('recall', 100)
    """
    match = _METRIC_RE.match(name.strip().lower())
    family = METRIC_ALIASES.get(match.group(1), match.group(1)) if match else None
    if match is None or family not in METRIC_FAMILIES:
        valid = ", ".join(f"{f}@k" for f in METRIC_FAMILIES)
        raise ConfigError(f"unknown metric {name!r}; valid: {valid} (k optional, e.g. ndcg@10, p@10, map)")
    k = int(match.group(2)) if match.group(2) else None
    if k is not None and k < 1:
        raise ConfigError(f"metric {name!r}: the cutoff must be >= 1")
    return family, k


def canonical_metric(name: str) -> str:
    """``"P@10" -> "p@10"``, ``"nDCG@10" -> "ndcg@10"``, ``"R@100" -> "recall@100"``."""
    family, k = parse_metric(name)
    return family if k is None else f"{family}@{k}"


def display_metric(name: str) -> str:
    """The name a paper prints: ``"ndcg@10" -> "nDCG@10"``, ``"p@10" -> "P@10"``."""
    family, k = parse_metric(name)
    label = METRIC_FAMILIES[family]
    return label if k is None else f"{label}@{k}"


__all__ = [
    "ALPHA_RANGE",
    "CORRECTIONS",
    "DEFAULT_LABEL_FREE_STRATEGY",
    "DEVICES_TEXT",
    "DEVICE_PATTERN",
    "DTYPES",
    "DTYPE_ALIASES",
    "KINDS",
    "LABEL_FREE_STRATEGIES",
    "METRIC_ALIASES",
    "METRIC_FAMILIES",
    "MODES",
    "OBJECTIVE_NAMES",
    "SCORING_DTYPES",
    "SIGNIFICANCE_TESTS",
    "TRAINABLE_KINDS",
    "TRAINING_DTYPES",
    "VOCAB_POLICIES",
    "Correction",
    "Dtype",
    "Kind",
    "LabelFreeStrategy",
    "Mode",
    "Objective",
    "Quantize",
    "ScoringDtype",
    "SignificanceTest",
    "TrainableKind",
    "TrainingDtype",
    "VocabPolicy",
    "canonical_dtype",
    "canonical_metric",
    "display_metric",
    "parse_metric",
]
