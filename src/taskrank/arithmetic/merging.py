"""Streaming merges: θ_out = θ_base + Σ αᵢ·τᵢ, to disk or memory.

A merge to disk goes a tensor at a time, and through a large tensor a piece of :data:`SPAN`
elements at a time, so its memory is a few pieces whatever the model's size; a merge into
memory goes a tensor at a time."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import vocabulary
from ..atomic import atomic_dir, check_output_dir
from ..checkpoints.checkpoint import Checkpoint, TensorSource, as_source, copy_non_weight_files
from ..checkpoints.hashing import read_ahead
from ..checkpoints.safetensors_io import BufferPool, ShardedSafetensorsWriter, TensorSpec
from ..errors import ConfigError, MergeError
from ..progress import track
from ..vocabulary import VocabPolicy, canonical_dtype
from .alignment import resolve_keys
from .merge_report import MergeReport, MergeResult
from .selection import LayerSelection, format_ranges, layer_of, selection_aliases
from .vector import TaskVector, Weights, check_coef, check_pair

log = logging.getLogger(__name__)

#: The output dtypes of a merge (:data:`taskrank.vocabulary.DTYPES`), by name.
DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in vocabulary.DTYPES}


@dataclass
class _PlanItem:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    out_dtype: torch.dtype
    vector_key: str | None
    reason: str | None  # why it stays unchanged, when it does
    vector_size: int = 0  # elements of the vector's tensor (fewer rows under the common policy)


def _plan(
    base: TensorSource,
    vector: TaskVector,
    selection: LayerSelection,
    out_dtype: torch.dtype | None,
) -> tuple[list[_PlanItem], list[str]]:
    base_keys = base.keys()
    vec_keys = vector.keys()
    to_vec = resolve_keys(base, vector.reference)
    vec_set = set(vec_keys)
    to_vec = {b: v for b, v in to_vec.items() if v in vec_set}
    aliases = selection_aliases(base_keys, base.config, bool(selection.include or selection.exclude))

    if selection.layers is not None:
        present = {layer for k in to_vec if (layer := layer_of(k)) is not None}
        absent = sorted(selection.layers - present)
        if absent:
            depth = f"layers 0-{max(present)}" if present else "no numbered layers"
            raise MergeError(f"layer(s) {format_ranges(absent)} not found in {base.name}, which has {depth}")

    items: list[_PlanItem] = []
    selected = 0
    for name in base.storage_order():
        dtype = base.dtype(name)
        target = out_dtype if (out_dtype is not None and dtype.is_floating_point) else dtype
        vkey = to_vec.get(name)
        reason = None
        if vkey is None:
            reason = "no counterpart in the task vector"
        elif not selection.selects(name, aliases[name]):
            reason = f"not selected ({selection.describe()})"
        else:
            selected += 1
            b_shape, v_shape = base.shape(name), vector.shape(vkey)
            check_pair(name, base.name, b_shape, vector.reference.name, v_shape, vector.vocab_policy)
        vkey = vkey if reason is None else None
        size = math.prod(vector.shape(vkey)) if vkey is not None else 0
        items.append(_PlanItem(name, base.shape(name), dtype, target, vkey, reason, size))
    if selected == 0:
        raise MergeError(
            f"the selection ({selection.describe()}) matches no tensor shared by the base and the task vector"
        )
    used = {v for b, v in to_vec.items()}
    vector_only = sorted(set(vec_keys) - used)
    return items, vector_only


def all_finite(t: torch.Tensor) -> bool:
    """True when no element is NaN/Inf. A finite sum proves it (NaN and Inf propagate through a
    sum); only when the sum is not finite is the exact, slower element-wise check needed."""
    if t.numel() == 0:
        return True
    if math.isfinite(t.sum().item()):
        return True
    return bool(torch.isfinite(t).all())


#: elements per piece of a large tensor (4 MB in float32): the inputs, the vector and the
#: output of one piece stay in the CPU's cache, and the read buffers are a few recycled pieces
#: instead of fresh memory the size of the largest tensors
SPAN = 1 << 20


def _spans(size: int, whole: bool = False) -> list[tuple[int, int]]:
    """The pieces a tensor of ``size`` elements is merged in: element ranges of the flattened
    tensor, in order; one range when ``whole``."""
    if whole or size <= SPAN:
        return [(0, size)]
    return [(start, min(start + SPAN, size)) for start in range(0, size, SPAN)]


def _merge_span(
    item: _PlanItem, base: TensorSource, vector: TaskVector, start: int, stop: int
) -> tuple[torch.Tensor, str | None]:
    """Elements ``start:stop`` of the flattened output tensor of ``item`` (1-D), and why the
    tensor stays unchanged, when it does. Every float piece is checked for NaN/Inf as written
    (in the output dtype), whether merged or copied unchanged."""
    tensor = base.get_span(item.name, start, stop)
    if item.vector_key is None:
        out = tensor.to(item.out_dtype)
        if out.dtype.is_floating_point and not all_finite(out):
            raise MergeError(_non_finite(item, base, vector, start, stop))
        if out is not tensor:
            base.give_back(tensor)
        return out, item.reason
    if not (tensor.dtype.is_floating_point and vector.is_float(item.vector_key)):
        if vector.raw_equal(item.vector_key):
            return tensor, f"dtype {tensor.dtype} with a zero task vector"
        raise MergeError(
            f"tensor {item.name!r} has dtype {tensor.dtype}, which cannot be merged (its vector is non-zero)"
        )
    # under the common vocabulary policy the vector covers the leading rows only
    end = min(stop, item.vector_size)
    delta = vector.get_span(item.vector_key, start, end) if start < end else None
    fresh = base.fresh_reads or tensor.dtype != torch.float32
    out = tensor.float() if fresh else tensor.clone()  # never update the caller's tensors
    if out is not tensor:
        base.give_back(tensor)
    if delta is not None:
        out[: end - start].add_(delta)
        vector.give_back(delta)
    result = out.to(item.out_dtype)
    if not all_finite(result):
        raise MergeError(_non_finite(item, base, vector, start, stop))
    if result is not out:
        base.give_back(out)
    return result, None


def _non_finite(item: _PlanItem, base: TensorSource, vector: TaskVector, start: int, stop: int) -> str:
    """The error for a piece of ``item`` that came out with NaN/Inf, naming the input it came
    from. Only called on failure, so reading the inputs of the piece again costs nothing."""

    def flaw(source: TensorSource, key: str, begin: int, end: int) -> str | None:
        """Which non-finite value (NaN, else Inf) elements begin:end of ``source[key]`` hold."""
        piece = source.get_span(key, begin, end)
        if not piece.dtype.is_floating_point or bool(piece.isfinite().all()):
            return None
        return "NaN" if bool(piece.isnan().any()) else "Inf"

    dtype = str(item.out_dtype).replace("torch.", "")
    bad = flaw(base, item.name, start, stop)
    if item.vector_key is None:  # copied unchanged: only the ranker or the dtype can be at fault
        why = f"the ranker {base.name} holds {bad}" if bad else f"a value overflows {dtype}"
        return f"tensor {item.name!r} would be copied into the merge with NaN/Inf ({why}; {item.reason})"
    end = min(stop, item.vector_size)
    if bad is not None:
        why = f"the ranker {base.name} holds {bad}"
    else:
        terms = vector.locate(item.vector_key)
        inputs = [(t.finetuned, t.finetuned_key) for t in terms]
        inputs += [(t.pretrained, t.pretrained_key) for t in terms]
        why = f"overflow of θ_ranker + α·τ, or of {dtype}"
        if start < end:  # the vector covers this piece
            if not all_finite(vector.get_span(item.vector_key, start, end)):
                why = "overflow of α·τ"
            for source, key in inputs:
                if (bad := flaw(source, key, start, end)) is not None:
                    why = f"the domain/pretrained inputs hold {bad}, in {source.name}"
                    break
    return f"merge produced NaN/Inf in tensor {item.name!r} ({why}); check alpha and the inputs"


# --------------------------------------------------------------------------- merge


def merge(
    ranker: Weights,
    domain: Weights | None = None,
    pretrained: Weights | None = None,
    alpha: float = 1.0,
    *,
    vector: TaskVector | None = None,
    layers: str | Iterable[int] | None = None,
    mode: str = "only",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    vocab_policy: VocabPolicy = "strict",
    dtype: str | torch.dtype | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    max_shard_size: str | int = "2GB",
    progress: bool = False,
) -> MergeResult:
    """θ_out = θ_ranker + α·(θ_domain − θ_pretrained), streamed tensor by tensor (to disk: large
    tensors in pieces of :data:`SPAN` elements, so memory stays at a few pieces).

    Args:
        ranker: the base checkpoint (directory, hub id or state dict).
        domain, pretrained: the pair whose difference is the task vector (or pass ``vector``).
        alpha: scale of the vector; finite, may be negative.
        vector: a ready :class:`TaskVector` (e.g. a sum of several scaled vectors); ``alpha``
            then multiplies it.
        layers, mode, include, exclude: which tensors receive the vector (:class:`LayerSelection`).
        vocab_policy: ``"strict"`` (vocabulary sizes must agree) or ``"common"`` (common rows only).
        dtype: output dtype; default the ranker's dtype, tensor by tensor.
        out: output directory, written atomically; ``None`` returns the weights in memory.
        overwrite: replace an existing ``out``.
        max_shard_size: largest safetensors shard, e.g. ``"2GB"``.
        progress: show a progress bar.

    Returns:
        :class:`MergeResult` with the report, and ``path`` or ``state_dict``.

    Example::

        merge("monot5", "scifive", "t5-base", alpha=0.7, out="monot5-scifive")
    """
    a = check_coef(alpha)
    out_dtype = _resolve_dtype(dtype)
    if out is not None:
        check_output_dir(out, overwrite)  # refuse early, before any reading
    base = as_source(ranker)
    given_pair = domain is not None and pretrained is not None
    vector = _vector_of(domain, pretrained, vector, vocab_policy)
    selection = LayerSelection.parse(layers, mode, include, exclude)
    job = StreamingMerge(
        base, vector, a, selection, out_dtype, in_pieces=out is not None, named_pair=given_pair
    )
    if out is None:
        return job.to_memory(progress)
    return job.to_disk(Path(out), overwrite, max_shard_size, progress)


def _vector_of(
    domain: Weights | None, pretrained: Weights | None, vector: TaskVector | None, vocab_policy: VocabPolicy
) -> TaskVector:
    """The task vector of a merge: ``vector`` (under ``vocab_policy``), or θ_domain − θ_pretrained."""
    if vector is None:
        if domain is None or pretrained is None:
            raise MergeError("merge needs domain and pretrained checkpoints, or a task vector")
        return TaskVector(domain, pretrained, vocab_policy=vocab_policy)
    return vector.with_vocab_policy("common") if vocab_policy == "common" else vector


#: one piece in flight: its tensor, its first element, and the worker's (output, reason unchanged)
_Piece = tuple[_PlanItem, int, Future[tuple[torch.Tensor, str | None]]]


class StreamingMerge:
    """One merge of ``base + alpha·vector``, planned: what becomes of every tensor of the base,
    the pieces each is computed in, and the report. :meth:`to_memory` and :meth:`to_disk` run it.

    Args:
        base, vector, alpha, selection: the merge, as :func:`merge` takes it.
        out_dtype: the output dtype of float tensors; ``None`` keeps each tensor's own.
        in_pieces: take large tensors a piece of :data:`SPAN` elements at a time, where every
            input reads pieces (a merge to disk; in memory the output is whole tensors anyway).
        named_pair: the vector is the paper's pair, named domain and pretrained on the card.
    """

    def __init__(
        self,
        base: TensorSource,
        vector: TaskVector,
        alpha: float,
        selection: LayerSelection,
        out_dtype: torch.dtype | None,
        *,
        in_pieces: bool,
        named_pair: bool,
    ) -> None:
        self.base = base
        self.out_dtype = out_dtype
        self.scaled = vector * alpha
        self.items, vector_only = _plan(base, self.scaled, selection, out_dtype)
        named = named_pair and len(vector.terms) == 1  # the card says "domain" and "pretrained"
        self.roles = _roles(base, vector, named)
        inputs = {id(s): s for s in (base, *[x for _, f, p in vector.inputs() for x in (f, p)])}
        self.sources = list(inputs.values())
        whole = not in_pieces or not all(src.reads_spans for src in self.sources)
        # (a non-float tensor is taken whole, for its zero-vector check)
        self.spans = {
            item.name: _spans(math.prod(item.shape), whole or not item.dtype.is_floating_point)
            for item in self.items
        }
        # Reads go into recycled buffers. Pieces share buffers of one size, the largest piece in
        # float32, of which a few are in use at any time (the inputs of two pieces in flight, the
        # piece being written); whole tensors are recycled by size, up to three of the largest idle.
        largest = max((4 * (stop - start) for s in self.spans.values() for start, stop in s), default=0)
        self.pool = BufferPool(3 * largest) if whole else BufferPool(16 * largest, block=largest)
        dtype = str(out_dtype or _dominant_dtype(base)).replace("torch.", "")
        self.report = MergeReport.start(
            alpha, vector, selection, dtype=dtype, vector_only=vector_only, named_pair=named
        )

    # -- running
    def to_memory(self, progress: bool = False) -> MergeResult:
        """Run the merge into a state dict."""
        state: dict[str, torch.Tensor] = {}

        def keep(item: _PlanItem, tensor: torch.Tensor) -> None:
            state[item.name] = tensor.reshape(item.shape)

        with self._reading():
            self._run(keep, progress)
            self.report.inputs.update(self._provenance())
        return MergeResult(report=self.report, state_dict=state)

    def to_disk(
        self, out: Path, overwrite: bool = False, max_shard_size: str | int = "2GB", progress: bool = False
    ) -> MergeResult:
        """Run the merge into the model folder ``out`` (written atomically): the weights in
        safetensors shards, the base's other files, the model card and ``taskrank_merge.json``."""
        with self._reading():
            with atomic_dir(out, overwrite=overwrite) as tmp:
                self._write_weights(tmp, max_shard_size, progress)
                self.report.files = sorted(p.name for p in tmp.iterdir())
                if isinstance(self.base, Checkpoint):
                    copy_non_weight_files(self.base.path, tmp)
                    _set_config_dtype(tmp / "config.json", self.out_dtype)
                self.report.inputs.update(self._provenance())
                (tmp / "README.md").write_text(self.report.to_markdown(), encoding="utf-8")
                (tmp / "taskrank_merge.json").write_text(_json(self.report.to_dict()), encoding="utf-8")
            log.info("%s", self.report.summary())
        return MergeResult(report=self.report, path=out)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """While the merge reads: the checkpoints read into the recycled buffers of :attr:`pool`,
        and are closed after. Local inputs are read ahead into the page cache, and hashed for
        the card in the background."""
        checkpoints = [src for src in self.sources if isinstance(src, Checkpoint)]
        read_ahead(
            f for src in self.roles.values() if isinstance(src, Checkpoint) and src.repo_id is None
            for f in src.weight_files
        )  # fmt: skip
        for src in checkpoints:
            src.pool = self.pool
        try:
            yield
        finally:
            log.debug("read buffers: %d of %d recycled", self.pool.reused, self.pool.taken)
            for src in checkpoints:
                src.pool = None
                src.close()

    def _write_weights(self, folder: Path, max_shard_size: str | int, progress: bool) -> None:
        specs = [TensorSpec(i.name, i.shape, i.out_dtype) for i in self.items]
        writer = ShardedSafetensorsWriter(folder, specs, max_shard_size)

        def write(item: _PlanItem, tensor: torch.Tensor) -> None:
            writer.write_span(item.name, tensor)
            self.base.give_back(tensor)  # on disk now: its buffer can take the next read

        try:
            self._run(write, progress)
            writer.close()
        finally:
            writer.abort()

    def _run(self, consume: Callable[[_PlanItem, torch.Tensor], None], progress: bool) -> None:
        """Compute every piece of the output, in plan order, and hand each to ``consume``."""
        # Two-stage pipeline: one worker reads and computes piece i+1 while this thread hands
        # piece i to ``consume`` (file I/O and torch ops release the GIL). At most two pieces
        # are in flight, so memory stays bounded by the largest pieces, not the model.
        # The worker's torch ops leave two cores to the writer and the hashing processes: with
        # every core in its OpenMP team, each op would wait on a thread the OS has parked
        # (set in the worker thread, the setting stays there; the caller's is untouched).
        threads = max(1, (os.cpu_count() or 1) - 2)
        with ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="taskrank-merge", initializer=torch.set_num_threads,
            initargs=(threads,),
        ) as worker:  # fmt: skip
            pending: _Piece | None = None
            for item in track(self.items, "merging", progress, transient=True):
                for start, stop in self.spans[item.name]:
                    future = worker.submit(_merge_span, item, self.base, self.scaled, start, stop)
                    if pending is not None:
                        self._finish(pending, consume)
                    pending = (item, start, future)
            if pending is not None:
                self._finish(pending, consume)

    def _finish(self, piece: _Piece, consume: Callable[[_PlanItem, torch.Tensor], None]) -> None:
        """Wait for ``piece``, count its tensor in the report, and hand it on."""
        item, start, future = piece
        tensor, reason = future.result()
        if start == 0:  # every piece of a tensor gives the same reason
            if reason is None:
                self.report.merged.append(item.name)
            else:
                self.report.unchanged[item.name] = reason
        consume(item, tensor)

    def _provenance(self) -> dict[str, dict[str, Any]]:
        # Taken after the streaming pass, which feeds the sha256 of local inputs from its own
        # reads: the inputs are not read a second time.
        return {role: src.provenance() for role, src in self.roles.items()}


