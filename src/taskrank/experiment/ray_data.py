"""``taskrank rerank --engine ray``: a large candidate run re-ranked through Ray Data, with the local
command's output bit for bit.

The Ray path follows the local command's batch plan (:mod:`.ray_plan` says why), in two passes
through Ray Data:

1. **token lengths**: Ray Data tasks, spread over the cluster's CPUs, tokenize every unit (a pair;
   for a bi-encoder, a distinct text) with the family's own code and settings, on a model without
   weights (PyTorch's meta device); the driver gathers one integer per unit and makes the plan with
   the local command's function;
2. **scores**: ``map_batches`` over the plan's batches on an actor pool, one re-ranker per actor,
   loaded once in ``__init__``; each batch is one forward pass, as it is locally. A bi-encoder's
   actors return the embeddings of the distinct texts; the driver takes the pairs' dot products.

**Where the texts come from.** The driver reads the dataset and the candidate run as the local
command does (the same checks and errors) and puts the candidates' texts, each distinct query and
document text once, in Ray's object store (:class:`~.ray_plan.Texts`); actors read them there
without a copy, and the rows of both passes carry only integers. The driver never builds the
(query, document text) pairs nor their tokens: it holds one length and one score per pair (for a
bi-encoder, one embedding per distinct text) and writes the run.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, TaskrankError
from ..progress import announce, progress_bar
from .distributed import (
    check_versions,
    connect,
    describe_workers,
    import_ray,
    process_versions,
    worker_count,
    worker_error,
)
from .ray_plan import Plan, Work, build_work, dot_products, score_batch

if TYPE_CHECKING:
    from ..config import ExecutionConfig
    from ..data import Corpus, Queries, Run
    from ..rerankers import Reranker

log = logging.getLogger(__name__)

#: Units (pairs, or a bi-encoder's texts) per block of the token-length pass.
LENGTH_BLOCK = 4096
#: Blocks of the scoring pass per worker, at least (while batches last): the pool balances them.
BLOCKS_PER_WORKER = 8
#: Plan batches per block of the scoring pass, at most: the bar advances a block at a time.
MAX_BATCHES_PER_BLOCK = 16


def cli_setting(name: str) -> str:
    """How ``taskrank rerank`` names an execution setting in errors: ``--gpus-per-worker``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class RerankerSpec:
    """A re-ranker as ``taskrank rerank`` loads it: :func:`~taskrank.rerankers.load_reranker`'s arguments.

    Example::

        spec = RerankerSpec("castorini/monot5-base-msmarco", "monot5", device="cpu")
        spec.load().rerank(run, corpus, queries)
    """

    model: str
    kind: str
    device: str = "auto"
    dtype: str | None = None
    batch_size: int = 32
    max_length: int | None = None
    max_tokens: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    quantize: str | None = None  # None or "none": as loaded; "int8": OpenVINO int8 on each worker

    def load(self) -> Reranker:
        """The re-ranker, weights and all, on its device."""
        from ..rerankers import load_reranker

        return load_reranker(
            self.model,
            self.kind,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            max_length=self.max_length,
            max_tokens=self.max_tokens,
            quantize=self.quantize,
            **self.options,
        )

    def tokenizer_only(self) -> Reranker:
        """The same family with the same settings and tokenizer, on a model without weights (the
        meta device): it tokenizes exactly as :meth:`load`'s re-ranker does, and reads no weights.
        Every check of the checkpoint's family, options and lengths is made here."""
        import torch
        import transformers

        from ..rerankers import load_reranker, reranker_class, scoring_settings
        from ..rerankers.loading import load_config, load_tokenizer, resolve_source

        cls = reranker_class(self.kind)
        settings = scoring_settings(self.model, self.kind, max_length=self.max_length, **self.options)
        source = resolve_source(self.model)
        # a sentence-transformers folder may keep its transformer (and tokenizer) in a sub-folder
        location = cls.prepare_options(source, dict(self.options)).get("_model_location")
        where = resolve_source(str(location)) if location is not None else source
        with torch.device("meta"):
            model = getattr(transformers, cls.auto_class).from_config(load_config(where))
        return load_reranker(
            model,
            self.kind,
            tokenizer=load_tokenizer(where.local or where.ref, source.label),
            device=None,
            batch_size=self.batch_size,
            max_length=settings.max_length,
            max_tokens=self.max_tokens,
            **settings.options,
        )


#: The tokenizing re-rankers of this process (a Ray worker runs many token-length tasks), by spec.
_TOKENIZERS: dict[str, Reranker] = {}


def token_lengths(block: dict[str, np.ndarray], spec: RerankerSpec, refs: list[Any]) -> dict[str, np.ndarray]:
    """Ray Data task of the first pass: the token length of each unit of a block. Tasks, not
    actors: they spread over every CPU of the cluster, and each process builds its tokenizer once."""
    import ray

    key = repr(spec)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = spec.tokenizer_only()
    work: Work = ray.get(refs[0])
    units = block["data"]
    return {"unit": units, "length": work.lengths(_TOKENIZERS[key], units)}


