"""Continued pre-training of θ_pretrained on a target corpus: the domain checkpoint of task arithmetic.

A plain, seeded PyTorch loop (AdamW, linear warm-up and decay, gradient accumulation). Every
random choice of step ``s`` (which documents, which tokens are masked, dropout) is drawn from
generators seeded with ``(seed, s)``, so a run stopped at a checkpoint and resumed computes the
very same steps as an uninterrupted one: a checkpoint needs only the weights, the optimizer
and scheduler states and the step number. The steps of a run: the settings and the checkpoint
to resume from, θ_pretrained's config and tokenizer, the corpus in windows, the model and its
optimizer, the loop (:mod:`taskrank.adapt.loop`), and the output folder with its card.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..atomic import check_output_dir
from ..devices import resolve_device
from ..environment import versions
from ..errors import CheckpointError, ConfigError
from ..rerankers.loading import load_model
from ..tokenization import special_affixes
from .card import model_card, save_trained
from .checkpointing import (
    checkpoint_to_resume,
    latest_checkpoint,
    load_torch_state,
    resume_progress,
    work_dir,
)
from .choice import RETRIEVAL_OBJECTIVES, ObjectiveChoice, choose_objective
from .corpus import CorpusTexts, PathLike, read_corpus
from .loop import AdaptRun, ExampleOrder, TokenChunks, compute_dtype, train_steps
from .objectives import OBJECTIVES, BatchFn, make_batcher
from .retrieval_objectives import RetrievalModel, export_bi_encoder, load_retrieval_model, retrieval_batcher
from .runtime import derived_seed, follows_progress, local_rng
from .settings import AdaptSettings

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class AdaptResult:
    """What :func:`adapt` produced: the checkpoint path and how training went."""

    path: Path
    objective: str
    steps: int
    losses: list[float]
    corpus_docs: int
    corpus_sha256: str
    examples: int
    resumed_from: int | None = None
    settings: dict[str, object] = field(default_factory=dict)
    #: why this objective: asked for, or chosen automatically (and from what)
    objective_reason: str = ""

    @property
    def final_loss(self) -> float:
        """Mean training loss of the last (up to) 10 optimizer steps."""
        tail = [x for x in self.losses[-10:] if math.isfinite(x)]
        return float(sum(tail) / len(tail)) if tail else float("nan")


@follows_progress
def adapt(
    pretrained: str | os.PathLike[str],
    corpus: PathLike | Sequence[PathLike] | CorpusTexts,
    out: str | os.PathLike[str],
    *,
    steps: int = 200,
    lr: float = 1e-4,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_length: int = 128,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    save_every: int = 100,
    mlm_probability: float = 0.15,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    objective: str = "auto",
    crop_min: float = 0.1,
    crop_max: float = 0.5,
    temperature: float = 0.05,
    deletion_ratio: float = 0.6,
    device: str = "auto",
    dtype: str | None = "auto",
    skip_empty: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> AdaptResult:
    """Continue pre-training ``pretrained`` on ``corpus``; save the domain checkpoint to ``out``.

    ``objective="auto"``: ``contrastive`` for a sentence-transformers folder, else what the config
    calls for (:func:`detect_objective`: masked-LM, T5 span corruption, next-token prediction);
    ``contrastive`` (``crop_min``, ``crop_max``, ``temperature``) and ``tsdae``
    (``deletion_ratio``) keep a bi-encoder one (:mod:`taskrank.adapt.retrieval_objectives`).
    Documents are cut into windows of ``max_length`` tokens (special tokens included); a step
    sees ``batch_size × grad_accum`` windows. The settings are validated by :class:`AdaptSettings`.

    Every ``save_every`` steps a checkpoint is written atomically to ``<out>.partial/``;
    ``resume=True`` continues from the newest one and ends with the same weights as an
    uninterrupted run. ``out`` appears only when training is done, with the tokenizer, a
    README.md card and ``adapt.json`` (corpus, objective, settings, losses).

    Args:
        pretrained: θ_pretrained, a local checkpoint folder or a hub id.
        corpus: see :func:`taskrank.adapt.read_corpus`, or an already read :class:`CorpusTexts`.
        out: the output folder (refused if it exists, unless ``overwrite``).
        device: ``auto`` (CUDA, MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        dtype: ``auto`` (bfloat16 autocast on a bf16-capable GPU, else float32), ``float32``,
            ``bfloat16``. Weights stay float32 during training and are saved in the pretrained
            checkpoint's dtype.
        on_step: called as ``on_step(step, loss)`` after each optimizer step (1-based).

    Example::

        result = adapt("google-t5/t5-base", "data/scifact/corpus.jsonl", "models/t5-scifact", steps=1000)
        # taskrank merge --ranker castorini/monot5-base-msmarco --domain models/t5-scifact \\
        #     --pretrained google-t5/t5-base --alpha 0.7 --out models/merged
    """
    settings = AdaptSettings(**{k: v for k, v in locals().items() if k in AdaptSettings.model_fields})
    out = Path(out)
    check_output_dir(out, overwrite)
    start_from = checkpoint_to_resume(out, resume=resume, overwrite=overwrite)
    torch_device = resolve_device(device)
    precision = compute_dtype(dtype, torch_device)
    job = _prepare(pretrained, corpus, settings, skip_empty)
    record = job.run_record(settings, precision)
    first_step, losses = resume_progress(start_from, record) if start_from is not None else (0, [])
    with local_rng(torch_device):
        run = _start(job, settings, start_from, torch_device, precision, work_dir(out), record)
        train_steps(run, first_step, losses, progress, on_step)
    result = AdaptResult(
        out, job.objective, settings.steps, losses, job.texts.doc_count, job.texts.sha256, len(job.chunks),
        resumed_from=first_step if start_from is not None else None, settings=settings.model_dump(),
        objective_reason=job.choice.reason,
    )  # fmt: skip
    _save(result, run, job, overwrite)
    return result


@dataclass
class _Job:
    """What an ``adapt`` run trains on: θ_pretrained (before its weights are loaded: where it is,
    its config and tokenizer), the objective and its batches, and the corpus cut into windows."""

    name: str
    source: Path
    config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase
    choice: ObjectiveChoice
    batcher: BatchFn
    texts: CorpusTexts
    chunks: TokenChunks

    @property
    def objective(self) -> str:
        """The objective trained (``auto`` resolved)."""
        return self.choice.objective

    def run_record(self, settings: AdaptSettings, precision: str) -> dict[str, object]:
        """What a resumed run must agree with (:data:`~taskrank.adapt.checkpointing.RESUME_KEYS`)."""
        return {
            "pretrained": self.name,
            "corpus_sha256": self.texts.sha256,
            **settings.model_dump(exclude={"save_every", "objective"}),
            "objective": self.objective,
            "objective_requested": settings.objective,
            "dtype": precision,
        }


def _prepare(
    pretrained: str | os.PathLike[str],
    corpus: PathLike | Sequence[PathLike] | CorpusTexts,
    settings: AdaptSettings,
    skip_empty: bool,
) -> _Job:
    """Load the config and tokenizer of ``pretrained``, choose the objective they call for, and
    read and tokenize the corpus into windows."""
    from transformers import AutoConfig, AutoTokenizer

    from ..checkpoints import resolve_checkpoint

    source = resolve_checkpoint(pretrained)
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the config and tokenizer of {pretrained}: {exc}") from exc
    choice = choose_objective(settings.objective, config, source, str(pretrained))
    objective = choice.objective
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and settings.max_length > limit:
        raise ConfigError(f"max_length {settings.max_length} exceeds the {limit} positions of {pretrained}")
    batcher = (
        retrieval_batcher(objective, tokenizer, settings)
        if objective in RETRIEVAL_OBJECTIVES
        else make_batcher(
            objective, tokenizer, mlm_probability=settings.mlm_probability,
            noise_density=settings.noise_density, mean_span_length=settings.mean_span_length,
        )
    )  # fmt: skip

    texts = corpus if isinstance(corpus, CorpusTexts) else read_corpus(corpus, skip_empty=skip_empty)
    # Room for the special tokens the objective adds (CLS/SEP, BOS, or T5's EOS).
    reserve = 1 if objective == "span-corruption" else sum(map(len, special_affixes(tokenizer)))
    chunks = TokenChunks(texts.texts, tokenizer, settings.max_length - reserve)
    if len(chunks) == 0:
        raise ConfigError(f"the corpus {texts.sources[0]} gave no tokens with the tokenizer of {pretrained}")
    return _Job(str(pretrained), source, config, tokenizer, choice, batcher, texts, chunks)


def _start(
    job: _Job,
    settings: AdaptSettings,
    start_from: Path | None,
    device: torch.device,
    precision: str,
    work: Path,
    record: dict[str, object],
) -> AdaptRun:
    """The model, its optimizer and scheduler, ready to train (from ``start_from`` when resuming)."""
    model = _load_model(job, start_from, settings, device)
    optimizer, scheduler = _optimizer(model, settings, start_from, device)
    order = ExampleOrder(len(job.chunks), settings.seed)
    return AdaptRun(
        model, job.tokenizer, job.batcher, job.chunks, order, optimizer, scheduler, settings, device,
        precision, work, record,
    )  # fmt: skip


def _load_model(
    job: _Job, start_from: Path | None, settings: AdaptSettings, device: torch.device
) -> PreTrainedModel | RetrievalModel:
    """The model to train, in float32 on ``device``: θ_pretrained, or the checkpoint resumed from."""
    import transformers

    torch.manual_seed(derived_seed(settings.seed, 0xADA))  # a new head (MLM on a bare encoder) is seeded
    model: PreTrainedModel | RetrievalModel
    if job.objective in RETRIEVAL_OBJECTIVES:
        model = load_retrieval_model(job.source, job.objective, settings, start_from)
    else:
        auto_class = OBJECTIVES[job.objective]
        load_from = start_from if start_from is not None else job.source
        # a truncated or corrupt weight file, or a refused pickle, is a CheckpointError naming it
        what = f"{load_from} as {auto_class}"
        model = load_model(getattr(transformers, auto_class), load_from, torch.float32, what)
    model.to(device)
    model.train()
    return model


def _optimizer(
    model: PreTrainedModel | RetrievalModel,
    settings: AdaptSettings,
    start_from: Path | None,
    device: torch.device,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW (no weight decay on biases and norms) with linear warm-up and decay, resumed when
    ``start_from`` is a checkpoint."""
    import transformers

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and p.requires_grad]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 and p.requires_grad]
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr)
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, round(settings.warmup_ratio * settings.steps), settings.steps
    )
    if start_from is not None:
        optimizer.load_state_dict(load_torch_state(start_from / "optimizer.pt", device))
        scheduler.load_state_dict(load_torch_state(start_from / "scheduler.pt", torch.device("cpu")))
    return optimizer, scheduler


