"""Scoring settings are resolved once per experiment, from the ranker, and used for every system.

The domain folder made by ``taskrank adapt`` has no sentence-transformers files; it was once scored
with the 512-token default (and mean pooling) while the ranker's folder said otherwise, so α = 1
with ranker = pretrained differed from the domain row. Here the ranker *is* the pretrained model
(as a sentence-transformers folder whose ``max_seq_length`` cuts the documents), so θ_ranker + 1·τ
is θ_domain and the two rows must score identically.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _experiment_fixtures import config_dict, make_config, write_tiny_beir
from _rerank_fixtures import sentence_transformers_folder
from taskrank.config import parse_config
from taskrank.data import read_run
from taskrank.experiment import Experiment, run_experiment
from taskrank.rerankers import load_reranker
from taskrank.tiny import build_tiny, derive_checkpoint

#: [CLS] + 4 words + [SEP]: the tiny collection's documents have 8 words, so they are cut
MAX_SEQ_LENGTH = 6

SYSTEMS = [
    {"name": "ranker", "type": "ranker"},
    {"name": "domain", "type": "domain"},
    {"name": "TA α=1", "type": "merge", "alpha": 1.0},
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bi_trio(tmp_path_factory: pytest.TempPathFactory, tiny_words) -> dict[str, Path]:
    """ranker = pretrained weights as a sentence-transformers folder (cls pooling, normalised,
    max_seq_length 6); the domain model a BertForMaskedLM with no sentence-transformers files."""
    root = tmp_path_factory.mktemp("bi-trio")
    pretrained = build_tiny("BertModel", root / "pretrained", words=tiny_words, seed=0)
    ranker = sentence_transformers_folder(
        pretrained, root / "ranker", pooling="cls", normalize=True, max_seq_length=MAX_SEQ_LENGTH
    )
    domain = derive_checkpoint(
        pretrained, root / "domain", architecture="BertForMaskedLM", noise=0.05, seed=2
    )
    return {"ranker": ranker, "domain": domain, "pretrained": pretrained}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, tiny_words) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("beir"), tiny_words)


def _config(data: Path, trio: dict[str, Path], out: Path, max_length: int | None = None):
    raw = config_dict(data, trio, out, systems=SYSTEMS, fusion={"method": "none"})
    raw["models"]["kind"] = "bi-encoder"
    raw["scoring"].pop("max_length")
    if max_length is not None:
        raw["scoring"]["max_length"] = max_length
    return parse_config(raw)


def _runs(out: Path) -> dict[str, dict]:
    return {name: read_run(out / "runs" / "test" / f"{name}.trec") for name in ("ranker", "domain", "TA_α=1")}


def test_the_domain_row_is_scored_with_the_rankers_settings(tmp_path, data, bi_trio):
    out = tmp_path / "out"
    result = run_experiment(_config(data, bi_trio, out), progress=False)
    runs = _runs(out)
    assert runs["domain"] == runs["TA_α=1"]  # exactly: the same weights, scored the same way
    assert runs["domain"] != runs["ranker"]  # (the vector is not zero: the rows are not trivially equal)

    # the settings are stated in results.json and report.md
    scoring = json.loads((out / "results.json").read_text())["scoring"]
    assert scoring["max_length"] == MAX_SEQ_LENGTH
    assert scoring["max_length_from"] == "the ranker's sentence_bert_config.json"
    assert scoring["options"] == {"normalize": True, "pooling": "cls", "similarity": "cosine"}
    assert (scoring["dtype"], scoring["batch_size"], scoring["top_k"]) == ("float32", 32, 10)
    assert scoring == result.results["scoring"]
    line = (
        f"- Scoring (every system): bi-encoder, max length {MAX_SEQ_LENGTH} (the ranker's "
        "sentence_bert_config.json), normalize True, pooling cls, similarity cosine, dtype float32, "
        "batch size 32, top 10."
    )
    assert line in (out / "report.md").read_text().splitlines()


def test_the_domain_row_equals_the_domain_model_scored_with_those_settings(tmp_path, data, bi_trio):
    """The row is the domain model's own scores under the ranker's settings (not the merge's)."""
    from taskrank.data import load_beir
    from taskrank.rerankers import scoring_settings

    out = tmp_path / "out"
    run_experiment(_config(data, bi_trio, out), progress=False)
    settings = scoring_settings(bi_trio["ranker"], "bi-encoder")
    assert (settings.max_length, settings.options["pooling"]) == (MAX_SEQ_LENGTH, "cls")
    reranker = load_reranker(bi_trio["domain"], "bi-encoder", device="cpu", max_length=settings.max_length,
                             **settings.options)  # fmt: skip
    dataset = load_beir(data, "test", progress=False)
    candidates = read_run(out / "runs" / "test" / "ranker.trec")
    expected = reranker.rerank(candidates, dataset.corpus, dataset.queries, top_k=10, progress=False)
    assert _runs(out)["domain"] == expected
    # on its own, the domain folder would be scored with other settings
    own = scoring_settings(bi_trio["domain"], "bi-encoder")
    assert (own.max_length, own.max_length_from, own.options["pooling"]) == (512, "the default", "mean")


def test_scoring_max_length_takes_precedence_for_every_system(tmp_path, data, bi_trio):
    out = tmp_path / "out"
    run_experiment(_config(data, bi_trio, out, max_length=8), progress=False)
    runs = _runs(out)
    assert runs["domain"] == runs["TA_α=1"]
    scoring = json.loads((out / "results.json").read_text())["scoring"]
    assert (scoring["max_length"], scoring["max_length_from"]) == (8, "scoring.max_length")
    # a longer window than the ranker's 6 tokens: other scores than the default run's
    default = tmp_path / "default"
    run_experiment(_config(data, bi_trio, default), progress=False)
    assert _runs(default)["domain"] != runs["domain"]


def test_cache_keys_hold_the_resolved_settings(tmp_path, data, bi_trio):
    """A changed max_seq_length in the ranker's folder (same weights, so same fingerprints) makes
    new cache keys: the entries made with the old settings are not taken for the new ones."""
    ranker = sentence_transformers_folder(
        bi_trio["pretrained"],
        tmp_path / "ranker",
        pooling="cls",
        normalize=True,
        max_seq_length=MAX_SEQ_LENGTH,
    )
    trio = {**bi_trio, "ranker": ranker}
    config = _config(data, trio, tmp_path / "out")
    config.cache_dir = str(tmp_path / "cache")
    run_experiment(config, progress=False)
    before = _runs(tmp_path / "out")

    (ranker / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8}))
    result = run_experiment(config, progress=False)  # the same config: the folder is resumed
    after = _runs(tmp_path / "out")
    assert result.stats["cache_misses"] > 0
    fresh = _config(data, trio, tmp_path / "fresh")
    fresh.cache_dir = str(tmp_path / "fresh-cache")
    run_experiment(fresh, progress=False)
    assert after == _runs(tmp_path / "fresh")  # not the scores of the old settings
    assert after["ranker"] != before["ranker"]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["scoring"]["max_length"] == 8


def test_a_domain_model_of_another_family_keeps_its_family_but_shares_the_max_length(
    tmp_path, data, bert_trio
):
    config = make_config(data, bert_trio, tmp_path / "out", systems=SYSTEMS)
    config.models.kind, config.models.domain_kind = "cross-encoder", "bi-encoder"
    experiment = Experiment(config, progress=False)
    experiment.prepare()
    scoring = experiment.scoring
    assert (scoring.main.kind, scoring.main.max_length, scoring.max_length_from) == (
        "cross-encoder", 64, "scoring.max_length"
    )  # fmt: skip
    assert scoring.of("merge") is scoring.main and scoring.of("ranker") is scoring.main
    assert (scoring.of("domain").kind, scoring.of("domain").max_length) == ("bi-encoder", 64)
    assert scoring.of("domain").options["pooling"] == "mean"
    assert "; the domain model as bi-encoder, max length 64" in scoring.describe()
