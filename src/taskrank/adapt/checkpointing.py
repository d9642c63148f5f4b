"""Periodic checkpoints of an ``adapt`` run, and resuming from the newest one.

A run writing to ``out`` keeps its checkpoints in ``<out>.partial/checkpoint-NNNNNNN/``
(weights, tokenizer, optimizer, scheduler and ``trainer_state.json``), each written
atomically, so any one listed is complete; the folder goes when the run completes.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..atomic import atomic_dir, write_json
from ..errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .retrieval_objectives import RetrievalModel

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
#: Hyperparameters a resumed run must share with the run it continues.
RESUME_KEYS = (
    "pretrained", "objective", "corpus_sha256", "steps", "lr", "batch_size", "grad_accum", "max_length",
    "warmup_ratio", "weight_decay", "max_grad_norm", "seed", "mlm_probability", "noise_density",
    "mean_span_length", "dtype", "crop_min", "crop_max", "temperature", "deletion_ratio",
)  # fmt: skip


def work_dir(out: Path) -> Path:
    """Where the periodic checkpoints of a run writing to ``out`` live until it completes."""
    return out.with_name(out.name + ".partial")


def latest_checkpoint(work: Path) -> Path | None:
    """The newest complete checkpoint in ``work`` (written atomically, so any listed is complete)."""
    found = [p for p in work.glob("checkpoint-*") if p.name[11:].isdigit() and (p / STATE_FILE).is_file()]
    return max(found, key=lambda p: int(p.name[11:])) if found else None


def checkpoint_to_resume(out: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint a run into ``out`` starts from (``None``: from scratch).

    A run left behind in ``<out>.partial`` is neither silently resumed nor silently discarded:
    ``resume`` continues it, ``overwrite`` removes it, and neither is a :class:`ConfigError`.
    """
    work = work_dir(out)
    if resume:
        start_from = latest_checkpoint(work)
        if start_from is None:
            raise ConfigError(f"nothing to resume: no complete checkpoint in {work}")
        return start_from
    if work.exists():
        if not overwrite:
            raise ConfigError(
                f"{work} holds checkpoints of an interrupted run; pass --resume (resume=True) to continue it "
                "or --overwrite (overwrite=True) to start afresh"
            )
        shutil.rmtree(work)
    return None


def save_checkpoint(
    work: Path,
    step: int,
    model: PreTrainedModel | RetrievalModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: Mapping[str, object],
) -> Path:
    """Write the checkpoint of ``step`` into ``work`` atomically, then remove the older ones."""
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


def load_torch_state(file: Path, device: torch.device) -> dict[str, object]:
    """A ``state_dict`` saved with ``torch.save`` (weights only); a :class:`CheckpointError` naming
    the file when it cannot be read."""
    try:
        return torch.load(file, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from exc


@dataclass
class CheckpointState:
    """What ``trainer_state.json`` records: the steps done, their losses and the run record."""

    step: int
    losses: list[float]
    run: dict[str, object]


def read_state(checkpoint: Path) -> CheckpointState:
    """The ``trainer_state.json`` of a checkpoint; a :class:`CheckpointError` naming it when unreadable."""
    file = checkpoint / STATE_FILE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from exc
    for key in ("step", "losses", "run"):
        if key not in state:
            raise CheckpointError(f"{file} lacks the key {key!r}")
    try:
        return CheckpointState(int(state["step"]), [float(x) for x in state["losses"]], dict(state["run"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{file} is malformed: {exc}") from exc


def resume_progress(checkpoint: Path, run_record: Mapping[str, object]) -> tuple[int, list[float]]:
    """The steps done and their losses in ``checkpoint``, refused when its run differs from
    ``run_record`` in any of :data:`RESUME_KEYS`."""
    state = read_state(checkpoint)
    for key in RESUME_KEYS:
        if state.run.get(key) != run_record.get(key):
            raise ConfigError(
                f"cannot resume from {checkpoint}: {key} was {state.run.get(key)!r}, "
                f"now {run_record.get(key)!r}"
            )
    log.info("resuming from %s (step %d of %s)", checkpoint, state.step, run_record.get("steps"))
    return state.step, state.losses


__all__ = [
    "RESUME_KEYS",
    "STATE_FILE",
    "CheckpointState",
    "checkpoint_to_resume",
    "latest_checkpoint",
    "load_torch_state",
    "read_state",
    "resume_progress",
    "save_checkpoint",
    "work_dir",
]