def _float_dtype_of(config: PretrainedConfig) -> torch.dtype:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def _save(result: AdaptResult, run: AdaptRun, job: _Job, overwrite: bool) -> None:
    """Write the adapted checkpoint (in θ_pretrained's dtype) with ``adapt.json`` and its card,
    then remove the periodic checkpoints."""
    saved_dtype, texts, found = _float_dtype_of(job.config), job.texts, versions()
    meta = {
        "pretrained": job.name,
        "objective": result.objective,
        "objective_requested": job.choice.requested,
        "objective_reason": result.objective_reason,
        "steps": result.steps,
        "final_loss": result.final_loss,
        "losses": result.losses,
        "examples": result.examples,
        "resumed_from": result.resumed_from,
        "device": str(run.device),
        "compute_dtype": run.compute_dtype,
        "saved_dtype": str(saved_dtype).removeprefix("torch."),
        "settings": result.settings,
        "corpus": {
            "files": texts.sources,
            "doc_count": texts.doc_count,
            "skipped": texts.skipped,
            "sha256": texts.sha256,
        },
        "versions": found,
    }
    card = model_card(
        base_model=job.name,
        tags=("domain-adaptation", result.objective),
        title="Domain checkpoint made by `taskrank adapt`",
        body=_card_body(meta, texts),
        settings=result.settings,
        table_header="hyperparameter",
        versions=found,
        record_file="adapt.json",
    )
    model = run.model
    write_model = (
        (lambda folder: export_bi_encoder(model, job.source, folder))
        if isinstance(model, RetrievalModel)
        else None
    )
    save_trained(
        result.path, run.model, run.tokenizer, record_file="adapt.json", record=meta, card=card,
        overwrite=overwrite, dtype=saved_dtype, write_model=write_model,
    )  # fmt: skip
    shutil.rmtree(run.work, ignore_errors=True)
    log.info("adapted checkpoint written to %s (final loss %.4f)", result.path, result.final_loss)


