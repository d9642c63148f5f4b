"""In-place α sweeps on a loaded model, without re-reading checkpoints."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..checkpoints import SourceLike, TensorSource, as_source
from ..errors import MergeError
from ..progress import track
from ..vocabulary import VocabPolicy
from .alignment import resolve_keys
from .merging import all_finite
from .selection import LayerSelection, format_ranges, layer_of, selection_aliases
from .vector import TaskVector, check_coef, check_pair


class AlphaSweep:
    """Set θ = θ_ranker + α·τ on a loaded model in place, for any α, without re-reading checkpoints.

    Keeps a CPU copy of the ranker's original tensors that the vector touches and the vector
    itself (float32, on ``vector_device``, CPU by default while the model may sit on a GPU).
    ``set_alpha(0)`` restores the ranker bit for bit.

    A model held in a lower precision than its checkpoint (scored in bfloat16) is given the
    checkpoint as ``originals``: its tensors, as stored (float32), are then the originals, so
    each α is computed in float32 from them and cast once, exactly as merging in float32 and
    loading the merge in bfloat16 would (not from the ranker's bfloat16 rounding).

    Example::

        sweep = AlphaSweep(model, TaskVector.from_checkpoints(domain_dir, pretrained_dir))
        for a in (0.1, 0.3, 0.5):
            sweep.set_alpha(a)
            ...  # score with `model`
        sweep.set_alpha(0.0)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        vector: TaskVector,
        *,
        vector_device: str | torch.device = "cpu",
        vocab_policy: VocabPolicy | None = None,
        progress: bool = False,
        originals: SourceLike | None = None,
    ) -> None:
        self.model = model
        params = dict(model.named_parameters())  # tied parameters appear once
        source = _ModelSource(params, getattr(model, "config", None))
        if vocab_policy is not None:
            vector = vector.with_vocab_policy(vocab_policy)
        self.vector = vector
        to_vec = resolve_keys(source, vector.reference)
        vec_keys = set(vector.keys())
        self._names = [n for n in params if to_vec.get(n) in vec_keys]
        if not self._names:
            raise MergeError("the task vector shares no tensor with the model")
        self._aliases = selection_aliases(list(params), source.config, True)
        self._params = params
        self._orig: dict[str, torch.Tensor] = {}
        self._tau: dict[str, torch.Tensor] = {}
        lower = [n for n in self._names if params[n].dtype in _BELOW_FLOAT32]
        stored = as_source(originals) if originals is not None and lower else None
        to_stored = resolve_keys(source, stored) if stored is not None else {}
        for name in track(self._names, "loading task vector", progress, transient=True):
            p = params[name]
            vkey = to_vec[name]
            v_shape = vector.shape(vkey)
            check_pair(name, source.name, tuple(p.shape), vector.reference.name, v_shape, vector.vocab_policy)
            if not p.dtype.is_floating_point:
                continue
            held = p.detach().to("cpu", copy=True)
            self._orig[name] = held if stored is None else _stored_original(name, held, stored, to_stored)
            self._tau[name] = vector.get(vkey).to(vector_device)
        self.alpha = 0.0
        self.selection = LayerSelection()

    @property
    def layers(self) -> list[int]:
        """Layer indices the vector can touch."""
        return sorted({layer for n in self._names if (layer := layer_of(n)) is not None})

    @torch.no_grad()
    def set_alpha(
        self,
        alpha: float,
        layers: str | Iterable[int] | None = None,
        mode: str = "only",
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
    ) -> None:
        """Update the model to θ_ranker + α·τ on the selected tensors (the rest: θ_ranker)."""
        a = check_coef(alpha)
        selection = LayerSelection.parse(layers, mode, include, exclude)
        if selection.layers is not None:
            absent = sorted(selection.layers - set(self.layers))
            if absent:
                raise MergeError(
                    f"layer(s) {format_ranges(absent)} not in the model (layers {format_ranges(self.layers)})"
                )
        chosen = [n for n in self._orig if selection.selects(n, self._aliases.get(n, ()))]
        if not chosen:
            raise MergeError(f"the selection ({selection.describe()}) matches no tensor of the model")
        chosen_set = set(chosen)
        for name, orig in self._orig.items():
            p = self._params[name]
            if a == 0.0 or name not in chosen_set:
                p.copy_(orig.to(p.device))
                continue
            scaled = self._tau[name].to(p.device, dtype=torch.float32) * a  # as merge(): (α·τ), then add
            new = orig.to(device=p.device, dtype=torch.float32, copy=True)
            if scaled.shape == new.shape:
                new.add_(scaled)
            else:
                rows = min(scaled.shape[0], new.shape[0])
                new[:rows].add_(scaled[:rows])
            if not all_finite(new):
                self._restore()
                raise MergeError(f"alpha={a:g} makes tensor {name!r} non-finite; the model was restored")
            p.copy_(new.to(p.dtype))
        self.alpha, self.selection = a, selection

    @torch.no_grad()
    def _restore(self) -> None:
        for name, orig in self._orig.items():
            p = self._params[name]
            p.copy_(orig.to(p.device))
        self.alpha, self.selection = 0.0, LayerSelection()

    def restore(self) -> None:
        """Return the model to the ranker's original weights (bit for bit)."""
        self._restore()


#: Model dtypes whose originals are read from the checkpoint when the sweep is given one.
_BELOW_FLOAT32 = (torch.bfloat16, torch.float16)


def _stored_original(
    name: str, held: torch.Tensor, stored: TensorSource, to_stored: Mapping[str, str]
) -> torch.Tensor:
    """The checkpoint's tensor for model tensor ``name`` when the model holds it in a lower
    precision; checked to be what the model holds once cast (else the model is not that ranker)."""
    if held.dtype not in _BELOW_FLOAT32:
        return held
    key = to_stored.get(name)
    if key is None:
        raise MergeError(f"tensor {name!r} of the model is not in the ranker checkpoint {stored.name}")
    tensor = stored.get(key)
    if tuple(tensor.shape) != tuple(held.shape) or not torch.equal(tensor.to(held.dtype), held):
        raise MergeError(
            f"tensor {name!r} of the model is not {key!r} of {stored.name} in {held.dtype}: "
            "the originals given are not the model's checkpoint"
        )
    return tensor


class _ModelSource:
    """Names and shapes of a model's parameters, for key alignment."""

    def __init__(self, params: Mapping[str, torch.Tensor], config: object) -> None:
        self._params = params
        self.name = "model"
        to_dict = getattr(config, "to_dict", None)  # a transformers PretrainedConfig, or None
        self.config: dict[str, Any] = to_dict() if callable(to_dict) else {}

    def keys(self) -> list[str]:
        return list(self._params)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._params[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        return self._params[key].dtype