def _roles(base: TensorSource, vector: TaskVector, named_pair: bool) -> dict[str, TensorSource]:
    """The inputs by the role the model card gives them: the ranker, and the domain and
    pretrained checkpoints of the paper's one pair (``named_pair``), else ``finetuned[i]``
    and ``pretrained[i]`` for each term of the vector."""
    roles: dict[str, TensorSource] = {"ranker": base}
    if named_pair:
        roles.update(domain=vector.terms[0].finetuned, pretrained=vector.terms[0].pretrained)
    else:
        for i, (_, ft, pre) in enumerate(vector.inputs()):
            roles.update({f"finetuned[{i}]": ft, f"pretrained[{i}]": pre})
    return roles


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A merge's output dtype: a name or alias of ``vocabulary.DTYPES`` (``bf16``), or a ``torch.dtype``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[canonical_dtype(dtype)]
    except ConfigError as exc:
        raise MergeError(str(exc)) from None


def _dominant_dtype(source: TensorSource) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for k in source.keys():
        d = source.dtype(k)
        if d.is_floating_point:
            counts[d] = counts.get(d, 0) + math.prod(source.shape(k))
    return max(counts, key=counts.__getitem__) if counts else torch.float32


def _set_config_dtype(config_path: Path, dtype: torch.dtype | None) -> None:
    if dtype is None or not config_path.exists():
        return
    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    name = str(dtype).replace("torch.", "")
    cfg["dtype"] = name
    if "torch_dtype" in cfg:
        cfg["torch_dtype"] = name
    config_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
