"""In-domain objectives for bi-encoders, trained through sentence-transformers' own losses.

* ``contrastive``: independent cropping (Izacard et al., "Unsupervised Dense Information Retrieval
  with Contrastive Learning" (Contriever), TMLR 2022): two random spans of one window are a positive
  pair, the other windows of the batch its negatives; InfoNCE over cosine similarities with a
  temperature, which is sentence-transformers' ``MultipleNegativesRankingLoss`` (scale = 1 /
  temperature). The cropping is written here; sentence-transformers has none.
* ``tsdae``: the denoising auto-encoder of Wang, Reimers & Gurevych ("TSDAE", Findings of EMNLP
  2021) as sentence-transformers ships it (``DenoisingAutoEncoderLoss``): the encoder embeds a
  copy of the window with tokens deleted, a decoder whose weights are tied to the encoder's
  restores the window from that one embedding. The deletion noise is written here, on tokens.

The bi-encoder is the folder's own ``SentenceTransformer`` (its pooling and normalisation);
modules after the transformer (pooling, dense, normalize) are frozen, so the domain vector lives
in the transformer's weights alone. The output has exactly the pretrained checkpoint's tensors
(names, shapes, dtypes) and keeps its sentence-transformers files, so it merges against the
pretrained folder and loads as a bi-encoder.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, ModelError
from ..tokenization import special_affixes
from .checkpointing import load_torch_state
from .objectives import BatchFn

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .settings import AdaptSettings

log = logging.getLogger(__name__)

#: The file of a checkpoint that holds the objective's own trained tensors (TSDAE's decoder-only ones).
OBJECTIVE_STATE = "objective_state.pt"
#: The two inputs of each objective's loss, in the order the loss takes them.
COLUMNS = {"contrastive": ("anchor", "positive"), "tsdae": ("source", "target")}


def _padded(
    name: str, sequences: Sequence[Sequence[int]], prefix: list[int], suffix: list[int], pad: int
) -> dict[str, torch.Tensor]:
    """``<name>_input_ids`` and ``<name>_attention_mask`` of the sequences, each wrapped in the
    tokenizer's special tokens and right-padded with ``pad``."""
    rows = [[*prefix, *ids, *suffix] for ids in sequences]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, : len(row)] = 1
    return {f"{name}_input_ids": input_ids, f"{name}_attention_mask": attention}


def crop(ids: Sequence[int], rng: np.random.Generator, low: float, high: float) -> list[int]:
    """A random span of ``ids`` whose length is a share drawn uniformly from ``[low, high]`` of
    it (at least one token), placed uniformly: Contriever's independent cropping.

    >>> crop(list(range(10)), np.random.default_rng(0), 0.5, 0.5)
    [4, 5, 6, 7, 8]
    """
    n = len(ids)
    length = min(n, max(1, round(float(rng.uniform(low, high)) * n)))
    start = int(rng.integers(0, n - length + 1))
    return list(ids[start : start + length])


def delete_tokens(ids: Sequence[int], rng: np.random.Generator, ratio: float) -> list[int]:
    """``ids`` with each token deleted with probability ``ratio``; one token is kept at least
    (TSDAE's deletion noise, on tokens rather than words).

    >>> delete_tokens([7, 8, 9], np.random.default_rng(0), 0.99)
    [9]
    """
    keep = rng.random(len(ids)) >= ratio
    if not keep.any():
        keep[int(rng.integers(0, len(ids)))] = True
    return [token for token, kept in zip(ids, keep, strict=True) if kept]


