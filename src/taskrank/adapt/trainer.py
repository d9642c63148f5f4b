"""Continued pre-training of θ_pretrained on a target corpus: the domain checkpoint of task arithmetic.

A plain, seeded PyTorch loop (AdamW, linear warm-up and decay, gradient accumulation). Every
random choice of step ``s`` (which documents, which tokens are masked, dropout) is drawn from
generators seeded with ``(seed, s)``, so a run stopped at a checkpoint and resumed computes the
very same steps as an uninterrupted one: a checkpoint needs only the weights, the optimizer
and scheduler states and the step number.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ..atomic import atomic_dir, check_output_dir, write_json, write_text
from ..errors import CheckpointError, ConfigError, ModelError
from ..rerankers.base import load_model
from ..tokenization import special_affixes
from .corpus import CorpusTexts, PathLike, read_corpus
from .objectives import OBJECTIVES, detect_objective, make_batcher

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

STATE_FILE = "trainer_state.json"
DTYPES = ("auto", "float32", "bfloat16")
#: Hyperparameters a resumed run must share with the run it continues.
_RESUME_KEYS = (
    "pretrained", "objective", "corpus_sha256", "steps", "lr", "batch_size", "grad_accum", "max_length",
    "warmup_ratio", "weight_decay", "max_grad_norm", "seed", "mlm_probability", "noise_density",
    "mean_span_length", "dtype",
)  # fmt: skip


@dataclass
class AdaptSettings:
    """Hyperparameters of one ``adapt`` run (validated on construction)."""

    steps: int = 200
    lr: float = 1e-4
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 100
    mlm_probability: float = 0.15
    noise_density: float = 0.15
    mean_span_length: float = 3.0

    def __post_init__(self) -> None:
        def bad(key: str, rule: str) -> ConfigError:
            return ConfigError(f"{key} must be {rule}, got {getattr(self, key)!r}")

        for key in ("steps", "batch_size", "grad_accum"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(key, "a positive integer")
        if self.steps > 10_000_000:
            raise bad("steps", "at most 10,000,000")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 8:
            raise bad("max_length", "an integer of at least 8")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "a non-negative integer")
        if not isinstance(self.save_every, int) or self.save_every < 0:
            raise bad("save_every", "a non-negative integer (0 = no periodic checkpoints)")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and 0.0 < self.lr <= 1.0):
            raise bad("lr", "a number in (0, 1]")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise bad("warmup_ratio", "in [0, 1)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0.0):
            raise bad("weight_decay", "a non-negative number")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0.0):
            raise bad("max_grad_norm", "a positive number")
        for key in ("mlm_probability", "noise_density"):
            if not 0.0 < getattr(self, key) < 1.0:
                raise bad(key, "in (0, 1)")
        if not self.mean_span_length >= 1.0:
            raise bad("mean_span_length", "at least 1")


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
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """Mean training loss of the last (up to) 10 optimizer steps."""
        tail = [x for x in self.losses[-10:] if math.isfinite(x)]
        return float(sum(tail) / len(tail)) if tail else float("nan")


# --------------------------------------------------------------------------- devices


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else Apple MPS, else CPU; otherwise check the named device."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but CUDA is not available on this machine")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {device!r} asked for, but MPS is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | None, device: torch.device) -> str:
    """The compute precision: ``bfloat16`` autocast on a GPU that supports it under ``"auto"``."""
    name = dtype or "auto"
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    if name == "auto":
        return "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    return name


@contextlib.contextmanager
def local_rng(device: torch.device) -> Iterator[None]:
    """Run a block with torch's global RNGs forked: seeding inside it leaves the caller's state alone."""
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


@contextlib.contextmanager
def hf_progress_bars(enabled: bool) -> Iterator[None]:
    """Hide transformers' own progress bars (loading, writing shards) inside a block when ``enabled``
    is false, and put the switch back as it was afterwards."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if was and not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not enabled:
            hf_logging.enable_progress_bar()


