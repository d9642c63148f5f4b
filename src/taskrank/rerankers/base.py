"""The re-ranker interface shared by every scoring family, and the machinery that makes it fast.

A family subclasses :class:`Reranker` and supplies three things: which checkpoints it accepts
(:meth:`Reranker.check_family`), how it tokenizes (query, document) pairs into token sequences,
and how one padded batch becomes one score per row. Everything else lives here:

* device and dtype are resolved once (:func:`resolve_device`, :func:`resolve_dtype`);
* token sequences are packed into flat arrays (:class:`Packed`) and padded per batch with
  vectorised numpy, so the hot loop has no per-pair Python work;
* batches are formed over the length-sorted sequences (:func:`plan_batches`) so that each
  batch is padded only to its own longest member, and scores are put back in input order;
* validation (empty texts, missing ids) happens before any scoring starts.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import CheckpointError, ConfigError, DataError, ModelError

if TYPE_CHECKING:
    import torch

    from ..data import Corpus, Queries, Run

logger = logging.getLogger(__name__)

#: dtype names accepted by ``load_reranker(dtype=...)``.
DTYPES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
#: How many offending ids an error message lists before it says "and N more".
_SHOW_IDS = 5


def _few(ids: Sequence[object]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_SHOW_IDS])
    more = len(ids) - _SHOW_IDS
    return shown + (f" and {more} more" if more > 0 else "")


# --------------------------------------------------------------------------- device / dtype


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` into a ``torch.device``.

    ``"auto"`` picks CUDA when available, else CPU. Asking for a device that is not there
    is a :class:`ModelError` (raised before any model is loaded).

    Example::

        resolve_device("cpu")  # device(type='cpu')
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    name = (device or "auto").strip().lower()
    if not _DEVICE_RE.match(name):
        raise ConfigError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N, mps")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r} was asked for but CUDA is not available on this machine")
        index = int(name.split(":")[1]) if ":" in name else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise ModelError(f"device {device!r} was asked for but only {count} CUDA device(s) exist")
        return torch.device("cuda", index)
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ModelError("device 'mps' was asked for but MPS is not available on this machine")
    return torch.device(name)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """Turn ``"float32"``/``"bfloat16"``/``"float16"`` (or a ``torch.dtype``) into a ``torch.dtype``.

    ``None`` keeps the default (float32 for a checkpoint; the current dtype of a model in memory).
    float16 is refused on CPU, where it is slow or unsupported; bfloat16 is allowed everywhere.

    Example::

        resolve_dtype("bf16", torch.device("cuda"))  # torch.bfloat16
    """
    import torch

    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        name = DTYPES.get(str(dtype).strip().lower(), "")
    if name not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"unknown dtype {dtype!r}; valid: {', '.join(sorted(DTYPES))}")
    if name == "float16" and device.type == "cpu":
        raise ConfigError("dtype float16 is not supported on the CPU; use float32 or bfloat16")
    return getattr(torch, name)


# --------------------------------------------------------------------------- packing and batching


class Packed:
    """Token sequences of different lengths, stored flat (one int64 array per feature).

    ``features`` maps a feature name (``input_ids``, ``token_type_ids``…) to one list of
    token ids per sequence; all features of a sequence have the same length.
    """

    def __init__(self, features: Mapping[str, Sequence[Sequence[int]]]) -> None:
        if "input_ids" not in features:
            raise ValueError("Packed needs an 'input_ids' feature")
        ids = features["input_ids"]
        self.lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if len(ids) and self.lengths.min() == 0:
            raise ValueError("Packed cannot hold an empty token sequence")
        self.starts = np.zeros(len(ids), dtype=np.int64)
        if len(ids) > 1:
            np.cumsum(self.lengths[:-1], out=self.starts[1:])
        total = int(self.lengths.sum())
        self.flat = {
            name: np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=total)
            for name, seqs in features.items()
        }

    def __len__(self) -> int:
        return len(self.lengths)

    def pad(
        self, rows: np.ndarray, pad_values: Mapping[str, int], *, left: bool = False, multiple: int = 1
    ) -> dict[str, torch.Tensor]:
        """Pad ``rows`` to their longest member, rounded up to a ``multiple``; returns the
        features plus ``attention_mask``.

        With ``left=True`` sequences are right-aligned (padding on the left), as causal LMs
        need when only the last positions are read.
        """
        import torch

        lengths = self.lengths[rows]
        width = -(-int(lengths.max()) // multiple) * multiple
        cols = np.arange(width, dtype=np.int64)[None, :]
        pos = cols - (width - lengths)[:, None] if left else np.broadcast_to(cols, (len(rows), width))
        valid = (pos >= 0) & (pos < lengths[:, None])
        gather = np.where(valid, self.starts[rows][:, None] + pos, 0)
        out = {
            name: torch.from_numpy(np.where(valid, flat[gather], pad_values.get(name, 0)))
            for name, flat in self.flat.items()
        }
        out["attention_mask"] = torch.from_numpy(valid.astype(np.int64))
        return out


def plan_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Split sequence indices into batches of similar length, longest first.

    Sequences are sorted by length (stable, so ties keep input order); each batch holds
    ``batch_size`` of them, or, with a token budget, as many as fit ``max_tokens`` once padded
    to the batch's longest member (at least one).

    Example::

        plan_batches(np.array([5, 50, 7]), batch_size=2)  # [array([1, 2]), array([0])]
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        size = batch_size if max_tokens is None else max(1, max_tokens // int(lengths[order[start]]))
        batches.append(order[start : start + size])
        start += size
    return batches


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over ``total`` items; yields ``advance(n)``. Disabled → no output."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


# --------------------------------------------------------------------------- checkpoint loading


@dataclass(frozen=True)
class Source:
    """Where a model came from: a local directory, a hub id (at ``revision``, default main), or an
    object in memory."""

    ref: str
    local: Path | None
    revision: str | None = None

    @property
    def label(self) -> str:
        return str(self.local) if self.local is not None else self.ref


def resolve_source(ref: str | os.PathLike[str]) -> Source:
    """A checkpoint reference: an existing directory, or a hub id (``org/name``)."""
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if path.is_dir():
        return Source(text, path)
    if path.exists():
        raise CheckpointError(f"checkpoint {text} is a file; expected a model directory or a hub id")
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_path:
        raise CheckpointError(f"checkpoint directory {text} does not exist")
    return Source(text, None)


def load_config(source: Source) -> Any:
    """The ``config.json`` of a checkpoint, as a transformers config; errors name the checkpoint."""
    from transformers import AutoConfig

    try:
        if source.local is not None:
            return AutoConfig.from_pretrained(source.local)
        return AutoConfig.from_pretrained(source.ref, revision=source.revision)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot read the config of checkpoint {source.label}: {exc}") from exc


def load_tokenizer(ref: Any, source_label: str) -> Any:
    """Load a tokenizer from a path or hub id; an already-built tokenizer is returned as is."""
    if ref is not None and not isinstance(ref, (str, os.PathLike)):
        return ref
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(os.fspath(ref))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot load a tokenizer for {source_label} from {ref}: {exc}") from exc


def load_model(auto_class: Any, location: str | os.PathLike[str], dtype: Any, what: str) -> Any:
    """``auto_class.from_pretrained(location, dtype=dtype)``, where a bad weight file is a
    :class:`CheckpointError` naming the file (truncated or corrupt safetensors, a header claiming
    an impossible length, a pickle that ``weights_only`` refuses), not a library traceback.

    A local folder's safetensors headers are checked first (cheap); its pickles only once
    transformers has failed, to find the file at fault. ``what`` says what was being loaded.
    """
    from pickle import UnpicklingError

    from safetensors import SafetensorError

    from ..checkpoints.checkpoint import check_weight_files

    failures = (OSError, ValueError, KeyError, RuntimeError, EOFError, SafetensorError, UnpicklingError)
    folder = Path(location) if Path(location).is_dir() else None
    if folder is not None:
        check_weight_files(folder, pickles=False)
    try:
        return auto_class.from_pretrained(location, dtype=dtype)
    except failures as exc:
        if folder is not None:
            check_weight_files(folder)  # raises, naming the file, when one is at fault
        raise CheckpointError(f"cannot load {what}: {' '.join(str(exc).split())}") from exc


def architectures_of(config: Any) -> list[str]:
    return list(getattr(config, "architectures", None) or [])


# --------------------------------------------------------------------------- the interface


class Reranker:
    """Scores (query, document) pairs with one model; subclasses implement one scoring family.

    Build one with :func:`taskrank.rerankers.load_reranker`, not directly.

    Example::

        rr = load_reranker("castorini/monot5-base-msmarco", "monot5")
        rr.score([("what causes malaria", "Malaria is caused by Plasmodium parasites.")])
    """

    #: The registry name of the family (``load_reranker(kind=...)``).
    kind: ClassVar[str] = ""
    #: The transformers auto class that loads a checkpoint of this family.
    auto_class: ClassVar[str] = "AutoModel"
    #: Family options and their defaults (``load_reranker(..., **options)``).
    options: ClassVar[dict[str, Any]] = {}
    #: What the family expects, for error messages.
    expects: ClassVar[str] = ""
    #: What is being scored, added to the progress bar's family name (set by :meth:`rerank`).
    _bar_label: str | None = None

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: torch.device,
        batch_size: int = 32,
        max_length: int = 512,
        max_tokens: int | None = None,
        source: str = "<model in memory>",
        **options: Any,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_tokens = max_tokens
        self.source = source
        # tensor cores want sequence lengths in multiples of 8; on a CPU it would only add work
        self.pad_to_multiple_of = 8 if device.type == "cuda" else 1
        self.config = dict(self.options)
        self.config.update(options)

    # ---- family hooks -------------------------------------------------------------------

    @classmethod
    def check_family(cls, architectures: Sequence[str], config: Any, source: str) -> None:
        """Raise :class:`ModelError` when the checkpoint does not belong to this family."""
        raise NotImplementedError

    @classmethod
    def prepare_options(cls, source: Source | None, options: dict[str, Any]) -> dict[str, Any]:
        """Complete the family options from the checkpoint folder (sentence-transformers files).

        Two private keys may be added: ``_model_location`` (the folder holding the transformer
        weights) and ``_max_length`` (``(tokens, file)``: the model's own maximum input length
        and the file that gives it, used when no ``max_length`` is asked for)."""
        return options

    def _score(self, queries: Sequence[str], documents: Sequence[str], progress: bool) -> np.ndarray:
        raise NotImplementedError

    # ---- shared machinery ---------------------------------------------------------------

    @classmethod
    def family_error(cls, source: str, architectures: Sequence[str], config: Any) -> ModelError:
        found = ", ".join(architectures) or "no 'architectures' entry"
        model_type = getattr(config, "model_type", "?")
        return ModelError(
            f"checkpoint {source} is {found} (model_type {model_type!r}); "
            f"kind {cls.kind!r} needs {cls.expects}"
        )

    def pad_values(self) -> dict[str, int]:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        return {"input_ids": int(pad), "token_type_ids": int(getattr(self.tokenizer, "pad_token_type_id", 0))}

    def iter_batches(
        self, packed: Packed, *, progress: bool, description: str, left: bool = False
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """Yield ``(rows, inputs)``: length-sorted batches of ``packed``, padded and on the device.

        The caller wraps the loop in ``torch.inference_mode()``.
        """
        pads = self.pad_values()
        non_blocking = self.device.type == "cuda"
        if self._bar_label:
            description = f"{description} · {self._bar_label}"
        with progress_bar(len(packed), description, progress) as advance:
            for rows in plan_batches(packed.lengths, self.batch_size, self.max_tokens):
                padded = packed.pad(rows, pads, left=left, multiple=self.pad_to_multiple_of)
                yield rows, {name: t.to(self.device, non_blocking=non_blocking) for name, t in padded.items()}
                advance(len(rows))

    def run_batches(
        self,
        packed: Packed,
        forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        *,
        progress: bool,
        description: str,
        left: bool = False,
    ) -> np.ndarray:
        """Score ``packed`` in length-sorted batches; ``forward`` maps a padded batch on the device
        to one float per row. Results come back in the original order."""
        import torch

        outputs: list[torch.Tensor] = []
        order: list[np.ndarray] = []
        with torch.inference_mode():
            for rows, inputs in self.iter_batches(
                packed, progress=progress, description=description, left=left
            ):
                outputs.append(forward(inputs).float())
                order.append(rows)
            scores = np.empty(len(packed), dtype=np.float64)
            if order:
                # one device-to-host copy at the end: no synchronisation inside the loop
                scores[np.concatenate(order)] = torch.cat(outputs).cpu().numpy()
        return scores

    def score(self, pairs: Sequence[tuple[str, str]], *, progress: bool = False) -> np.ndarray:
        """Score (query, document) pairs; returns one float per pair, in input order.

        Higher is more relevant. Scores do not depend on ``batch_size`` or on the order of
        ``pairs`` (beyond float rounding). An empty query or document is a :class:`DataError`.

        Example::

            rr.score([("malaria cause", "Plasmodium parasites cause malaria.")])  # array([-0.03])
        """
        queries: list[str] = []
        documents: list[str] = []
        bad: list[int] = []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise DataError(f"pair {i} is not a (query, document) tuple: {pair!r}")
            query, document = pair
            if not isinstance(query, str) or not isinstance(document, str):
                raise DataError(f"pair {i} holds a non-string query or document: {pair!r}")
            if not query.strip() or not document.strip():
                bad.append(i)
            queries.append(query)
            documents.append(document)
        if bad:
            raise DataError(f"empty query or document text in pair(s) {_few(bad)}")
        if not queries:
            return np.empty(0, dtype=np.float64)
        return self._score(queries, documents, progress)

    def rerank(
        self,
        candidates: Run,
        corpus: Corpus,
        queries: Queries,
        top_k: int = 100,
        progress: bool = True,
        label: str | None = None,
    ) -> Run:
        """Re-score the ``top_k`` first-stage candidates of each query; returns a new run.

        ``candidates`` maps query id → document id → first-stage score; the ``top_k``
        best-scored documents of each query (ranked as trec_eval ranks them) are scored with
        the model on ``title + " " + text``. Every id is checked before any scoring starts
        (:func:`select_candidates`). ``label`` names what is scored on the progress bar, after
        the family (``monoT5 · TA α=0.5 · dev``), where many passes of one model follow each other.

        Example::

            run = rr.rerank(bm25_run, dataset.corpus, dataset.queries, top_k=100)
        """
        selected, texts = select_candidates(candidates, corpus, queries, top_k)
        run: dict[str, dict[str, float]] = {qid: {} for qid in candidates}
        if not selected:
            return run
        self._bar_label = label
        try:
            scores = self._score([queries[q] for q, _ in selected], [texts[d] for _, d in selected], progress)
        finally:
            self._bar_label = None
        for (qid, did), value in zip(selected, scores.tolist(), strict=True):
            run[qid][did] = value
        return run

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(source={self.source!r}, device={self.device}, batch_size={self.batch_size})"


def select_candidates(
    candidates: Run, corpus: Corpus, queries: Queries, top_k: int = 100
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The (query id, document id) pairs to re-rank and the text of each document.

    Takes the ``top_k`` documents of each query as trec_eval ranks them (score descending,
    ties by document id descending) and checks every id and text, so that a bad input fails
    before a model is loaded or run.

    Example::

        pairs, texts = select_candidates({"q1": {"d1": 2.0}}, corpus, queries, top_k=100)
    """
    from ..data import doc_text
    from ..data import top_k as cut

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k!r}")
    missing_queries = [qid for qid in candidates if qid not in queries]
    if missing_queries:
        raise DataError(
            f"{len(missing_queries)} candidate query id(s) are not in the queries: {_few(missing_queries)}"
        )
    empty_queries = [qid for qid in candidates if not str(queries[qid]).strip()]
    if empty_queries:
        raise DataError(f"empty query text for query id(s) {_few(empty_queries)}")
    selected = [(qid, did) for qid, docs in cut(candidates, top_k).items() for did in docs]
    missing_docs = sorted({did for _, did in selected if did not in corpus})
    if missing_docs:
        raise DataError(
            f"{len(missing_docs)} candidate document id(s) are not in the corpus: {_few(missing_docs)}"
        )
    texts = {did: doc_text(corpus[did]) for _, did in selected}
    empty_docs = sorted(did for did, text in texts.items() if not text)
    if empty_docs:
        raise DataError(f"empty title and text for document id(s) {_few(empty_docs)}")
    return selected, texts
