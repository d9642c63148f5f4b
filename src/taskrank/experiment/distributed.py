"""The re-ranking steps of an experiment on a Ray cluster (``execution.engine: ray``).

Each worker is a Ray actor that loads the ranker (and the task vector) once, through the same
:class:`~taskrank.experiment.models.ModelPool` the local engine uses, and moves between α values
in place. A re-ranking step (one model state on one split) is cut into shards of queries, enough
for every worker to stay busy; the shards' runs are joined on the driver, which writes the step
to the cache under the key the local engine uses. So a run on Ray and a run in this process
share their cache, and resume each other. BM25, fusion and evaluation stay on the driver.

An actor that dies (``ray.kill``, a lost node) is restarted by Ray and its shards are retried
(``max_restarts``, ``max_task_retries``): a shard's result is a pure function of its inputs, so
a retried shard gives the same run, and a step is written only once all its shards are back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..progress import announce, progress_bar

if TYPE_CHECKING:
    from ..config import ExecutionConfig, ExperimentConfig
    from .models import ModelState, Scoring
    from .preflight import Checkpoints

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
#: How many shards per worker a step is cut into. One: a bi-encoder encodes each document once per
#: shard, so more shards encode the documents that queries share more often (with 2 shards per
#: worker, 1 Ray worker took 1.31x the local wall time; benchmarks/scale.md).
SHARDS_PER_WORKER = 1
#: Restarts of a dead worker, and retries of the shards it held, before the step fails.
RETRIES = 3
#: Seconds to wait for a cluster at a given address.
CONNECT_TIMEOUT = 30


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "execution.engine 'ray' needs Ray, which is not installed: pip install 'taskrank[ray]'"
        ) from None
    return ray


class Worker:
    """One Ray actor: the experiment's models, loaded once, scored on its own threads."""

    def __init__(
        self, config: ExperimentConfig, checkpoints: Checkpoints, scoring: Scoring, threads: int
    ) -> None:
        from ..devices import resolve_device
        from .models import ModelPool

        self.device = resolve_device(config.scoring.device)
        self.threads = threads
        self.pool = ModelPool(config, checkpoints, scoring, self.device, progress=False)

    def versions(self) -> dict[str, str]:
        """The worker's versions (:func:`process_versions`) and its device."""
        return {**process_versions(), "device": str(self.device)}

    def rerank(
        self,
        state: ModelState,
        candidates: Run,
        documents: Mapping[str, Mapping[str, str]],
        queries: Mapping[str, str],
        top_k: int,
    ) -> Run:
        """The model scores of one shard of a step, with the weights of ``state``."""
        from ..threads import torch_threads

        with torch_threads(self.threads):
            reranker = self.pool.reranker(state)
            return reranker.rerank(candidates, documents, queries, top_k=top_k, progress=False)


def process_versions() -> dict[str, str]:
    """This process's versions (:func:`taskrank.environment.versions`) and its host."""
    import platform

    from ..environment import versions

    return {**versions(), "host": platform.node()}


def check_versions(driver: Mapping[str, str], workers: list[Mapping[str, str]]) -> None:
    """A :class:`ConfigError` naming both versions when a worker's taskrank or torch differs."""
    for worker in workers:
        for name in ("taskrank", "torch"):
            if worker[name] != driver[name]:
                raise ConfigError(
                    f"Ray worker on {worker['host']} runs {name} {worker[name]}, the driver {name} "
                    f"{driver[name]}: install the same versions on every node"
                )


