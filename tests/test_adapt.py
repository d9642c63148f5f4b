"""`taskrank adapt`: continued pre-training on tiny models (loss, determinism, resume, outputs, bad input)."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

from _data_fixtures import write_phrase_corpus
from taskrank.adapt import adapt, latest_checkpoint, work_dir
from taskrank.errors import CheckpointError, ConfigError, DataError, ModelError, TaskrankError
from taskrank.tiny import build_tiny

FAST = {"batch_size": 8, "max_length": 32, "progress": False}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tiny_words: tuple[str, ...]) -> Path:
    """A BEIR corpus.jsonl of 48 documents of the tiny vocabulary, with a repeated phrase pattern."""
    return write_phrase_corpus(tmp_path_factory.mktemp("adapt_corpus") / "corpus.jsonl", tiny_words)


@pytest.fixture(scope="module")
def t5_dropout(tmp_path_factory: pytest.TempPathFactory, tiny_words: tuple[str, ...]) -> Path:
    """A tiny T5 with dropout on, so determinism and resume also cover the dropout RNG."""
    return build_tiny(
        "T5ForConditionalGeneration",
        tmp_path_factory.mktemp("t5drop") / "m",
        words=tiny_words,
        dropout_rate=0.1,
    )


@pytest.mark.parametrize(
    ("trio", "objective", "architecture"),
    [
        ("t5_trio", "span-corruption", "T5ForConditionalGeneration"),
        ("bert_trio", "mlm", "BertForMaskedLM"),
        ("llama_trio", "causal-lm", "LlamaForCausalLM"),
    ],
)
def test_loss_falls_for_each_objective(
    request: pytest.FixtureRequest, tmp_path: Path, corpus: Path, trio: str, objective: str, architecture: str
) -> None:
    pretrained = request.getfixturevalue(trio)["pretrained"]
    result = adapt(pretrained, corpus, tmp_path / "out", steps=30, lr=3e-3, seed=0, **FAST)
    assert result.objective == objective
    assert len(result.losses) == 30 and all(math.isfinite(x) for x in result.losses)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    config = AutoConfig.from_pretrained(tmp_path / "out")
    assert config.architectures == [architecture]
    assert config.model_type == AutoConfig.from_pretrained(pretrained).model_type
    # the tokenizer travels with the checkpoint
    assert AutoTokenizer.from_pretrained(tmp_path / "out").get_vocab() == (
        AutoTokenizer.from_pretrained(pretrained).get_vocab()
    )
    assert not work_dir(tmp_path / "out").exists()


def test_card_and_record_describe_the_run(tmp_path: Path, t5_trio: dict[str, Path], corpus: Path) -> None:
    import hashlib

    out = tmp_path / "domain"
    result = adapt(t5_trio["pretrained"], corpus, out, steps=4, lr=1e-3, grad_accum=2, seed=3, **FAST)
    record = json.loads((out / "adapt.json").read_text())
    sha = hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert record["corpus"] == {"files": [str(corpus)], "doc_count": 48, "skipped": 0, "sha256": sha}
    assert record["objective"] == "span-corruption"
    assert record["steps"] == 4 and len(record["losses"]) == 4
    assert record["settings"]["lr"] == 1e-3 and record["settings"]["grad_accum"] == 2
    assert record["settings"]["seed"] == 3
    assert set(record["versions"]) == {"taskrank", "torch", "transformers", "python", "platform"}
    assert record["final_loss"] == pytest.approx(sum(result.losses) / 4)
    card = (out / "README.md").read_text()
    assert f"base_model: {t5_trio['pretrained']}" in card
    for fact in (str(corpus), "documents: 48", sha, "**span-corruption**", "steps: 4", "| lr | 0.001 |"):
        assert fact in card
    assert f"{result.final_loss:.4f}" in card


def test_same_seed_same_weights_and_global_rng_untouched(
    tmp_path: Path, t5_dropout: Path, corpus: Path
) -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    runs = [
        adapt(t5_dropout, corpus, tmp_path / f"run{i}", steps=6, lr=1e-3, seed=s, **FAST)
        for i, s in enumerate([5, 5, 6])
    ]
    assert torch.equal(torch.get_rng_state(), before)
    a, b, c = (_weights(tmp_path / f"run{i}") for i in range(3))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].losses == runs[1].losses
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another seed is another run
    pretrained = _weights(t5_dropout)
    assert any(not torch.equal(a[k], pretrained[k]) for k in a)  # and training changed the weights


def test_stopped_and_resumed_equals_uninterrupted(tmp_path: Path, t5_dropout: Path, corpus: Path) -> None:
    opts = {"steps": 9, "lr": 2e-3, "grad_accum": 2, "save_every": 3, "seed": 11, **FAST}
    whole = adapt(t5_dropout, corpus, tmp_path / "whole", **opts)

    def interrupt(step: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        adapt(t5_dropout, corpus, out, on_step=interrupt, **opts)
    assert not out.exists()  # nothing half-written at the output
    last = latest_checkpoint(work_dir(out))
    assert last is not None and last.name == "checkpoint-0000003"
    # the last complete checkpoint is itself a usable model
    usable = AutoModelForSeq2SeqLM.from_pretrained(last)
    assert sum(p.numel() for p in usable.parameters()) > 0

    resumed = adapt(t5_dropout, corpus, out, resume=True, **opts)
    assert resumed.resumed_from == 3
    assert resumed.losses == whole.losses
    a, b = _weights(tmp_path / "whole"), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not work_dir(out).exists()


def test_resume_refuses_changed_hyperparameters(
    tmp_path: Path, t5_trio: dict[str, Path], corpus: Path
) -> None:
    out = tmp_path / "out"

    def interrupt(step: int, loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        adapt(t5_trio["pretrained"], corpus, out, steps=4, lr=1e-3, save_every=1, on_step=interrupt, **FAST)
    with pytest.raises(
        ConfigError, match=r"cannot resume from .*checkpoint-0000002: lr was 0.001, now 0.002"
    ):
        adapt(t5_trio["pretrained"], corpus, out, steps=4, lr=2e-3, save_every=1, resume=True, **FAST)
    # a run left behind is neither silently resumed nor silently discarded
    with pytest.raises(
        ConfigError, match=r"out\.partial holds checkpoints of an interrupted run; pass --resume"
    ):
        adapt(t5_trio["pretrained"], corpus, out, steps=4, lr=1e-3, **FAST)
    # --overwrite starts afresh
    result = adapt(t5_trio["pretrained"], corpus, out, steps=4, lr=1e-3, save_every=1, overwrite=True, **FAST)
    assert result.resumed_from is None and len(result.losses) == 4


def test_resume_with_nothing_to_resume(tmp_path: Path, t5_trio: dict[str, Path], corpus: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothing to resume: no complete checkpoint in .*out\.partial"):
        adapt(t5_trio["pretrained"], corpus, tmp_path / "out", steps=2, resume=True, **FAST)


def test_existing_output_is_refused_unless_overwrite(
    tmp_path: Path, t5_trio: dict[str, Path], corpus: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TaskrankError, match=r"out already exists; pass --overwrite"):
        adapt(t5_trio["pretrained"], corpus, out, steps=2, **FAST)
    assert (out / "keep.txt").read_text() == "mine"
    adapt(t5_trio["pretrained"], corpus, out, steps=2, overwrite=True, **FAST)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, r"lr must be a number in \(0, 1\], got 0.0"),
        ({"lr": -1e-4}, r"lr must be a number in \(0, 1\]"),
        ({"lr": float("nan")}, r"lr must be a number in \(0, 1\], got nan"),
        ({"lr": 3.0}, r"lr must be a number in \(0, 1\], got 3.0"),
        ({"steps": 0}, r"steps must be a positive integer, got 0"),
        ({"steps": -5}, r"steps must be a positive integer, got -5"),
        ({"steps": 2.5}, r"steps must be a positive integer, got 2.5"),
        ({"steps": 10**9}, r"steps must be at most 10,000,000"),
        ({"batch_size": 0}, r"batch_size must be a positive integer"),
        ({"grad_accum": 0}, r"grad_accum must be a positive integer"),
        ({"max_length": 4}, r"max_length must be an integer of at least 8, got 4"),
        ({"save_every": -1}, r"save_every must be a non-negative integer"),
        ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\)"),
        ({"seed": -1}, r"seed must be a non-negative integer"),
        ({"mlm_probability": 0.0}, r"mlm_probability must be in \(0, 1\)"),
        ({"dtype": "float16"}, r"unknown dtype 'float16'; valid: auto, float32, bfloat16"),
        ({"device": "gpu7"}, r"unknown device 'gpu7'"),
    ],
)
def test_out_of_range_settings_are_refused(
    tmp_path: Path, t5_trio: dict[str, Path], corpus: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        adapt(t5_trio["pretrained"], corpus, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path, t5_trio: dict[str, Path], corpus: Path) -> None:
    with pytest.raises(ModelError, match="device 'cuda' was asked for but CUDA is not available"):
        adapt(t5_trio["pretrained"], corpus, tmp_path / "out", device="cuda", progress=False)


def test_max_length_beyond_the_model_positions(
    tmp_path: Path, bert_trio: dict[str, Path], corpus: Path
) -> None:
    with pytest.raises(ConfigError, match=r"max_length 1000 exceeds the 512 positions of .*pretrained"):
        adapt(bert_trio["pretrained"], corpus, tmp_path / "out", max_length=1000, progress=False)


def test_checkpoint_with_no_known_objective_names_its_architecture(
    tmp_path: Path, t5_trio: dict[str, Path], corpus: Path
) -> None:
    from transformers import BartConfig

    odd = tmp_path / "bart"
    odd.mkdir()
    cfg = BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1)
    cfg.architectures = ["BartForConditionalGeneration"]
    cfg.save_pretrained(odd)
    AutoTokenizer.from_pretrained(t5_trio["pretrained"]).save_pretrained(odd)
    with pytest.raises(ModelError, match="BartForConditionalGeneration"):
        adapt(odd, corpus, tmp_path / "out", progress=False)


def test_empty_corpus_fails_before_training(tmp_path: Path, t5_trio: dict[str, Path]) -> None:
    empty = tmp_path / "corpus.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="holds no documents"):
        adapt(t5_trio["pretrained"], empty, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not work_dir(tmp_path / "out").exists()


def test_missing_pretrained_checkpoint(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(CheckpointError):
        adapt(tmp_path / "no-such-model", corpus, tmp_path / "out", progress=False)


def test_bfloat16_autocast_trains_on_cpu(tmp_path: Path, llama_trio: dict[str, Path], corpus: Path) -> None:
    result = adapt(
        llama_trio["pretrained"], corpus, tmp_path / "out", steps=3, lr=1e-3, dtype="bfloat16", **FAST
    )
    assert all(math.isfinite(x) for x in result.losses)
    record = json.loads((tmp_path / "out" / "adapt.json").read_text())
    assert record["compute_dtype"] == "bfloat16" and record["saved_dtype"] == "float32"
    weights = _weights(tmp_path / "out")
    assert all(t.dtype == torch.float32 for t in weights.values())


def test_long_documents_are_cut_into_windows(tmp_path: Path, bert_trio: dict[str, Path]) -> None:
    corpus = tmp_path / "doc.txt"
    corpus.write_text(" ".join(["cell protein gene"] * 40), encoding="utf-8")  # 120 word-piece tokens
    result = adapt(
        bert_trio["pretrained"],
        corpus,
        tmp_path / "out",
        steps=1,
        batch_size=2,
        max_length=32,
        progress=False,
    )
    assert result.corpus_docs == 1
    assert result.examples == math.ceil(120 / 30)  # 30 tokens + [CLS] + [SEP] per window
    shutil.rmtree(tmp_path / "out")


def test_progress_bar_shows_the_loss_and_can_be_turned_off(
    tmp_path: Path, t5_trio: dict[str, Path], corpus: Path, capsys: pytest.CaptureFixture
) -> None:
    from transformers.utils import logging as hf_logging

    opts = {"steps": 2, "batch_size": 2, "max_length": 16}
    shown = adapt(t5_trio["pretrained"], corpus, tmp_path / "a", progress=True, **opts)
    printed = capsys.readouterr()
    assert f"loss {shown.losses[-1]:.4f}" in printed.out + printed.err
    assert "2/2" in printed.out + printed.err
    assert hf_logging.is_progress_bar_enabled()
    adapt(t5_trio["pretrained"], corpus, tmp_path / "b", progress=False, **opts)
    printed = capsys.readouterr()
    assert "loss" not in printed.out + printed.err and "Loading weights" not in printed.err
    assert hf_logging.is_progress_bar_enabled()  # the global switch is put back


def test_gradient_accumulation_equals_the_larger_batch(
    tmp_path: Path, llama_trio: dict[str, Path], tiny_words: tuple[str, ...]
) -> None:
    """Causal LM (no sampling in the batches, no dropout) on windows of equal length: 4 × 2
    accumulated micro-batches must give the weights of one batch of 8."""
    rng = random.Random(5)
    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w", encoding="utf-8") as handle:
        for _ in range(16):  # 15 whole-word tokens + <s> = one full window of 16
            handle.write(json.dumps({"text": " ".join(rng.choices(tiny_words, k=15))}) + "\n")
    # float32 on the CPU: on a GPU, device="auto" would train in bf16, too coarse for this comparison
    common = {"steps": 4, "lr": 1e-3, "max_length": 16, "seed": 2, "progress": False, "device": "cpu"}
    big = adapt(llama_trio["pretrained"], corpus, tmp_path / "big", batch_size=8, grad_accum=1, **common)
    acc = adapt(llama_trio["pretrained"], corpus, tmp_path / "acc", batch_size=4, grad_accum=2, **common)
    assert big.examples == acc.examples == 16
    assert acc.losses == pytest.approx(big.losses, rel=1e-5)
    a, b = _weights(tmp_path / "big"), _weights(tmp_path / "acc")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    adapt(llama_trio["pretrained"], corpus, tmp_path / "other", batch_size=4, grad_accum=1, **common)
    c = _weights(tmp_path / "other")
    assert any(not torch.allclose(a[k], c[k], rtol=1e-4, atol=1e-5) for k in a)  # the test can tell


def test_resume_refuses_a_changed_corpus(tmp_path: Path, t5_trio: dict[str, Path], corpus: Path) -> None:
    mine = tmp_path / "corpus.jsonl"
    mine.write_bytes(corpus.read_bytes())
    out = tmp_path / "out"

    def interrupt(step: int, loss: float) -> None:
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        adapt(t5_trio["pretrained"], mine, out, steps=3, save_every=1, on_step=interrupt, **FAST)
    mine.write_text(mine.read_text(encoding="utf-8") + '{"text": "one more document"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"checkpoint-0000001: corpus_sha256 was '[0-9a-f]{64}', now"):
        adapt(t5_trio["pretrained"], mine, out, steps=3, save_every=1, resume=True, **FAST)


def test_incomplete_checkpoints_are_never_resumed_from(tmp_path: Path) -> None:
    work = tmp_path / "out.partial"
    (work / "checkpoint-0000010").mkdir(parents=True)
    (work / "checkpoint-0000010" / "trainer_state.json").write_text("{}")
    (work / "checkpoint-0000020").mkdir()  # no state file: the write never finished
    (work / ".checkpoint-0000030.tmp-abc").mkdir()  # the temporary folder of a killed save
    (work / ".checkpoint-0000030.tmp-abc" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(work) == work / "checkpoint-0000010"
    (work / "checkpoint-10000000").mkdir()  # step numbers compare as numbers, not strings
    (work / "checkpoint-10000000" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(work) == work / "checkpoint-10000000"
    assert latest_checkpoint(tmp_path / "elsewhere") is None