def follows_progress(fn: F) -> F:
    """Decorate a function with a ``progress`` argument so that transformers' bars follow it too."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with hf_progress_bars(bool(bound.arguments["progress"])):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (``(seed, step, micro-batch)``)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


# --------------------------------------------------------------------------- examples


class TokenChunks:
    """Every document tokenized once and cut into windows of at most ``width`` tokens.

    Stored as one flat int32 array plus offsets, so a large corpus costs 4 bytes a token.
    """

    def __init__(self, texts: Sequence[str], tokenizer: Any, width: int, batch: int = 1000) -> None:
        pieces: list[np.ndarray] = []
        starts: list[int] = []
        ends: list[int] = []
        total = 0
        for i in range(0, len(texts), batch):
            # no truncation here (windows are cut below), so no warning about long inputs either
            chunk = list(texts[i : i + batch])
            encoded = tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]
            for ids in encoded:
                arr = np.asarray(ids, dtype=np.int32)
                pieces.append(arr)
                for lo in range(0, len(arr), width):
                    starts.append(total + lo)
                    ends.append(total + min(lo + width, len(arr)))
                total += len(arr)
        self.tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.ends = np.asarray(ends, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> list[int]:
        return self.tokens[self.starts[index] : self.ends[index]].tolist()


class ExampleOrder:
    """Which example comes ``n``-th: a fresh seeded permutation of all examples per epoch."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self._epoch, self._perm = -1, np.zeros(0, dtype=np.int64)

    def __getitem__(self, n: int) -> int:
        epoch, pos = divmod(n, self.size)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return int(self._perm[pos])


# --------------------------------------------------------------------------- checkpoints


def work_dir(out: Path) -> Path:
    """Where the periodic checkpoints of a run writing to ``out`` live until it completes."""
    return out.with_name(out.name + ".partial")


def latest_checkpoint(work: Path) -> Path | None:
    """The newest complete checkpoint in ``work`` (written atomically, so any listed is complete)."""
    found = [p for p in work.glob("checkpoint-*") if p.name[11:].isdigit() and (p / STATE_FILE).is_file()]
    return max(found, key=lambda p: int(p.name[11:])) if found else None