class RayEngine:
    """The re-ranking steps of one experiment run on a pool of Ray actors."""

    def __init__(
        self,
        config: ExperimentConfig,
        checkpoints: Checkpoints,
        scoring: Scoring,
        threads: int,
        progress: bool,
        device_type: str = "cpu",
    ) -> None:
        self.config = config
        self.device_type = device_type  # the device the step cache's keys name
        self.execution: ExecutionConfig = config.execution
        self.progress = progress
        self.ray = _ray()
        self.started_cluster = False
        self.actors: list[Any] = []
        self._connect()
        try:
            count = self._worker_count()
            remote = self.ray.remote(
                num_cpus=self.execution.cpus_per_worker,
                num_gpus=self.execution.gpus_per_worker,
                max_restarts=RETRIES,
                max_task_retries=RETRIES,
            )(Worker)
            self.actors = [remote.remote(config, checkpoints, scoring, threads) for _ in range(count)]
            self._check_workers()
        except BaseException:  # refused or interrupted: no worker (or cluster of ours) is left behind
            self.close()
            raise

    # -- the cluster --------------------------------------------------------------------------
    def _connect(self) -> None:
        ray, address = self.ray, self.execution.address
        if ray.is_initialized():
            return
        try:
            if address is None:
                ray.init(include_dashboard=False, log_to_driver=False)
                self.started_cluster = True
            else:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            raise ConfigError(
                f"execution.address {address!r}: cannot reach a Ray cluster there ({exc})"
            ) from exc

    def _worker_count(self) -> int:
        """The configured number of workers, or as many as the cluster's resources allow; an
        error before any work when a worker asks for more GPUs than any node has."""
        execution, nodes = self.execution, [n for n in self.ray.nodes() if n.get("Alive")]
        gpus = [float(n.get("Resources", {}).get("GPU", 0)) for n in nodes]
        cpus = sum(float(n.get("Resources", {}).get("CPU", 0)) for n in nodes)
        if execution.gpus_per_worker > max(gpus, default=0.0):
            raise ConfigError(
                f"execution.gpus_per_worker {execution.gpus_per_worker:g} is more than any node of the "
                f"Ray cluster has (most: {max(gpus, default=0.0):g} GPUs)"
            )
        if execution.workers is not None:
            return execution.workers
        if execution.gpus_per_worker > 0:
            return max(1, int(sum(math.floor(g / execution.gpus_per_worker) for g in gpus)))
        return max(1, int(cpus // execution.cpus_per_worker))

    def _check_workers(self) -> None:
        reports = self.ray.get([actor.versions.remote() for actor in self.actors])
        check_versions(process_versions(), reports)
        for report in reports:  # the cache's keys name the device: the workers must score on it
            if report["device"].split(":")[0] != self.device_type:
                raise ConfigError(
                    f"scoring.device resolves to {self.device_type} here but to {report['device']} on the "
                    f"Ray worker on {report['host']}: set scoring.device (and execution.gpus_per_worker) "
                    "so that both agree"
                )
        where = ", ".join(f"{r['host']} {r['device']}" for r in reports)
        announce(f"Ray: {len(self.actors)} worker(s): {where}", self.progress)

    # -- a step ---------------------------------------------------------------------------------
    def rerank(
        self,
        state: ModelState,
        candidates: Run,
        corpus: Mapping[str, Mapping[str, str]],
        queries: Mapping[str, str],
        top_k: int,
        label: str,
    ) -> Run:
        """The run of one step, scored in shards across the workers and joined in query order."""
        shards = _shards([q for q in candidates if q in queries], len(self.actors) * SHARDS_PER_WORKER)
        pending = []
        for i, shard in enumerate(shards):
            part = {q: candidates[q] for q in shard}
            docs = {d: corpus[d] for docs in part.values() for d in docs if d in corpus}
            texts = {q: queries[q] for q in shard}
            actor = self.actors[i % len(self.actors)]
            pending.append(actor.rerank.remote(state, part, docs, texts, top_k))
        results: list[Run] = []
        with progress_bar(len(pending), label, self.progress) as bar:
            for ref in pending:
                results.append(self.ray.get(ref))
                bar.advance(1)
        run: Run = {q: {} for q in candidates}
        for part in results:
            run.update(part)
        return run

    def close(self) -> None:
        """Free the workers (and stop the cluster this engine started)."""
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self.started_cluster:
            self.ray.shutdown()


def _shards(queries: list[str], count: int) -> list[list[str]]:
    """``queries`` cut into at most ``count`` contiguous shards of nearly equal size."""
    count = max(1, min(count, len(queries)))
    size, extra = divmod(len(queries), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(queries[start:end])
        start = end
    return [shard for shard in out if shard]


__all__ = ["RayEngine", "Worker", "check_versions"]
