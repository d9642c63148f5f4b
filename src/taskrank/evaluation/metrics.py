"""Ranking metrics computed by trec_eval itself (pytrec_eval), with its conventions made explicit.

pytrec_eval (Van Gysel & de Rijke, SIGIR 2018) runs trec_eval's C code in-process; this module
only prepares its input and names its measures:

- score ties are broken by document id, descending, as trec_eval does: each query's
  documents are re-scored by their trec_eval rank before trec_eval sees them (every metric
  here depends on ranks only, so this changes nothing else, and float ties cannot differ);
- nDCG uses linear gains (trec_eval's ``ndcg_cut``, Järvelin & Kekäläinen 2002);
- relevance >= 1 is relevant; negative labels (explicit negatives) count as 0;
- P@k divides by k even when fewer documents were retrieved; MAP@k divides by all relevant;
- MRR@k is trec_eval's ``recip_rank`` when the first relevant document is within the top k,
  else 0 (trec_eval has no cut reciprocal rank).

It is C and needs no compilation at first use, unlike the numba kernels of ranx that computed
these values before (60–110 s of compiling, silent, on a newcomer's first run; the values are
equal, which tests/test_evaluation.py checks against trec_eval directly).

Two rules decide which queries count, and reports state both:

1. queries without judgments (in the run, not in the qrels) are excluded;
2. a judged query with no retrieved documents counts as 0 for every metric.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import ranked
from ..errors import ConfigError, DataError
from ..vocabulary import METRIC_ALIASES, canonical_metric, display_metric, parse_metric
from ..vocabulary import METRIC_FAMILIES as METRIC_LABELS

logger = logging.getLogger(__name__)

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "p@10", "ndcg@3", "recall@100", "map@100", "mrr@10")

# our metric family -> trec_eval measure at a cutoff k (the grammar itself is taskrank.vocabulary's)
_CUT: dict[str, str] = {
    "ndcg": "ndcg_cut",
    "p": "P",
    "recall": "recall",
    "map": "map_cut",
    "mrr": "recip_rank",
}
# our metric family -> trec_eval measure without a cutoff (over every retrieved document)
_UNCUT: dict[str, str] = {
    "ndcg": "ndcg",
    "p": "set_P",
    "recall": "set_recall",
    "map": "map",
    "mrr": "recip_rank",
}
if set(_CUT) != set(METRIC_LABELS) or set(_UNCUT) != set(METRIC_LABELS):
    raise RuntimeError(
        "taskrank.evaluation.metrics: its trec_eval measures do not match vocabulary.METRIC_FAMILIES"
    )

#: metric family -> (trec_eval measure at a cutoff k, display name), as taskrank 0.1 exported it
METRIC_FAMILIES: dict[str, tuple[str, str]] = {
    family: (_CUT[family], label) for family, label in METRIC_LABELS.items()
}

RULES: tuple[str, ...] = (
    "Queries without relevance judgments are excluded.",
    "A judged query with no retrieved documents counts as 0 for every metric.",
)


def _trec_eval_measures(keys: Sequence[str]) -> tuple[set[str], dict[str, tuple[str, int | None]]]:
    """The measures to ask trec_eval for (``{"ndcg_cut.3,10", "P.10"}``), and for each metric
    the result key to read (``"ndcg@10" -> "ndcg_cut_10"``) and, for MRR@k, the rank cutoff k
    to apply to trec_eval's ``recip_rank``."""
    cutoffs: dict[str, set[int]] = {}
    plain: set[str] = set()
    read: dict[str, tuple[str, int | None]] = {}
    for key in keys:
        family, k = parse_metric(key)
        if k is None or family == "mrr":
            plain.add(_UNCUT[family])
            read[key] = (_UNCUT[family], k)
        else:
            measure = _CUT[family]
            cutoffs.setdefault(measure, set()).add(k)
            read[key] = (f"{measure}_{k}", None)
    measures = plain | {f"{m}.{','.join(map(str, sorted(ks)))}" for m, ks in cutoffs.items()}
    return measures, read