def retrieval_batcher(objective: str, tokenizer: PreTrainedTokenizerBase, settings: AdaptSettings) -> BatchFn:
    """A function ``(token id lists without special tokens, seed) -> the loss's two padded inputs``.

    ``contrastive``: ``anchor_*`` and ``positive_*``, two independent crops of each window;
    ``tsdae``: ``source_*`` (the window with tokens deleted) and ``target_*`` (the window whole).
    Every random choice comes from a generator seeded with ``seed``, so a batch is reproducible.
    """
    if objective not in COLUMNS:
        raise ConfigError(f"unknown retrieval objective {objective!r}; valid: {', '.join(COLUMNS)}")
    if tokenizer.pad_token_id is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ModelError(f"tokenizer {name!r} has no pad token; set one to batch documents")
    prefix, suffix = special_affixes(tokenizer)
    pad = int(tokenizer.pad_token_id)
    first, second = COLUMNS[objective]

    def batch(examples: Sequence[Sequence[int]], seed: int) -> Mapping[str, torch.Tensor]:
        rng = np.random.default_rng(seed)
        if objective == "contrastive":
            pairs = [
                (crop(ids, rng, settings.crop_min, settings.crop_max),
                 crop(ids, rng, settings.crop_min, settings.crop_max))
                for ids in examples
            ]  # fmt: skip
        else:
            pairs = [(delete_tokens(ids, rng, settings.deletion_ratio), list(ids)) for ids in examples]
        return {
            **_padded(first, [a for a, _ in pairs], prefix, suffix, pad),
            **_padded(second, [b for _, b in pairs], prefix, suffix, pad),
        }

    return batch


@dataclass
class LossOutput:
    """What the ``adapt`` loop reads of a forward pass: the loss."""

    loss: torch.Tensor