def _versions() -> dict[str, str]:
    import transformers

    from .. import __version__

    return {"taskrank": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def _save_checkpoint(
    work: Path, step: int, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]
) -> Path:
    path = work / f"checkpoint-{step:07d}"
    with atomic_dir(path, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        write_json(tmp / STATE_FILE, state)
    for old in sorted(work.glob("checkpoint-*")):
        if old != path:
            shutil.rmtree(old, ignore_errors=True)
    log.info("saved checkpoint %s", path)
    return path


def _load_torch(file: Path, device: torch.device) -> Any:
    try:
        return torch.load(file, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from exc


# --------------------------------------------------------------------------- the card


def _card(meta: dict[str, Any]) -> str:
    s, c = meta["settings"], meta["corpus"]
    rows = "\n".join(f"| {k} | {v} |" for k, v in s.items())
    files = "\n".join(f"  - `{f}`" for f in c["files"][:20]) + (
        f"\n  - ... and {len(c['files']) - 20} more" if len(c["files"]) > 20 else ""
    )
    return f"""---
base_model: {meta["pretrained"]}
library_name: transformers
tags:
- taskrank
- domain-adaptation
- {meta["objective"]}
---

# Domain checkpoint made by `taskrank adapt`

Continued pre-training of `{meta["pretrained"]}` on an unlabeled target corpus, for task arithmetic
(θ_new = θ_ranker + α · (θ_domain − θ_pretrained)): use this folder as `--domain` of `taskrank merge`.

## Corpus
- documents: {c["doc_count"]} ({c["skipped"]} skipped for having no text)
- training windows: {meta["examples"]}
- sha256: `{c["sha256"]}`
- files:
{files}

## Training
- objective: **{meta["objective"]}**
- steps: {meta["steps"]}, final loss (mean of the last 10 steps): {meta["final_loss"]:.4f}
- device: {meta["device"]}, compute dtype: {meta["compute_dtype"]}, saved dtype: {meta["saved_dtype"]}

| hyperparameter | value |
|---|---|
{rows}

Versions: {", ".join(f"{k} {v}" for k, v in meta["versions"].items())}.
The full record is in `adapt.json`.
"""


# --------------------------------------------------------------------------- the run


def _float_dtype_of(config: Any) -> torch.dtype:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


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
    device: str = "auto",
    dtype: str | None = "auto",
    skip_empty: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> AdaptResult:
    """Continue pre-training ``pretrained`` on ``corpus``; save the domain checkpoint to ``out``.

    The objective follows the checkpoint's config (:func:`detect_objective`): masked-LM for
    encoders, T5 span corruption for T5/mT5, next-token prediction for causal LMs. Documents
    are tokenized once and cut into windows of ``max_length`` tokens (special tokens
    included); each optimizer step sees ``batch_size × grad_accum`` windows.

    Every ``save_every`` steps a checkpoint (weights, optimizer, scheduler, step) is written
    atomically to ``<out>.partial/``; ``resume=True`` continues from the newest one and ends
    with the same weights as an uninterrupted run. ``out`` appears only when training is done,
    with the tokenizer, a README.md card (corpus path, document count, sha256, objective, steps,
    hyperparameters, final loss) and ``adapt.json``; the partial folder is then removed.

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
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    settings = AdaptSettings(
        steps=steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
        warmup_ratio=warmup_ratio, weight_decay=weight_decay, max_grad_norm=max_grad_norm, seed=seed,
        save_every=save_every, mlm_probability=mlm_probability, noise_density=noise_density,
        mean_span_length=mean_span_length,
    )  # fmt: skip
    out = Path(out)
    check_output_dir(out, overwrite)
    work = work_dir(out)
    start_from: Path | None = None
    if resume:
        start_from = latest_checkpoint(work)
        if start_from is None:
            raise ConfigError(f"nothing to resume: no complete checkpoint in {work}")
    elif work.exists():
        if not overwrite:
            raise ConfigError(
                f"{work} holds checkpoints of an interrupted run; pass --resume (resume=True) to continue it "
                "or --overwrite (overwrite=True) to start afresh"
            )
        shutil.rmtree(work)

    torch_device = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, torch_device)
    from ..checkpoints import resolve_checkpoint

    source = resolve_checkpoint(pretrained)
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the config and tokenizer of {pretrained}: {exc}") from exc
    objective = detect_objective(config)
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and settings.max_length > limit:
        raise ConfigError(f"max_length {settings.max_length} exceeds the {limit} positions of {pretrained}")
    batcher = make_batcher(
        objective, tokenizer, mlm_probability=mlm_probability, noise_density=noise_density,
        mean_span_length=mean_span_length,
    )  # fmt: skip

    texts = corpus if isinstance(corpus, CorpusTexts) else read_corpus(corpus, skip_empty=skip_empty)
    # Room for the special tokens the objective adds (CLS/SEP, BOS, or T5's EOS).
    reserve = 1 if objective == "span-corruption" else sum(map(len, special_affixes(tokenizer)))
    chunks = TokenChunks(texts.texts, tokenizer, settings.max_length - reserve)
    if len(chunks) == 0:
        raise ConfigError(f"the corpus {texts.sources[0]} gave no tokens with the tokenizer of {pretrained}")
    order = ExampleOrder(len(chunks), settings.seed)

    run_record: dict[str, Any] = {
        "pretrained": str(pretrained),
        "objective": objective,
        "corpus_sha256": texts.sha256,
        **{k: v for k, v in asdict(settings).items() if k != "save_every"},
        "dtype": compute_dtype,
    }
    model_cls = getattr(transformers, OBJECTIVES[objective])
    load_from = start_from if start_from is not None else source
    losses: list[float] = []
    first_step = 0
    if start_from is not None:
        state = _read_state(start_from)
        for key in _RESUME_KEYS:
            if state["run"].get(key) != run_record.get(key):
                raise ConfigError(
                    f"cannot resume from {start_from}: {key} was {state['run'].get(key)!r}, "
                    f"now {run_record.get(key)!r}"
                )
        first_step, losses = int(state["step"]), [float(x) for x in state["losses"]]
        log.info("resuming from %s (step %d of %d)", start_from, first_step, settings.steps)

    with local_rng(torch_device):
        torch.manual_seed(derived_seed(settings.seed, 0xADA))  # a new head (MLM on a bare encoder) is seeded
        # a truncated or corrupt weight file, or a refused pickle, is a CheckpointError naming it
        model = load_model(model_cls, load_from, torch.float32, f"{load_from} as {OBJECTIVES[objective]}")
        model.to(torch_device)
        model.train()
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
            optimizer.load_state_dict(_load_torch(start_from / "optimizer.pt", torch_device))
            scheduler.load_state_dict(_load_torch(start_from / "scheduler.pt", torch.device("cpu")))

        _train(
            model, batcher, chunks, order, optimizer, scheduler, settings, torch_device, compute_dtype,
            first_step, losses, work, tokenizer, run_record, progress, on_step,
        )  # fmt: skip

    result = AdaptResult(
        path=out,
        objective=objective,
        steps=settings.steps,
        losses=losses,
        corpus_docs=texts.doc_count,
        corpus_sha256=texts.sha256,
        examples=len(chunks),
        resumed_from=first_step if start_from is not None else None,
        settings=asdict(settings),
    )
    saved_dtype = _float_dtype_of(config)
    meta = {
        "pretrained": str(pretrained),
        "objective": objective,
        "steps": settings.steps,
        "final_loss": result.final_loss,
        "losses": losses,
        "examples": len(chunks),
        "resumed_from": result.resumed_from,
        "device": str(torch_device),
        "compute_dtype": compute_dtype,
        "saved_dtype": str(saved_dtype).removeprefix("torch."),
        "settings": asdict(settings),
        "corpus": {
            "files": texts.sources,
            "doc_count": texts.doc_count,
            "skipped": texts.skipped,
            "sha256": texts.sha256,
        },
        "versions": _versions(),
    }
    model.eval()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.to(dtype=saved_dtype).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "adapt.json", meta)
        write_text(tmp / "README.md", _card(meta))
    shutil.rmtree(work, ignore_errors=True)
    log.info("adapted checkpoint written to %s (final loss %.4f)", out, result.final_loss)
    return result


def _read_state(checkpoint: Path) -> dict[str, Any]:
    import json

    file = checkpoint / STATE_FILE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from exc
    for key in ("step", "losses", "run"):
        if key not in state:
            raise CheckpointError(f"{file} lacks the key {key!r}")
    return state


def _train(
    model: Any,
    batcher: Any,
    chunks: TokenChunks,
    order: ExampleOrder,
    optimizer: Any,
    scheduler: Any,
    settings: AdaptSettings,
    device: torch.device,
    compute_dtype: str,
    first_step: int,
    losses: list[float],
    work: Path,
    tokenizer: Any,
    run_record: dict[str, Any],
    progress: bool,
    on_step: Callable[[int, float], None] | None,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if compute_dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    per_step = settings.batch_size * settings.grad_accum
    columns = (
        TextColumn("adapt"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress, transient=False) as bar:
        last = f"{losses[-1]:.4f}" if losses else "-"
        task = bar.add_task("adapt", total=settings.steps, completed=first_step, loss=last)
        for step in range(first_step, settings.steps):
            optimizer.zero_grad(set_to_none=True)
            micro_losses: list[float] = []
            for micro in range(settings.grad_accum):
                seed = derived_seed(settings.seed, step, micro)
                base = step * per_step + micro * settings.batch_size
                examples = [chunks[order[base + j]] for j in range(settings.batch_size)]
                batch = {k: v.to(device) for k, v in batcher(examples, seed).items()}
                if not bool((batch["labels"] != -100).any()):
                    continue  # nothing masked in this micro-batch: no signal, no NaN
                torch.manual_seed(seed)  # dropout of this micro-batch
                with autocast:
                    loss = model(**batch).loss
                if not torch.isfinite(loss):
                    raise ModelError(
                        f"the training loss became {loss.item()} at step {step + 1}; lower the learning rate "
                        f"(now {settings.lr}) or use float32"
                    )
                (loss / settings.grad_accum).backward()
                micro_losses.append(float(loss.detach()))
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step_loss = float(np.mean(micro_losses)) if micro_losses else float("nan")
            losses.append(step_loss)
            bar.update(task, advance=1, loss=f"{step_loss:.4f}")
            done = step + 1
            if settings.save_every and done % settings.save_every == 0 and done < settings.steps:
                state = {"step": done, "losses": losses, "examples_seen": done * per_step, "run": run_record}
                _save_checkpoint(work, done, model, tokenizer, optimizer, scheduler, state)
            if on_step is not None:
                on_step(done, step_loss)