@dataclass
class Evaluation:
    """Per-query and mean metric values of one run.

    ``per_query[metric][qid]`` covers every judged query (in qrels order); ``excluded`` are
    run queries without judgments; ``empty`` are judged queries the run retrieved nothing for.
    """

    metrics: tuple[str, ...]
    queries: list[str]
    per_query: dict[str, dict[str, float]]
    mean: dict[str, float]
    excluded: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)

    def values(self, metric: str) -> np.ndarray:
        """Per-query values of ``metric`` as an array in ``queries`` order."""
        key = canonical_metric(metric)
        if key not in self.per_query:
            raise ConfigError(f"metric {metric!r} was not evaluated; evaluated: {', '.join(self.metrics)}")
        scores = self.per_query[key]
        return np.array([scores[q] for q in self.queries], dtype=float)

    def notes(self) -> list[str]:
        """The counting rules, with how many queries each one touched."""
        return [
            f"{RULES[0]} ({len(self.excluded)} run queries without judgments excluded; "
            f"{len(self.queries)} judged queries evaluated.)",
            f"{RULES[1]} ({len(self.empty)} such queries.)",
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: means, per-query values, and the counting rules."""
        return {
            "metrics": list(self.metrics),
            "mean": dict(self.mean),
            "per_query": {m: dict(v) for m, v in self.per_query.items()},
            "num_queries": len(self.queries),
            "excluded_queries": list(self.excluded),
            "empty_queries": list(self.empty),
            "notes": self.notes(),
        }

    def to_markdown(self, name: str = "run") -> str:
        """A one-row Markdown table plus the counting rules."""
        header = "| system | " + " | ".join(display_metric(m) for m in self.metrics) + " |"
        rule = "|---|" + "---:|" * len(self.metrics)
        row = f"| {name} | " + " | ".join(f"{self.mean[m]:.4f}" for m in self.metrics) + " |"
        return "\n".join([header, rule, row, "", *(f"- {n}" for n in self.notes())]) + "\n"


def _trec_ordered(run: Mapping[str, Mapping[str, float]], qids: Sequence[str]) -> dict[str, dict[str, float]]:
    """Re-score each query's documents by trec_eval rank (n, n-1, …, 1): no ties are left."""
    out: dict[str, dict[str, float]] = {}
    for qid in qids:
        scores = run.get(qid)
        if not scores:
            continue
        for doc_id, score in scores.items():
            if not np.isfinite(score):
                raise DataError(f"run: score of query {qid!r} document {doc_id!r} is not finite ({score})")
        order = ranked(scores)
        n = len(order)
        out[qid] = {doc_id: float(n - i) for i, (doc_id, _) in enumerate(order)}
    return out


def evaluate(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> Evaluation:
    """Evaluate ``run`` against ``qrels`` with trec_eval (through pytrec_eval).

    >>> ev = evaluate({"q1": {"d1": 2.0, "d2": 1.0}}, {"q1": {"d2": 1}}, ["p@1", "mrr@10"])
    >>> ev.mean["p@1"], ev.mean["mrr@10"]
    (0.0, 0.5)
    """
    import pytrec_eval

    keys = list(dict.fromkeys(canonical_metric(m) for m in metrics))
    if not keys:
        raise ConfigError("no metrics to evaluate")
    judged = [qid for qid, docs in qrels.items() if docs]
    if not judged:
        raise DataError("qrels hold no judgments")
    judged_set = set(judged)
    excluded = [qid for qid in run if qid not in judged_set]
    empty = [qid for qid in judged if not run.get(qid)]
    prepared = _trec_ordered(run, judged)
    per_query: dict[str, dict[str, float]] = {k: dict.fromkeys(judged, 0.0) for k in keys}
    if prepared:
        measures, read = _trec_eval_measures(keys)
        judgments = {qid: {d: max(int(r), 0) for d, r in qrels[qid].items()} for qid in prepared}
        # trec_eval reports only the queries the run retrieved for; the others stay 0
        results = pytrec_eval.RelevanceEvaluator(judgments, measures).evaluate(prepared)
        for qid, values in results.items():
            for key, (name, rank_cutoff) in read.items():
                value = float(values.get(name, 0.0))
                if rank_cutoff is not None and value > 0 and round(1 / value) > rank_cutoff:
                    value = 0.0  # MRR@k: the first relevant document lies below rank k
                per_query[key][qid] = value
    mean = {k: float(np.mean([per_query[k][q] for q in judged])) for k in keys}
    return Evaluation(tuple(keys), judged, per_query, mean, excluded, empty)


__all__ = [
    "DEFAULT_METRICS",
    "METRIC_ALIASES",
    "METRIC_FAMILIES",
    "RULES",
    "Evaluation",
    "canonical_metric",
    "display_metric",
    "evaluate",
    "parse_metric",
]