class RetrievalModel(torch.nn.Module):
    """A sentence-transformers bi-encoder and its in-domain loss, trained as one module:
    ``model(**batch).loss``. Its parameters are the transformer's, plus any the loss adds
    (TSDAE's decoder-only cross-attention and LM head); the others are frozen."""

    def __init__(self, bi_encoder: torch.nn.Module, loss: torch.nn.Module, objective: str) -> None:
        super().__init__()
        self.bi_encoder = bi_encoder
        self.objective_loss = loss
        self.columns = COLUMNS[objective]

    @property
    def encoder(self) -> PreTrainedModel:
        """The transformer of the bi-encoder (a ``transformers`` model): what the domain vector is of."""
        return cast("PreTrainedModel", self.bi_encoder.transformers_model)

    def forward(self, **batch: torch.Tensor) -> LossOutput:
        """The loss of one batch made by :func:`retrieval_batcher`."""
        features = [
            {
                key.removeprefix(f"{column}_"): value
                for key, value in batch.items()
                if key.startswith(f"{column}_")
            }
            for column in self.columns
        ]
        return LossOutput(self.objective_loss(features, None))

    def objective_state(self) -> dict[str, torch.Tensor]:
        """The trained tensors that are not the encoder's (TSDAE's decoder-only ones)."""
        shared = {id(p) for p in self.encoder.parameters()}
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad and id(p) not in shared}

    def save_pretrained(self, path: str | Path) -> None:
        """A checkpoint of a run: the encoder as a ``transformers`` model (float32, loadable by
        ``from_pretrained`` and ``taskrank merge``) and :data:`OBJECTIVE_STATE`."""
        self.encoder.save_pretrained(path)
        torch.save(self.objective_state(), Path(path) / OBJECTIVE_STATE)

    def load_checkpoint(self, checkpoint: Path) -> None:
        """Take every trained tensor from a checkpoint written by :meth:`save_pretrained`."""
        from ..checkpoints import Checkpoint

        with Checkpoint(checkpoint) as saved:
            missing = sorted(set(self.encoder.state_dict()) - set(saved.keys()))
            if missing:
                raise CheckpointError(f"checkpoint {checkpoint} lacks the encoder tensors {missing[:5]}")
            self.encoder.load_state_dict({k: saved.get(k) for k in self.encoder.state_dict()}, strict=True)
        state = load_torch_state(checkpoint / OBJECTIVE_STATE, torch.device("cpu"))
        own = self.objective_state()
        if set(state) != set(own):
            raise CheckpointError(
                f"{checkpoint / OBJECTIVE_STATE} holds {sorted(state)[:5]}, expected {sorted(own)[:5]}"
            )
        with torch.no_grad():
            for name, tensor in own.items():
                tensor.copy_(state[name])  # type: ignore[arg-type]


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' load report while TSDAE's decoder is built: its missing cross-attention
    and LM head are expected (they start from the seed) and not a corrupt checkpoint."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def load_retrieval_model(
    source: Path, objective: str, settings: AdaptSettings, start_from: Path | None
) -> RetrievalModel:
    """The folder's bi-encoder with the loss of ``objective``, in float32 on the CPU (from
    ``start_from`` when resuming). Nothing is downloaded: the bi-encoder and TSDAE's decoder are
    both built from the local folder ``source``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        DenoisingAutoEncoderLoss,
        MultipleNegativesRankingLoss,
    )

    try:
        bi_encoder = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load {source} as a sentence-transformers model: {exc}") from exc
    for module in list(bi_encoder)[1:]:
        module.requires_grad_(False)  # pooling, dense, normalize: kept as they are
    loss: torch.nn.Module
    if objective == "contrastive":
        loss = MultipleNegativesRankingLoss(bi_encoder, scale=1.0 / settings.temperature)
    else:
        config = getattr(bi_encoder.transformers_model, "config", None)
        decoder_source = Path(str(getattr(config, "_name_or_path", "")))
        if not decoder_source.is_dir():  # the loss builds its decoder from here: never a hub id
            raise ModelError(f"tsdae builds its decoder from a local folder; {source} names {decoder_source}")
        try:
            with _quiet_transformers():
                loss = DenoisingAutoEncoderLoss(bi_encoder, tie_encoder_decoder=True)
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            raise ModelError(f"cannot build the TSDAE decoder of {source}: {exc}") from exc
    model = RetrievalModel(bi_encoder, loss, objective).float()
    if start_from is not None:
        model.load_checkpoint(start_from)
    return model


def export_bi_encoder(model: RetrievalModel, source: Path, out: Path) -> None:
    """Write the adapted bi-encoder into ``out``: the pretrained folder's non-weight files
    (config, tokenizer, ``modules.json``, pooling and other module folders) and its weight
    tensors, each name with its pretrained shape and dtype, the trained value where the encoder
    has one. Tensors the encoder does not hold (a buffer such as ``position_ids``, a head) are
    copied unchanged; tensors only the encoder holds (a freshly initialised pooler) are dropped."""
    from ..checkpoints import Checkpoint, ShardedSafetensorsWriter, TensorSpec, copy_non_weight_files

    state = model.encoder.state_dict()
    prefix = f"{model.encoder.base_model_prefix}."
    with Checkpoint(source) as pretrained:
        # the pretrained name, or the name without the base model's prefix (``bert.``) when it has one
        trained = {k: state.get(k, state.get(k.removeprefix(prefix))) for k in pretrained.keys()}
        matched = [name for name, tensor in trained.items() if tensor is not None]
        if not any(tensor.is_floating_point() for tensor in trained.values() if tensor is not None):
            raise ModelError(f"none of the weights of {source} has a counterpart in the trained encoder")
        copy_non_weight_files(source, out)
        plan = [TensorSpec(k, pretrained.shape(k), pretrained.dtype(k)) for k in pretrained.storage_order()]
        writer = ShardedSafetensorsWriter(out, plan)
        for spec in plan:
            tensor = trained[spec.name]
            if tensor is None:
                tensor = pretrained.get(spec.name)
            elif tuple(tensor.shape) != spec.shape:
                raise ModelError(
                    f"the trained {spec.name} has shape {list(tensor.shape)}, {source} {list(spec.shape)}"
                )
            writer.write(spec.name, tensor.detach().to(device="cpu", dtype=spec.dtype).contiguous())
        writer.close()
    copied = sorted({s.name for s in plan} - set(matched))
    if copied:
        log.info("copied unchanged from %s (not trained): %s", source, ", ".join(copied))


__all__ = [
    "COLUMNS",
    "OBJECTIVE_STATE",
    "LossOutput",
    "RetrievalModel",
    "crop",
    "delete_tokens",
    "export_bi_encoder",
    "load_retrieval_model",
    "retrieval_batcher",
]