def _card_body(meta: dict[str, object], texts: CorpusTexts) -> str:
    files = "\n".join(f"  - `{f}`" for f in texts.sources[:20]) + (
        f"\n  - ... and {len(texts.sources) - 20} more" if len(texts.sources) > 20 else ""
    )
    pretrained = meta["pretrained"]
    bi_encoder = (
        "\n\nIt keeps the pretrained tensors (and sentence-transformers files), so it also loads as a "
        'bi-encoder (`taskrank.rerankers.load_reranker(path, "bi-encoder")`).'
        if meta["objective"] in RETRIEVAL_OBJECTIVES
        else ""
    )
    return f"""Continued pre-training of `{pretrained}` on an unlabeled target corpus, for task arithmetic
(θ_new = θ_ranker + α · (θ_domain − θ_pretrained)): use this folder as `--domain` of `taskrank merge`.\
{bi_encoder}

## Corpus
- documents: {texts.doc_count} ({texts.skipped} skipped for having no text)
- training windows: {meta["examples"]}
- sha256: `{texts.sha256}`
- files:
{files}

## Training
- objective: **{meta["objective"]}** ({meta["objective_reason"]})
- steps: {meta["steps"]}, final loss (mean of the last 10 steps): {meta["final_loss"]:.4f}
- device: {meta["device"]}, compute dtype: {meta["compute_dtype"]}, saved dtype: {meta["saved_dtype"]}"""


__all__ = ["AdaptResult", "AdaptSettings", "adapt", "latest_checkpoint", "resolve_device", "work_dir"]
