"""The training loop of ``adapt``: tokenized windows, their seeded order, and the optimizer steps.

Step ``s`` draws its examples from :class:`ExampleOrder` and its masking and dropout from
seeds derived from ``(seed, s, micro-batch)``, so a resumed run computes the very same steps
as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..devices import resolve_dtype
from ..errors import ConfigError, ModelError
from ..progress import progress_bar
from ..vocabulary import DTYPE_ALIASES, TRAINING_DTYPES
from .checkpointing import save_checkpoint
from .objectives import BatchFn
from .runtime import derived_seed
from .settings import AdaptSettings

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .retrieval_objectives import RetrievalModel


class TokenChunks:
    """Every document tokenized once and cut into windows of at most ``width`` tokens.

    Stored as one flat int32 array plus offsets, so a large corpus costs 4 bytes a token.
    """

    def __init__(
        self, texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, width: int, batch: int = 1000
    ) -> None:
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


def compute_dtype(name: str | None, device: torch.device) -> str:
    """The training precision's name: ``auto`` is bfloat16 (autocast) on a GPU that has it, else float32."""
    key = (name or "auto").strip().lower()
    key = DTYPE_ALIASES.get(key, key)  # bf16, fp32: the short names every dtype option accepts
    if key not in TRAINING_DTYPES:
        raise ConfigError(f"unknown dtype {key!r}; valid: {', '.join(TRAINING_DTYPES)}")
    return str(resolve_dtype(key, device, training=True)).removeprefix("torch.")


@dataclass
class AdaptRun:
    """Everything the loop of one ``adapt`` run works with."""

    #: a ``transformers`` LM, or a bi-encoder with its retrieval loss
    model: PreTrainedModel | RetrievalModel
    tokenizer: PreTrainedTokenizerBase
    batcher: BatchFn
    chunks: TokenChunks
    order: ExampleOrder
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    settings: AdaptSettings
    device: torch.device
    compute_dtype: str
    work: Path
    #: What a resumed run must agree with (saved in each checkpoint).
    record: dict[str, object]


def _step_loss(run: AdaptRun, step: int) -> float:
    """Accumulate the gradients of optimizer step ``step`` (0-based); the mean micro-batch loss."""
    s = run.settings
    per_step = s.batch_size * s.grad_accum
    autocast = (
        torch.autocast(device_type=run.device.type, dtype=torch.bfloat16)
        if run.compute_dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    micro_losses: list[float] = []
    for micro in range(s.grad_accum):
        seed = derived_seed(s.seed, step, micro)
        base = step * per_step + micro * s.batch_size
        examples = [run.chunks[run.order[base + j]] for j in range(s.batch_size)]
        batch = {k: v.to(run.device) for k, v in run.batcher(examples, seed).items()}
        labels = batch.get("labels")  # the retrieval objectives have none: their pairs are the signal
        if labels is not None and not bool((labels != -100).any()):
            continue  # nothing masked in this micro-batch: no signal, no NaN
        torch.manual_seed(seed)  # dropout of this micro-batch
        with autocast:
            loss = run.model(**batch).loss
        if not torch.isfinite(loss):
            raise ModelError(
                f"the training loss became {loss.item()} at step {step + 1}; lower the learning rate "
                f"(now {s.lr}) or use float32"
            )
        (loss / s.grad_accum).backward()
        micro_losses.append(float(loss.detach()))
    return float(np.mean(micro_losses)) if micro_losses else float("nan")


def train_steps(
    run: AdaptRun,
    first_step: int,
    losses: list[float],
    progress: bool,
    on_step: Callable[[int, float], None] | None,
) -> None:
    """Run the optimizer steps from ``first_step`` to the end, appending each step's loss to
    ``losses`` and checkpointing every ``save_every`` steps into ``run.work``."""
    s = run.settings
    last = f"{losses[-1]:.4f}" if losses else "-"
    with progress_bar(s.steps, "adapt", progress, completed=first_step, fields={"loss": last}) as bar:
        for step in range(first_step, s.steps):
            run.optimizer.zero_grad(set_to_none=True)
            step_loss = _step_loss(run, step)
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), s.max_grad_norm)
            run.optimizer.step()
            run.scheduler.step()
            losses.append(step_loss)
            bar.advance(1, loss=f"{step_loss:.4f}")
            done = step + 1
            if s.save_every and done % s.save_every == 0 and done < s.steps:
                state = {
                    "step": done,
                    "losses": losses,
                    "examples_seen": done * s.batch_size * s.grad_accum,
                    "run": run.record,
                }
                save_checkpoint(run.work, done, run.model, run.tokenizer, run.optimizer, run.scheduler, state)
            if on_step is not None:
                on_step(done, step_loss)


__all__ = ["AdaptRun", "ExampleOrder", "TokenChunks", "compute_dtype", "train_steps"]