class Scorer:
    """Ray Data actor of the second pass: one re-ranker, loaded once; each batch of the plan is
    scored as one forward pass (a bi-encoder: its texts embedded), as the local command does."""

    def __init__(self, spec: RerankerSpec, refs: list[Any], threads: int, driver: Mapping[str, str]) -> None:
        import ray

        from ..threads import torch_threads

        check_versions(driver, [process_versions()])
        self.work: Work = ray.get(refs[0])
        self.plan: Plan = ray.get(refs[1])
        self.threads = threads
        with torch_threads(threads):
            self.reranker = spec.load()

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..threads import torch_threads

        units, values = [], []
        with torch_threads(self.threads):
            for batch in block["data"]:
                rows = self.plan.rows(int(batch))
                values.append(score_batch(self.reranker, self.work, rows))
                units.append(rows)
        return {"unit": np.concatenate(units), "value": np.concatenate(values)}


def _probe(device: str, dtype: str | None, quantize: str | None = None) -> dict[str, str]:
    """A worker's versions, the device ``device`` resolves to there, and the dtype ``dtype``
    stands for on it, with why (``auto`` looks at the worker's hardware, unless ``quantize``
    int8 makes it float32; a Ray task)."""
    from ..devices import resolve_device
    from ..rerankers.quantize import choose_scoring_dtype

    where = resolve_device(device)
    choice = choose_scoring_dtype(dtype, quantize or "none", where)
    return {**process_versions(), "device": str(where), "dtype": choice.name, "dtype_reason": choice.reason}


@dataclass(frozen=True)
class _Pool:
    ray: Any
    count: int
    execution: ExecutionConfig

    def compute(self, blocks: int) -> Any:
        return self.ray.data.ActorPoolStrategy(size=max(1, min(self.count, blocks)))

    def resources(self, gpus: bool) -> dict[str, float]:
        gpu = self.execution.gpus_per_worker if gpus else 0.0
        return {"num_cpus": self.execution.cpus_per_worker, **({"num_gpus": gpu} if gpu > 0 else {})}

    def stream(self, dataset: Any, take: Callable[[dict[str, np.ndarray]], None]) -> None:
        """Every output block of ``dataset``, as it comes; a worker's failure as a taskrank error."""
        try:
            for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                take(block)
        except self.ray.exceptions.RayError as exc:
            raise worker_error(exc) from exc


@contextlib.contextmanager
def _own_progress(ray: Any) -> Iterator[None]:
    """Ray Data without its own progress bars while taskrank draws one."""
    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.enable_progress_bars = before


def _lengths(pool: _Pool, spec: RerankerSpec, work: Work, refs: list[Any]) -> np.ndarray:
    blocks = np.array_split(np.arange(work.units), max(1, math.ceil(work.units / LENGTH_BLOCK)))
    dataset = pool.ray.data.from_numpy(blocks).map_batches(
        token_lengths, batch_size=None, fn_args=(spec, refs), num_cpus=1
    )
    lengths = np.zeros(work.units, dtype=np.int64)
    pool.stream(dataset, lambda block: lengths.__setitem__(block["unit"], block["length"]))
    return lengths


