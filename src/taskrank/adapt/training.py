"""A small ranker-training helper: turn a (tiny) pretrained model into a re-ranker in seconds.

Made for the offline demo and for tests, whose three checkpoints (pretrained, ranker, domain)
must be produced locally and must not be random: :func:`train_ranker` fine-tunes θ_pretrained
on (query, document, label) triples, :func:`taskrank.adapt.adapt` makes θ_domain.

Two kinds, scored by :mod:`taskrank.rerankers` exactly as trained:

* ``monot5``: a T5 encoder-decoder learns to answer ``true``/``false`` after
  ``Query: {q} Document: {d} Relevant:`` (Nogueira et al., "Document Ranking with a Pretrained
  Sequence-to-Sequence Model", Findings of EMNLP 2020);
* ``cross-encoder``: an encoder with a one-logit classification head (BERT-style
  ``ForSequenceClassification``), binary cross-entropy on the logit.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from ..atomic import check_output_dir
from ..devices import resolve_device
from ..environment import versions
from ..errors import CheckpointError, ConfigError, DataError, ModelError
from ..progress import progress_bar
from ..vocabulary import TrainableKind
from .card import model_card, save_trained
from .runtime import derived_seed, follows_progress, local_rng
from .settings import RankerSettings

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..rerankers.batching import Packed
    from ..rerankers.cross_encoder import CrossEncoderReranker
    from ..rerankers.monot5 import MonoT5Reranker

log = logging.getLogger(__name__)

Example = tuple[str, str, int]


def _check_examples(examples: Sequence[Example]) -> list[Example]:
    checked: list[Example] = []
    for i, item in enumerate(examples):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise DataError(f"training example {i} must be a (query, document, label) triple, got {item!r}")
        query, document, label = item
        if not isinstance(query, str) or not query.strip():
            raise DataError(f"training example {i} has an empty or non-string query: {query!r}")
        if not isinstance(document, str) or not document.strip():
            raise DataError(f"training example {i} has an empty or non-string document: {document!r}")
        if isinstance(label, bool) or label not in (0, 1):
            raise DataError(f"training example {i} has label {label!r}; labels are 0 (not relevant) or 1")
        checked.append((query, document, int(label)))
    if not checked:
        raise DataError("no training examples given")
    labels = {label for _, _, label in checked}
    if labels != {0, 1}:
        raise DataError(
            f"training examples need both labels 0 and 1; all {len(checked)} have label {labels.pop()}"
        )
    return checked


def examples_from_qrels(
    corpus: Mapping[str, Mapping[str, str]],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    negatives: int = 1,
    seed: int = 0,
) -> list[Example]:
    """Training triples from judged data: each relevant (grade > 0) pair with label 1, plus
    ``negatives`` random documents not judged relevant to that query, with label 0.

    >>> corpus = {"d1": {"title": "", "text": "cells"}, "d2": {"title": "", "text": "courts"}}
    >>> examples_from_qrels(corpus, {"q": "cell"}, {"q": {"d1": 1}})
    [('cell', 'cells', 1), ('cell', 'courts', 0)]
    """
    from ..data import doc_text

    if negatives < 0:
        raise ConfigError(f"negatives must be non-negative, got {negatives}")
    rng = random.Random(seed)
    doc_ids = sorted(corpus)
    examples: list[Example] = []
    for qid in sorted(qrels):
        if qid not in queries:
            raise DataError(f"qrels name query {qid!r}, which is not among the queries")
        relevant = {d for d, grade in qrels[qid].items() if grade > 0}
        pool = [d for d in doc_ids if d not in relevant]
        for did in sorted(relevant):
            if did not in corpus:
                raise DataError(f"qrels of query {qid!r} name document {did!r}, which is not in the corpus")
            examples.append((queries[qid], doc_text(corpus[did]), 1))
            for neg in rng.sample(pool, min(negatives, len(pool))):
                examples.append((queries[qid], doc_text(corpus[neg]), 0))
    return examples


def _grouped_stream(data: Sequence[Example], seed: int) -> Iterator[int]:
    """Example indices epoch after epoch, the queries in a fresh seeded order each epoch and each
    query's examples kept together, so a batch compares documents of the same query (which a
    pointwise loss on a tiny random model learns from far sooner than from scattered examples)."""
    groups: dict[str, list[int]] = {}
    for index, example in enumerate(data):
        groups.setdefault(example[0], []).append(index)
    keys = list(groups)
    for epoch in itertools.count():
        for g in np.random.default_rng([seed, epoch]).permutation(len(keys)):
            yield from groups[keys[g]]


def _model_for(
    kind: str, pretrained: str | os.PathLike[str], seed: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model to fine-tune and its tokenizer, checking the architecture suits ``kind``."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    from .objectives import SPAN_CORRUPTION_MODEL_TYPES

    try:
        config = AutoConfig.from_pretrained(pretrained)
        tokenizer = AutoTokenizer.from_pretrained(pretrained)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the config and tokenizer of {pretrained}: {exc}") from exc
    archs = ", ".join(getattr(config, "architectures", None) or []) or "(none recorded)"
    if kind == "monot5":
        if not (config.is_encoder_decoder and config.model_type in SPAN_CORRUPTION_MODEL_TYPES):
            raise ModelError(
                f"kind monot5 needs a T5-family encoder-decoder; {pretrained} has architecture {archs} "
                f"(model_type {config.model_type!r})"
            )
        cls: Any = transformers.AutoModelForSeq2SeqLM
        kwargs: dict[str, int] = {}
    else:
        if (
            config.is_encoder_decoder
            or config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
        ):
            raise ModelError(
                f"kind cross-encoder needs an encoder with a sequence-classification head; {pretrained} has "
                f"architecture {archs} (model_type {config.model_type!r})"
            )
        cls, kwargs = transformers.AutoModelForSequenceClassification, {"num_labels": 1}
    torch.manual_seed(derived_seed(seed, 0x5EED))  # the new head, if any, is seeded (inside local_rng)
    try:
        model = cls.from_pretrained(pretrained, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load {pretrained} as a {kind} ranker: {exc}") from exc
    return model, tokenizer


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str, option: str) -> int:
    vocab = tokenizer.get_vocab()
    if token not in vocab:
        raise ModelError(
            f"{option} {token!r} is not in the tokenizer's vocabulary (monoT5 uses '▁true'/'▁false')"
        )
    return int(vocab[token])


@follows_progress
def train_ranker(
    pretrained: str | os.PathLike[str],
    examples: Sequence[Example],
    out: str | os.PathLike[str],
    *,
    kind: TrainableKind = "monot5",
    steps: int = 150,
    lr: float = 3e-3,
    batch_size: int = 32,
    max_length: int = 128,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    seed: int = 0,
    true_token: str = "▁true",
    false_token: str = "▁false",
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Fine-tune ``pretrained`` into a re-ranker on (query, document, label) triples; save it to ``out``.

    ``kind="monot5"`` trains a T5 model to generate ``true``/``false`` (``true_token`` /
    ``false_token``) after ``Query: {q} Document: {d} Relevant:``; ``kind="cross-encoder"``
    puts a one-logit classification head on an encoder and trains it with binary
    cross-entropy. The result loads with ``taskrank.rerankers.load_reranker(out, kind)``.
    Seeded and deterministic on CPU; the defaults suit the tiny models of
    :mod:`taskrank.tiny` (a real model wants a smaller ``lr``, such as 3e-5).

    Labels are 0 or 1, and both must occur. ``out`` is written atomically with a README.md
    card and ``training.json``.

    Example::

        from taskrank.tiny import build_tiny
        base = build_tiny("T5ForConditionalGeneration", "demo/pretrained", words=["cell", "court"])
        train_ranker(base, [("cell", "the cell", 1), ("cell", "the court", 0)], "demo/ranker")
    """
    settings = RankerSettings(
        kind=kind, steps=steps, lr=lr, batch_size=batch_size, max_length=max_length,
        warmup_ratio=warmup_ratio, weight_decay=weight_decay, seed=seed, true_token=true_token,
        false_token=false_token,
    )  # fmt: skip
    out = Path(out)
    check_output_dir(out, overwrite)
    data = _check_examples(examples)
    torch_device = resolve_device(device)
    with local_rng(torch_device):
        model, tokenizer = _model_for(settings.kind, pretrained, settings.seed)
        targets = (
            [
                _token_id(tokenizer, settings.true_token, "true_token"),
                _token_id(tokenizer, settings.false_token, "false_token"),
            ]
            if settings.kind == "monot5"
            else []
        )
        model.to(torch_device)
        packed = _encode(model, tokenizer, data, settings, torch_device)
        losses = _train_loop(model, tokenizer, packed, data, targets, settings, torch_device, progress)
    _save(out, model, tokenizer, str(pretrained), data, settings, losses, overwrite)
    return out


