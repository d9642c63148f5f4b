"""The re-ranker interface shared by every scoring family.

A family subclasses :class:`Reranker` and supplies three things: which checkpoints it accepts
(:meth:`Reranker.check_family`), how it tokenizes (query, document) pairs into token sequences,
and how one padded batch becomes one score per row. What they share is done once, here or
beside it:

* the model runs on a device resolved once (:mod:`taskrank.devices`);
* token sequences are packed flat and padded per length-sorted batch
  (:mod:`taskrank.rerankers.batching`), and scores are put back in input order;
* validation (empty texts, missing ids) happens here, before any scoring starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ConfigError, DataError, ModelError
from ..progress import progress_bar
from .batching import Packed, plan_batches
from .loading import Source

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from ..data import Corpus, Queries, Run

logger = logging.getLogger(__name__)

#: How many offending ids an error message lists before it says "and N more".
_SHOW_IDS = 5


def _few(ids: Sequence[object]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_SHOW_IDS])
    more = len(ids) - _SHOW_IDS
    return shown + (f" and {more} more" if more > 0 else "")


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
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
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
    def check_family(cls, architectures: Sequence[str], config: PretrainedConfig, source: str) -> None:
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
    def family_error(cls, source: str, architectures: Sequence[str], config: PretrainedConfig) -> ModelError:
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
        with progress_bar(len(packed), description, progress) as bar:
            for rows in plan_batches(packed.lengths, self.batch_size, self.max_tokens):
                padded = packed.pad(rows, pads, left=left, multiple=self.pad_to_multiple_of)
                yield rows, {name: t.to(self.device, non_blocking=non_blocking) for name, t in padded.items()}
                bar.advance(len(rows))

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
