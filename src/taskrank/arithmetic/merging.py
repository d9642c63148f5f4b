"""Streaming merges: θ_out = θ_base + Σ αᵢ·τᵢ, to disk or memory.

A merge to disk goes a tensor at a time, and through a large tensor a piece of :data:`SPAN`
elements at a time, so its memory is a few pieces whatever the model's size; a merge into
memory goes a tensor at a time."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_dir, check_output_dir
from ..checkpoints import (
    Checkpoint,
    ShardedSafetensorsWriter,
    TensorSpec,
    as_source,
    copy_non_weight_files,
    read_ahead,
)
from ..checkpoints.safetensors_io import BufferPool
from ..errors import MergeError
from .alignment import resolve_keys
from .merge_report import MergeReport, MergeResult
from .options import DTYPE_NAMES
from .selection import LayerSelection, _ranges, _selection_aliases, layer_of
from .vector import TaskVector, VocabPolicy, _check_coef, _check_pair, _give_back, _span

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}


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
    base: Any,
    vector: TaskVector,
    selection: LayerSelection,
    out_dtype: torch.dtype | None,
) -> tuple[list[_PlanItem], list[str]]:
    base_keys = base.keys()
    vec_keys = vector.keys()
    to_vec = resolve_keys(base, vector.reference)
    vec_set = set(vec_keys)
    to_vec = {b: v for b, v in to_vec.items() if v in vec_set}
    aliases = _selection_aliases(base_keys, base.config, bool(selection.include or selection.exclude))

    if selection.layers is not None:
        present = {layer_of(k) for k in to_vec} - {None}
        absent = sorted(selection.layers - present)
        if absent:
            depth = f"layers 0-{max(present)}" if present else "no numbered layers"
            raise MergeError(f"layer(s) {_ranges(absent)} not found in {base.name}, which has {depth}")

    items: list[_PlanItem] = []
    selected = 0
    order = base.storage_order() if hasattr(base, "storage_order") else base_keys
    for name in order:
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
            _check_pair(name, base, b_shape, vector.reference, v_shape, vector.vocab_policy)
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


def _all_finite(t: torch.Tensor) -> bool:
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
    item: _PlanItem, base: Any, vector: TaskVector, start: int, stop: int
) -> tuple[torch.Tensor, str | None]:
    """Elements ``start:stop`` of the flattened output tensor of ``item`` (1-D), and why the
    tensor stays unchanged, when it does. Every float piece is checked for NaN/Inf as written
    (in the output dtype), whether merged or copied unchanged."""
    tensor = _span(base, item.name, start, stop)
    if item.vector_key is None:
        out = tensor.to(item.out_dtype)
        if out.dtype.is_floating_point and not _all_finite(out):
            raise MergeError(_non_finite(item, base, vector, start, stop))
        if out is not tensor:
            _give_back(base, tensor)
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
    fresh = getattr(base, "fresh_reads", False) or tensor.dtype != torch.float32
    out = tensor.float() if fresh else tensor.clone()  # never update the caller's tensors
    if out is not tensor:
        _give_back(base, tensor)
    if delta is not None:
        out[: end - start].add_(delta)
        vector.give_back(delta)
    result = out.to(item.out_dtype)
    if not _all_finite(result):
        raise MergeError(_non_finite(item, base, vector, start, stop))
    if result is not out:
        _give_back(base, out)
    return result, None


def _non_finite(item: _PlanItem, base: Any, vector: TaskVector, start: int, stop: int) -> str:
    """The error for a piece of ``item`` that came out with NaN/Inf, naming the input it came
    from. Only called on failure, so reading the inputs of the piece again costs nothing."""

    def flaw(source: Any, key: str, begin: int, end: int) -> str | None:
        """Which non-finite value (NaN, else Inf) elements begin:end of ``source[key]`` hold."""
        piece = _span(source, key, begin, end)
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
        terms = vector._locate(item.vector_key)
        inputs = [(ft, fk) for _, ft, fk, _, _ in terms] + [(pre, pk) for _, _, _, pre, pk in terms]
        why = f"overflow of θ_ranker + α·τ, or of {dtype}"
        if start < end:  # the vector covers this piece
            if not _all_finite(vector.get_span(item.vector_key, start, end)):
                why = "overflow of α·τ"
            for source, key in inputs:
                if (bad := flaw(source, key, start, end)) is not None:
                    why = f"the domain/pretrained inputs hold {bad}, in {source.name}"
                    break
    return f"merge produced NaN/Inf in tensor {item.name!r} ({why}); check alpha and the inputs"


# --------------------------------------------------------------------------- merge


def merge(
    ranker: Any,
    domain: Any = None,
    pretrained: Any = None,
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
    a = _check_coef(alpha)
    out_dtype = _resolve_dtype(dtype)
    if out is not None:
        check_output_dir(out, overwrite)  # refuse early, before any reading
    base = as_source(ranker)
    if vector is None:
        if domain is None or pretrained is None:
            raise MergeError("merge needs domain and pretrained checkpoints, or a task vector")
        vector = TaskVector(domain, pretrained, vocab_policy=vocab_policy)
    elif vocab_policy == "common":
        vector = TaskVector._from_terms(vector.terms, "common")
    scaled = vector * a
    selection = LayerSelection.parse(layers, mode, include, exclude)
    items, vector_only = _plan(base, scaled, selection, out_dtype)
    sources = {id(s): s for s in (base, *[x for _, f, p in vector.inputs() for x in (f, p)])}
    checkpoints = [src for src in sources.values() if isinstance(src, Checkpoint)]
    # A merge to disk takes large tensors a piece at a time, where every input can read a piece;
    # in memory the output is whole tensors anyway.
    whole = out is None or not all(hasattr(src, "get_span") for src in sources.values())
    # (a non-float tensor is taken whole, for its zero-vector check)
    spans = {
        item.name: _spans(math.prod(item.shape), whole or not item.dtype.is_floating_point) for item in items
    }
    # Reads go into recycled buffers. Pieces share buffers of one size, the largest piece in
    # float32, of which a few are in use at any time (the inputs of two pieces in flight, the
    # piece being written); whole tensors are recycled by size, up to three of the largest idle.
    largest = max((4 * (stop - start) for s in spans.values() for start, stop in s), default=0)
    pool = BufferPool(3 * largest) if whole else BufferPool(16 * largest, block=largest)

    inputs: dict[str, Any] = {}
    # Provenance (sha256 of local inputs) is taken after the streaming pass, which feeds the
    # digests from its own reads: the inputs are not read a second time.
    roles_of: dict[str, Any] = {"ranker": base}
    if domain is not None and pretrained is not None and len(vector.terms) == 1:
        roles_of.update(domain=vector.terms[0].finetuned, pretrained=vector.terms[0].pretrained)
    else:
        for i, (_, ft, pre) in enumerate(vector.inputs()):
            roles_of.update({f"finetuned[{i}]": ft, f"pretrained[{i}]": pre})

    # Local inputs are read ahead into the page cache and hashed for the card in the background.
    read_ahead(
        f for src in roles_of.values() if isinstance(src, Checkpoint) and src.repo_id is None
        for f in src.weight_files
    )  # fmt: skip

    def provenance() -> dict[str, Any]:
        # a source of the minimal protocol (no provenance()) is recorded by its name
        return {
            role: src.provenance()
            if hasattr(src, "provenance")
            else {"ref": src.name, "format": type(src).__name__}
            for role, src in roles_of.items()
        }

    roles = ("domain", "pretrained") if "domain" in roles_of else ()
    recipe = (
        f"θ_ranker + {a:g}·[{vector.describe(roles)}]" if roles else f"θ_ranker + {a:g}·[{vector.describe()}]"
    )
    if roles and len(vector.terms) == 1 and vector.terms[0].coef == 1.0:
        recipe = f"θ_ranker + {a:g}·(θ_domain − θ_pretrained)"
    report = MergeReport(
        recipe=recipe,
        alpha=[a * t.coef for t in vector.terms],
        selection={**selection.to_dict(), "description": selection.describe()},
        inputs=inputs,
        dtype=str(out_dtype or _dominant_dtype(base)).replace("torch.", ""),
        vocab_policy=scaled.vocab_policy,
        merged=[],
        unchanged={},
        vector_only=vector_only,
        unpaired=vector.unpaired(),
    )

    Piece = tuple[_PlanItem, int, Future[tuple[torch.Tensor, str | None]]]

    def finish(piece: Piece, consume: Any) -> None:
        item, start, future = piece
        tensor, reason = future.result()
        if start == 0:  # every piece of a tensor gives the same reason
            if reason is None:
                report.merged.append(item.name)
            else:
                report.unchanged[item.name] = reason
        consume(item, tensor)

    def run(consume: Any) -> None:
        # Two-stage pipeline: one worker reads and computes piece i+1 while this thread hands
        # piece i to the writer (file I/O and torch ops release the GIL). At most two pieces
        # are in flight, so memory stays bounded by the largest pieces, not the model.
        # The worker's torch ops leave two cores to the writer and the hashing processes: with
        # every core in its OpenMP team, each op would wait on a thread the OS has parked
        # (set in the worker thread, the setting stays there; the caller's is untouched).
        threads = max(1, (os.cpu_count() or 1) - 2)
        with ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="taskrank-merge", initializer=torch.set_num_threads,
            initargs=(threads,),
        ) as worker:  # fmt: skip
            pending: Piece | None = None
            for item in _progress(items, progress, "merging"):
                for start, stop in spans[item.name]:
                    future = worker.submit(_merge_span, item, base, scaled, start, stop)
                    if pending is not None:
                        finish(pending, consume)
                    pending = (item, start, future)
            if pending is not None:
                finish(pending, consume)

    for src in checkpoints:
        src.pool = pool
    try:
        if out is None:
            state: dict[str, torch.Tensor] = {}
            run(lambda item, tensor: state.__setitem__(item.name, tensor.reshape(item.shape)))
            report.inputs.update(provenance())
            return MergeResult(report=report, state_dict=state)

        base_dir = getattr(base, "path", None)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            specs = [TensorSpec(i.name, i.shape, i.out_dtype) for i in items]
            writer = ShardedSafetensorsWriter(tmp, specs, max_shard_size)

            def write(item: _PlanItem, tensor: torch.Tensor) -> None:
                writer.write_span(item.name, tensor)
                _give_back(base, tensor)  # on disk now: its buffer can take the next read

            try:
                run(write)
                writer.close()
            finally:
                writer.abort()
            report.files = sorted(p.name for p in tmp.iterdir())
            if base_dir is not None:
                copy_non_weight_files(Path(base_dir), tmp)
                _set_config_dtype(tmp / "config.json", out_dtype)
            report.inputs.update(provenance())
            (tmp / "README.md").write_text(report.to_markdown(), encoding="utf-8")
            (tmp / "taskrank_merge.json").write_text(_json(report.to_dict()), encoding="utf-8")
        log.info("%s", report.summary())
        return MergeResult(report=report, path=Path(out))
    finally:
        log.debug("read buffers: %d of %d recycled", pool.reused, pool.taken)
        for src in checkpoints:
            src.pool = None
            src.close()


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise MergeError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _dominant_dtype(source: Any) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for k in source.keys():
        d = source.dtype(k)
        if d.is_floating_point:
            counts[d] = counts.get(d, 0) + math.prod(source.shape(k))
    return max(counts, key=counts.__getitem__) if counts else torch.float32


def _set_config_dtype(config_path: Path, dtype: torch.dtype | None) -> None:
    if dtype is None or not config_path.exists():
        return
    import json

    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    name = str(dtype).replace("torch.", "")
    cfg["dtype"] = name
    if "torch_dtype" in cfg:
        cfg["torch_dtype"] = name
    config_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def _progress(items: Sequence[Any], enabled: bool, label: str) -> Iterable[Any]:
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=len(items))
        for item in items:
            yield item
            bar.advance(task)