def _encode(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: Sequence[Example],
    settings: RankerSettings,
    device: torch.device,
) -> Packed:
    """The token ids of every (query, document) pair, as the re-ranker that will score the model
    builds them, so that training sees exactly the sequences inference does (template,
    truncation, special tokens)."""
    from ..rerankers import load_reranker

    options: dict[str, Any] = (
        {"true_token": settings.true_token, "false_token": settings.false_token}
        if settings.kind == "monot5"
        else {}
    )
    loaded = load_reranker(
        model,
        settings.kind,
        tokenizer=tokenizer,
        device=str(device),
        max_length=settings.max_length,
        **options,
    )
    # the re-rankers of the trainable kinds expose encode(): the token ids they score
    scorer = cast("MonoT5Reranker | CrossEncoderReranker", loaded)
    return scorer.encode([q for q, _, _ in data], [d for _, d, _ in data])


def _train_loop(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    packed: Packed,
    data: Sequence[Example],
    targets: list[int],
    settings: RankerSettings,
    device: torch.device,
    progress: bool,
) -> list[float]:
    """``settings.steps`` AdamW steps on batches of one query's examples at a time; the losses."""
    from transformers import get_constant_schedule_with_warmup

    all_labels = torch.tensor([label for _, _, label in data])
    pad = {"input_ids": tokenizer.pad_token_id}
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = get_constant_schedule_with_warmup(optimizer, round(settings.warmup_ratio * settings.steps))
    stream = _grouped_stream(data, settings.seed)
    losses: list[float] = []
    n = settings.batch_size
    with progress_bar(settings.steps, f"train {settings.kind}", progress, fields={"loss": "-"}) as bar:
        for step in range(settings.steps):
            rows = np.fromiter((next(stream) for _ in range(n)), dtype=np.int64, count=n)
            labels = all_labels[rows].to(device)
            enc = {k: v.to(device) for k, v in packed.pad(rows, pad).items()}
            torch.manual_seed(derived_seed(settings.seed, step))  # dropout of this step
            if settings.kind == "monot5":
                # target "true</s>" or "false</s>"; the score reads the first decoder step
                first = torch.tensor(targets, device=device)[1 - labels]
                eos = torch.full_like(first, tokenizer.eos_token_id)
                loss = model(**enc, labels=torch.stack([first, eos], dim=1)).loss
            else:
                logits = model(**enc).logits[:, 0]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
            if not torch.isfinite(loss):
                raise ModelError(
                    f"the training loss became {loss.item()} at step {step + 1}; lower lr ({settings.lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.advance(1, loss=f"{losses[-1]:.4f}")
    return losses


def _save(
    out: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pretrained: str,
    data: Sequence[Example],
    settings: RankerSettings,
    losses: list[float],
    overwrite: bool,
) -> None:
    """Write the ranker with ``training.json`` and its card."""
    kind, table, found = settings.kind, settings.model_dump(), versions()
    positives, final_loss = sum(label for _, _, label in data), float(np.mean(losses[-10:]))
    record = {
        "pretrained": pretrained,
        "kind": kind,
        "settings": table,
        "examples": len(data),
        "positives": positives,
        "final_loss": final_loss,
        "losses": losses,
        "versions": found,
    }
    card = model_card(
        base_model=pretrained,
        tags=("reranker", kind),
        title=f"A {kind} re-ranker made by `taskrank.train_ranker`",
        body=(
            f"Fine-tuned from `{pretrained}` on {len(data)} (query, document, label) triples\n"
            f"({positives} relevant). Final loss (mean of the last 10 steps): {final_loss:.4f}.\n"
            f'Load it with `taskrank.rerankers.load_reranker(path, "{kind}")`.'
        ),
        settings=table,
        table_header="setting",
        versions=found,
        record_file="training.json",
    )
    save_trained(
        out, model, tokenizer, record_file="training.json", record=record, card=card, overwrite=overwrite
    )
    log.info("%s ranker written to %s (final loss %.4f)", kind, out, final_loss)


__all__ = ["Example", "RankerSettings", "examples_from_qrels", "train_ranker"]