def _scores(
    pool: _Pool, spec: RerankerSpec, work: Work, plan: Plan, refs: list[Any], threads: int, bar: Any
) -> np.ndarray:
    per_block = max(1, min(MAX_BATCHES_PER_BLOCK, len(plan) // (pool.count * BLOCKS_PER_WORKER)))
    blocks = np.array_split(np.arange(len(plan)), max(1, math.ceil(len(plan) / per_block)))
    dataset = pool.ray.data.from_numpy(blocks).map_batches(
        Scorer,
        batch_size=None,
        fn_constructor_args=(spec, refs, threads, process_versions()),
        compute=pool.compute(len(blocks)),
        **pool.resources(gpus=True),
    )
    values: np.ndarray | None = None

    def take(block: dict[str, np.ndarray]) -> None:
        nonlocal values
        if values is None:
            values = np.zeros((work.units, *block["value"].shape[1:]), dtype=block["value"].dtype)
        values[block["unit"]] = block["value"]
        bar.advance(len(block["unit"]))

    pool.stream(dataset, take)
    if values is None:
        raise TaskrankError(f"Ray Data returned no scores for {work.units} units")
    return values


@dataclass(frozen=True)
class RayRerank:
    """What :func:`rerank_on_ray` returns: the run, the workers (``host device``) that scored
    it, how many pairs, and the dtype they scored in with why (``"float32 (the default)"``)."""

    run: Run
    workers: list[str]
    pairs: int
    dtype: str = "float32 (the default)"


def rerank_on_ray(
    candidates: Run,
    corpus: Corpus,
    queries: Queries,
    spec: RerankerSpec,
    execution: ExecutionConfig,
    *,
    top_k: int = 100,
    threads: int | None = None,
    progress: bool = True,
    label: str | None = None,
    setting: Callable[[str], str] = cli_setting,
) -> RayRerank:
    """Re-rank the ``top_k`` candidates of each query on a Ray cluster, through Ray Data; the run
    equals ``spec.load().rerank(candidates, corpus, queries, top_k)`` bit for bit when each worker
    scores on as many torch threads (``threads``, default: its CPUs) as the local command.

    ``execution`` says where (``address``: join that cluster, or start a local one) and on how
    many workers of how many CPUs and GPUs. Every id, the checkpoint's family and options, the
    versions on the workers and their resources are checked before any scoring; ``setting`` names
    the settings in errors (``--address``; :func:`~taskrank.experiment.distributed.config_setting`
    for a config's ``execution.address``).

    Example::

        spec = RerankerSpec("castorini/monot5-base-msmarco", "monot5", device="cuda")
        result = rerank_on_ray(run, corpus, queries, spec, ExecutionConfig(engine="ray", gpus_per_worker=1))
    """
    from ..rerankers import BiEncoderReranker, select_candidates

    selected, documents = select_candidates(candidates, corpus, queries, top_k)  # ids checked first
    per_text = isinstance(spec.tokenizer_only(), BiEncoderReranker)  # the checkpoint checked too
    run: Run = {qid: {} for qid in candidates}
    if not selected:
        return RayRerank(run, [], 0, "nothing was re-ranked")
    ray = import_ray(f"{setting('engine')} ray", data=True)
    started = connect(ray, execution.address, setting)
    try:
        pool = _Pool(ray, worker_count(ray, execution, setting), execution)
        workers, dtype = _check_workers(pool, spec, progress)
        if spec.dtype is not None:  # every worker scores in the dtype they all resolved ``auto`` to
            spec = replace(spec, dtype=dtype.split(" ", 1)[0])
        work = build_work(selected, documents, queries, per_text)
        values = _run_passes(pool, spec, work, threads, progress, label)
    finally:
        if started:
            ray.shutdown()
    scores = dot_products(values, work) if per_text else values
    for (qid, did), value in zip(selected, scores.tolist(), strict=True):
        run[qid][did] = value
    return RayRerank(run, workers, len(selected), dtype)


def _check_workers(pool: _Pool, spec: RerankerSpec, progress: bool) -> tuple[list[str], str]:
    """Versions, devices and dtypes on as many probes as workers, each with a worker's
    resources: other versions, or workers whose hardware resolves ``auto`` to different dtypes
    (a run scored half in bfloat16), are refused before any work; the workers are announced.
    Returns the workers and their dtype with why (``"bfloat16 (auto: the CPU has amx_bf16)"``)."""
    remote = pool.ray.remote(**pool.resources(gpus=True))(_probe)
    try:
        probes = [remote.remote(spec.device, spec.dtype, spec.quantize) for _ in range(pool.count)]
        reports = pool.ray.get(probes)
    except pool.ray.exceptions.RayError as exc:
        raise worker_error(exc) from exc
    check_versions(process_versions(), reports)
    first = reports[0]
    for other in reports[1:]:
        if other["dtype"] != first["dtype"]:
            raise ConfigError(
                f"--dtype {spec.dtype}: Ray worker on {first['host']} scores in {first['dtype']} "
                f"({first['dtype_reason']}), the one on {other['host']} in {other['dtype']} "
                f"({other['dtype_reason']}): name the dtype, or use workers of one kind"
            )
    announce(describe_workers(reports) + f"; dtype {first['dtype']} ({first['dtype_reason']})", progress)
    return [f"{r['host']} {r['device']}" for r in reports], f"{first['dtype']} ({first['dtype_reason']})"


def _run_passes(
    pool: _Pool, spec: RerankerSpec, work: Work, threads: int | None, progress: bool, label: str | None
) -> np.ndarray:
    """The two passes: token lengths, the plan, then the scores (or embeddings) of every unit."""
    threads = threads or max(1, int(pool.execution.cpus_per_worker))
    what = "texts" if work.per_text else "pairs"
    work_ref = pool.ray.put(work)
    with _own_progress(pool.ray):
        announce(f"token lengths of {work.units} {what} (the batch plan)", progress)
        lengths = _lengths(pool, spec, work, [work_ref])
        plan = Plan.of(lengths, spec.batch_size, spec.max_tokens)
        description = f"{spec.kind} on Ray" + (f" · {label}" if label else "")
        with progress_bar(work.units, description, progress) as bar:
            return _scores(pool, spec, work, plan, [work_ref, pool.ray.put(plan)], threads, bar)


__all__ = ["RayRerank", "RerankerSpec", "rerank_on_ray", "worker_error"]
