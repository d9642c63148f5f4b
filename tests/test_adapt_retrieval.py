"""`taskrank adapt` for bi-encoders: contrastive cropping and TSDAE on a tiny sentence-transformers
folder (loss, seeds, resume, merge-ready output, the choice of objective, the command line)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, DistilBertConfig, T5Config

from _cli import run_cli
from _data_fixtures import write_phrase_corpus
from _rerank_fixtures import sentence_transformers_folder
from taskrank.adapt import AUTO_RETRIEVAL_OBJECTIVE, adapt, choose_objective, latest_checkpoint, work_dir
from taskrank.adapt.checkpointing import RESUME_KEYS
from taskrank.adapt.choice import retrieval_misfit
from taskrank.adapt.retrieval_objectives import OBJECTIVE_STATE, crop, delete_tokens, retrieval_batcher
from taskrank.adapt.settings import AdaptSettings
from taskrank.checkpoints import Checkpoint
from taskrank.errors import ConfigError, ModelError
from taskrank.tiny import build_tiny
from taskrank.vocabulary import OBJECTIVE_NAMES

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"batch_size": 8, "max_length": 32, "progress": False}
RETRIEVAL = ["contrastive", "tsdae"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    with Checkpoint(path) as checkpoint:  # single file or sharded
        return {key: checkpoint.get(key) for key in checkpoint.keys()}


def _layout(path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    with Checkpoint(path) as checkpoint:
        return {key: (checkpoint.shape(key), checkpoint.dtype(key)) for key in checkpoint.keys()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tiny_words: tuple[str, ...]) -> Path:
    """48 documents, each about three words of the tiny vocabulary: crops of one document share them."""
    return write_phrase_corpus(tmp_path_factory.mktemp("retrieval_corpus") / "corpus.jsonl", tiny_words)


@pytest.fixture(scope="module")
def bi_encoder(tmp_path_factory: pytest.TempPathFactory, tiny_words: tuple[str, ...]) -> Path:
    """A sentence-transformers folder around a tiny BertModel with dropout on (so seeds and resume
    also cover the dropout RNG), max pooling and normalisation (not the defaults: the output must
    keep them)."""
    root = tmp_path_factory.mktemp("st")
    base = build_tiny(
        "BertModel",
        root / "base",
        words=tiny_words,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    return sentence_transformers_folder(base, root / "st", pooling="max", normalize=True)


@pytest.mark.parametrize("objective", RETRIEVAL)
def test_loss_falls_and_the_output_is_the_pretrained_bi_encoder(
    tmp_path: Path, bi_encoder: Path, corpus: Path, objective: str
) -> None:
    out = tmp_path / "out"
    result = adapt(bi_encoder, corpus, out, steps=30, lr=3e-3, objective=objective, **FAST)
    assert result.objective == objective and len(result.losses) == 30
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.8 * first, (first, last)
    # exactly the pretrained tensors (names, shapes, dtypes): no decoder, no LM head
    assert _layout(out) == _layout(bi_encoder)
    trained, pretrained = _weights(out), _weights(bi_encoder)
    assert any(not torch.equal(trained[k], pretrained[k]) for k in trained)
    # and the sentence-transformers files, untouched
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "tokenizer.json"):
        assert (out / name).read_bytes() == (bi_encoder / name).read_bytes(), name
    assert not (out / OBJECTIVE_STATE).exists() and not work_dir(out).exists()
    record = json.loads((out / "adapt.json").read_text())
    assert (record["objective"], record["objective_requested"]) == (objective, objective)
    assert f"objective: **{objective}**" in (out / "README.md").read_text()


def test_output_keeps_the_pretrained_names_when_the_encoder_holds_others(
    tmp_path: Path, bi_encoder: Path, corpus: Path
) -> None:
    """As all-MiniLM-L6-v2's file does, the pretrained weights hold the ``position_ids`` buffer
    (which transformers no longer saves) and here no pooler (which AutoModel then initialises
    afresh): the output still has exactly the pretrained tensors."""
    from safetensors.torch import save_file

    folder = tmp_path / "st"
    shutil.copytree(bi_encoder, folder)
    weights = {k: v for k, v in _weights(bi_encoder).items() if not k.startswith("pooler.")}
    weights["embeddings.position_ids"] = torch.arange(
        weights["embeddings.position_embeddings.weight"].shape[0]
    )[None]
    for old in folder.glob("model*.safetensors*"):
        old.unlink()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    adapt(folder, corpus, out, steps=2, lr=1e-3, objective="contrastive", **FAST)
    assert _layout(out) == _layout(folder)
    assert torch.equal(_weights(out)["embeddings.position_ids"], weights["embeddings.position_ids"])


@pytest.mark.parametrize("objective", RETRIEVAL)
def test_same_seed_same_weights_and_another_seed_other_weights(
    tmp_path: Path, bi_encoder: Path, corpus: Path, objective: str
) -> None:
    torch.manual_seed(99)
    before = torch.get_rng_state()
    runs = [
        adapt(bi_encoder, corpus, tmp_path / f"run{i}", steps=4, lr=1e-3, seed=s, objective=objective, **FAST)
        for i, s in enumerate([3, 3, 4])
    ]
    assert torch.equal(torch.get_rng_state(), before)
    a, b, c = (_weights(tmp_path / f"run{i}") for i in range(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].losses == runs[1].losses
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("objective", RETRIEVAL)
def test_interrupted_and_resumed_equals_uninterrupted(
    tmp_path: Path, bi_encoder: Path, corpus: Path, objective: str
) -> None:
    opts = {
        "steps": 6,
        "lr": 2e-3,
        "grad_accum": 2,
        "save_every": 2,
        "seed": 7,
        "objective": objective,
        **FAST,
    }
    whole = adapt(bi_encoder, corpus, tmp_path / "whole", **opts)

    def interrupt(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        adapt(bi_encoder, corpus, out, on_step=interrupt, **opts)
    last = latest_checkpoint(work_dir(out))
    assert last is not None and last.name == "checkpoint-0000002"
    assert (last / OBJECTIVE_STATE).is_file()  # TSDAE's decoder-only tensors travel with it
    assert sum(p.numel() for p in AutoModel.from_pretrained(last).parameters()) > 0  # a usable encoder
    resumed = adapt(bi_encoder, corpus, out, resume=True, **opts)
    assert resumed.resumed_from == 2 and resumed.losses == whole.losses
    a, b = _weights(tmp_path / "whole"), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_objective(tmp_path: Path, bi_encoder: Path, corpus: Path) -> None:
    assert {"objective", "crop_min", "crop_max", "temperature", "deletion_ratio"} <= set(RESUME_KEYS)
    out = tmp_path / "out"

    def interrupt(step: int, loss: float) -> None:
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        adapt(
            bi_encoder, corpus, out, steps=3, save_every=1, objective="contrastive", on_step=interrupt, **FAST
        )
    with pytest.raises(ConfigError, match="objective was 'contrastive', now 'tsdae'"):
        adapt(bi_encoder, corpus, out, steps=3, save_every=1, objective="tsdae", resume=True, **FAST)
    for key, value in [("crop_min", 0.2), ("crop_max", 0.4), ("temperature", 0.1), ("deletion_ratio", 0.5)]:
        with pytest.raises(ConfigError, match=rf"{key} was [0-9.]+, now {value}"):
            adapt(bi_encoder, corpus, out, steps=3, save_every=1, resume=True, **{key: value}, **FAST)
    resumed = adapt(bi_encoder, corpus, out, steps=3, save_every=1, resume=True, **FAST)  # auto: contrastive
    assert resumed.resumed_from == 1 and resumed.objective == "contrastive"


def test_a_failing_export_leaves_no_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bi_encoder: Path, corpus: Path
) -> None:
    """The bi-encoder is written into the output's temporary folder: an error half-way (here
    after the weights are written) leaves no OUT and no temporary folder behind."""
    from taskrank.adapt import trainer

    real = trainer.export_bi_encoder

    def export_then_fail(model, source: Path, folder: Path) -> None:
        real(model, source, folder)
        raise ModelError("disk full")

    monkeypatch.setattr(trainer, "export_bi_encoder", export_then_fail)
    with pytest.raises(ModelError, match="disk full"):
        adapt(bi_encoder, corpus, tmp_path / "out", steps=2, objective="contrastive", **FAST)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("objective", RETRIEVAL)
def test_output_merges_against_the_pretrained_folder_and_loads_as_a_bi_encoder(
    tmp_path: Path, bi_encoder: Path, corpus: Path, objective: str
) -> None:
    from taskrank.arithmetic import TaskVector, merge
    from taskrank.rerankers import load_reranker

    out = tmp_path / "domain"
    adapt(bi_encoder, corpus, out, steps=5, lr=3e-3, objective=objective, **FAST)
    vector = TaskVector.from_checkpoints(out, bi_encoder)
    assert set(vector.keys()) == set(_layout(bi_encoder))
    merged = merge(bi_encoder, out, bi_encoder, alpha=1.0).state_dict
    assert merged is not None
    domain = _weights(out)
    moved = [
        k
        for k, v in domain.items()
        if v.is_floating_point() and not torch.equal(merged[k], _weights(bi_encoder)[k])
    ]
    assert moved
    for key in moved:  # θ_pretrained + 1·(θ_domain − θ_pretrained) = θ_domain
        torch.testing.assert_close(merged[key], domain[key], rtol=1e-6, atol=1e-6)
    pairs = [("cell protein", "the cell of the protein"), ("law court", "the river of the forest")]
    adapted = load_reranker(out, "bi-encoder", device="cpu")
    assert (adapted.config["pooling"], adapted.config["normalize"]) == ("max", True)  # the folder's own
    before = load_reranker(bi_encoder, "bi-encoder", device="cpu").score(pairs)
    assert not np.allclose(adapted.score(pairs), before)


def test_auto_picks_contrastive_for_a_sentence_transformers_folder_and_mlm_otherwise(
    tmp_path: Path, bi_encoder: Path, bert_trio: dict[str, Path], corpus: Path
) -> None:
    config = AutoConfig.from_pretrained(bi_encoder)
    st = choose_objective("auto", config, bi_encoder, "st")
    assert (st.objective, st.requested) == (AUTO_RETRIEVAL_OBJECTIVE, "auto") == ("contrastive", "auto")
    assert "sentence-transformers folder (modules.json)" in st.reason
    plain = choose_objective("auto", config, bert_trio["pretrained"], "plain")
    assert plain.objective == "mlm" and "not a sentence-transformers bi-encoder folder" in plain.reason
    # sentence-transformers saves a CrossEncoder (and a SparseEncoder) with modules.json too: its
    # model_type says it is no bi-encoder, so auto keeps masked LM for it
    for kind, objective in [
        ("CrossEncoder", "mlm"),
        ("SparseEncoder", "mlm"),
        ("SentenceTransformer", "contrastive"),
    ]:
        folder = tmp_path / kind
        shutil.copytree(bi_encoder, folder)
        (folder / "config_sentence_transformers.json").write_text(json.dumps({"model_type": kind}))
        chosen = choose_objective("auto", config, folder, kind)
        assert chosen.objective == objective, (kind, chosen)
        assert objective == "contrastive" or f"a sentence-transformers {kind} folder" in chosen.reason
    # a plain encoder may still be asked for a retrieval objective (sentence-transformers' mean pooling)
    asked = choose_objective("tsdae", config, bert_trio["pretrained"], "plain")
    assert asked.objective == "tsdae" and "mean pooling" in asked.reason
    # the run records that auto chose, and why
    result = adapt(bi_encoder, corpus, tmp_path / "out", steps=2, **FAST)
    record = json.loads((tmp_path / "out" / "adapt.json").read_text())
    assert result.objective == record["objective"] == "contrastive"
    assert record["objective_requested"] == "auto" and "chosen automatically" in record["objective_reason"]
    assert "chosen automatically" in (tmp_path / "out" / "README.md").read_text()
    assert adapt(bert_trio["pretrained"], corpus, tmp_path / "mlm", steps=1, **FAST).objective == "mlm"


@pytest.mark.parametrize(
    ("trio", "objective", "architecture"),
    [
        ("t5_trio", "contrastive", "T5ForConditionalGeneration"),
        ("t5_trio", "tsdae", "T5ForConditionalGeneration"),
        ("llama_trio", "contrastive", "LlamaForCausalLM"),
        ("bert_trio", "span-corruption", "BertModel"),
        ("bert_trio", "causal-lm", "BertModel"),
        ("t5_trio", "mlm", "T5ForConditionalGeneration"),
    ],
)
def test_an_objective_that_does_not_fit_the_architecture_is_named(
    request: pytest.FixtureRequest, tmp_path: Path, corpus: Path, trio: str, objective: str, architecture: str
) -> None:
    pretrained = request.getfixturevalue(trio)["pretrained"]
    with pytest.raises(ModelError, match=rf"objective {objective} does not fit .*{architecture}"):
        adapt(pretrained, corpus, tmp_path / "out", steps=1, objective=objective, **FAST)
    assert not (tmp_path / "out").exists() and not work_dir(tmp_path / "out").exists()


def test_which_architectures_the_retrieval_objectives_fit(tmp_path: Path) -> None:
    bert = AutoConfig.for_model("bert")
    # an architecture no objective trains: the error still names the objective asked for
    with pytest.raises(ModelError, match=r"objective mlm does not fit bart: .*BartForConditionalGeneration"):
        choose_objective(
            "mlm",
            AutoConfig.for_model("bart", architectures=["BartForConditionalGeneration"]),
            tmp_path,
            "bart",
        )
    assert retrieval_misfit("contrastive", bert) is None and retrieval_misfit("tsdae", bert) is None
    # DistilBERT is an encoder, but transformers has no causal LM of it to be TSDAE's decoder
    assert retrieval_misfit("contrastive", DistilBertConfig()) is None
    assert "no causal-LM class" in str(retrieval_misfit("tsdae", DistilBertConfig()))
    assert "encoder-decoder" in str(retrieval_misfit("contrastive", T5Config()))
    with pytest.raises(ConfigError, match="unknown objective 'bogus'; valid: auto, mlm"):
        AdaptSettings(objective="bogus")
    with pytest.raises(ConfigError, match=r"crop_min \(0.6\) must not exceed crop_max \(0.5\)"):
        AdaptSettings(crop_min=0.6)


def test_crops_and_deletions_are_seeded_and_within_their_bounds(bert_trio: dict[str, Path]) -> None:
    rng = np.random.default_rng(0)
    window = list(range(100, 140))
    for _ in range(50):
        piece = crop(window, rng, 0.1, 0.5)
        assert 4 <= len(piece) <= 20 and piece == window[window.index(piece[0]) :][: len(piece)]
        kept = delete_tokens(window, rng, 0.6)
        assert 1 <= len(kept) < len(window) and set(kept) <= set(window) and kept == sorted(kept)
    assert delete_tokens([5], rng, 0.99) == [5]  # one token is always kept
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bert_trio["pretrained"])
    windows = [[10, 11, 12, 13, 14, 15], [20, 21, 22]]
    for objective, (first, second) in {
        "contrastive": ("anchor", "positive"),
        "tsdae": ("source", "target"),
    }.items():
        batcher = retrieval_batcher(objective, tokenizer, AdaptSettings())
        a, b = batcher(windows, 5), batcher(windows, 5)
        assert a.keys() == {f"{c}_{k}" for c in (first, second) for k in ("input_ids", "attention_mask")}
        assert all(torch.equal(a[k], b[k]) for k in a)  # the seed decides every choice
        assert not all(torch.equal(a[k], v) for k, v in batcher(windows, 6).items())
    target = retrieval_batcher("tsdae", tokenizer, AdaptSettings())(windows, 0)["target_input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert target[0].tolist() == [cls, 10, 11, 12, 13, 14, 15, sep]  # TSDAE restores the window whole


def test_cli_objective_lists_its_choices_and_runs_tsdae(
    monkeypatch, capsys, tmp_path: Path, bi_encoder: Path, corpus: Path
) -> None:
    from typer.testing import CliRunner

    from taskrank.cli import app

    help_text = CliRunner().invoke(app, ["adapt", "--help"], env={"COLUMNS": "250"}).output
    assert "|".join(OBJECTIVE_NAMES) in help_text  # the choice list of taskrank.vocabulary
    flat = " ".join(help_text.replace("│", " ").split())
    assert f"auto: {AUTO_RETRIEVAL_OBJECTIVE} for a sentence-transformers" in flat  # follows the constant
    args = [
        "adapt",
        "-p",
        bi_encoder,
        "-c",
        corpus,
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--max-length",
        "16",
    ]
    code, stdout, err = run_cli(monkeypatch, capsys, *args, "-o", tmp_path / "o", "--objective", "tsdae")
    assert code == 0, err
    assert "objective tsdae: asked for" in stdout
    assert json.loads((tmp_path / "o" / "adapt.json").read_text())["objective"] == "tsdae"
    code, _, err = run_cli(monkeypatch, capsys, *args, "-o", tmp_path / "x", "--objective", "bogus")
    assert code == 2 and "bogus" in err
