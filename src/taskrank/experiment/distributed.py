"""The re-ranking steps of an experiment on a Ray cluster (``execution.engine: ray``).

Each worker is a Ray actor that loads the ranker (and the task vector) once, through the same
:class:`~taskrank.experiment.models.ModelPool` the local engine uses, and moves between α values
in place. A re-ranking step (one model state on one split) is scored as the local engine scores
it, batch for batch (:mod:`.ray_plan`): the workers measure the token length of every unit (a pair;
for a bi-encoder, a distinct text), the driver makes the local batch plan, and hands its batches
out in chunks to whichever worker is free, longest first. So the runs are the local engine's bit
for bit, and a bi-encoder encodes each text of a step once, however many workers share it. The
driver writes the step to the cache under the key the local engine uses: a run on Ray and a run in
this process share their cache, and resume each other. BM25, fusion and evaluation stay on the
driver.

An actor that dies (``ray.kill``, a lost node) is restarted by Ray and its calls are retried
(``max_restarts``, ``max_task_retries``): a chunk's scores are a pure function of its inputs, so a
retried chunk gives the same scores, and a step is written only once all its chunks are back.
"""

from __future__ import annotations

import logging
import math
import re
import socket
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, TaskrankError
from ..progress import announce, progress_bar
from .ray_plan import Plan, Work, build_work, dot_products, score_batch

if TYPE_CHECKING:
    from ..config import ExecutionConfig, ExperimentConfig
    from .models import ModelState, Scoring
    from .preflight import Checkpoints

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
#: Chunks of the batch plan per worker, at least (while batches last): handed out to whichever
#: worker is free, they keep every worker busy to the end of a step.
CHUNKS_PER_WORKER = 4
#: Restarts of a dead worker, and retries of the shards it held, before the step fails.
RETRIES = 3
#: Seconds to wait for a cluster at a given address.
CONNECT_TIMEOUT = 30
#: Seconds the workers may take to be placed and started (an autoscaling cluster adds nodes in
#: this time) before asking for more than the cluster can place is an error rather than a hang.
PLACEMENT_TIMEOUT = 300
#: Seconds a TCP connection to an address may take before it is called unreachable: Ray itself
#: would retry a ``host:port`` where nothing answers for minutes.
PROBE_TIMEOUT = CONNECT_TIMEOUT / 3


def config_setting(name: str) -> str:
    """How an experiment names an execution setting in errors: ``execution.address``."""
    return f"execution.{name}"


def import_ray(engine: str = "execution.engine 'ray'", data: bool = False) -> Any:
    """The ``ray`` module (with Ray Data when ``data``); a :class:`ConfigError` naming the extra
    when it is not installed. ``engine`` says what asked for Ray, as the error names it."""
    try:
        import ray

        if data:
            import ray.data  # needs pyarrow and pandas: the ray[data] extra
    except ImportError as exc:
        raise ConfigError(
            f"{engine} needs Ray{' Data' if data else ''}, which is not installed ({exc.name or 'ray'} "
            "is missing): pip install 'taskrank[ray]'"
        ) from None
    return ray


def connect(ray: Any, address: str | None, setting: Callable[[str], str] = config_setting) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://…``), or start a local one (no
    dashboard) when it is None, unless this process is connected already. Returns whether a
    cluster was started here (the caller shuts it down). An address that cannot be reached is a
    :class:`ConfigError` naming it, within :data:`CONNECT_TIMEOUT` seconds."""
    if ray.is_initialized():
        return False
    unreachable = unreachable_reason(address) if address is not None else None
    if unreachable is not None:
        raise ConfigError(
            f"{setting('address')} {address!r}: cannot reach a Ray cluster there ({unreachable})"
        )
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False)
            return True
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise ConfigError(
            f"{setting('address')} {address!r}: cannot reach a Ray cluster there ({exc})"
        ) from exc
    return False


def unreachable_reason(address: str) -> str | None:
    """Why nothing accepts a TCP connection at ``address`` (``host:port``, ``ray://host:port``)
    within :data:`PROBE_TIMEOUT` seconds (``"Connection refused"``, ``"timed out"``), or None: it
    does, or ``address`` names no host and port (``auto``), which Ray resolves itself."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


_RAISED = re.compile(r"taskrank\.errors\.(\w+): (.+)")


def worker_error(exc: BaseException) -> TaskrankError:
    """The one-line error for a failure on a Ray worker: the taskrank error the worker raised
    (a checkpoint missing on that node, other versions), else the failure's last line."""
    from .. import errors

    text = str(exc)
    for name, message in reversed(_RAISED.findall(text)):
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, TaskrankError):
            return cls(message.strip())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return TaskrankError(f"a Ray worker failed: {lines[-1] if lines else type(exc).__name__}")


def worker_count(ray: Any, execution: ExecutionConfig, setting: Callable[[str], str] = config_setting) -> int:
    """The configured number of workers, or as many as the cluster's resources allow; an error
    before any work when a worker asks for more GPUs (or CPUs) than any node has."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = [float(n.get("Resources", {}).get("GPU", 0)) for n in nodes]
    cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
    for name, asked, have in (
        ("gpus", execution.gpus_per_worker, gpus),
        ("cpus", execution.cpus_per_worker, cpus),
    ):
        if asked > max(have, default=0.0):
            raise ConfigError(
                f"{setting(name + '_per_worker')} {asked:g} is more than any node of the Ray cluster has "
                f"(most: {max(have, default=0.0):g} {name.upper()})"
            )
    if execution.workers is not None:
        return execution.workers
    if execution.gpus_per_worker > 0:
        return max(1, int(sum(math.floor(g / execution.gpus_per_worker) for g in gpus)))
    return max(1, int(sum(cpus) // execution.cpus_per_worker))


def describe_workers(reports: list[Mapping[str, str]]) -> str:
    """``Ray: 2 worker(s): host-a cuda:0, host-b cuda:0``: the line that announces the workers."""
    return f"Ray: {len(reports)} worker(s): " + ", ".join(f"{r['host']} {r['device']}" for r in reports)


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
        self._state: ModelState | None = None
        self._current: Any = None

    def versions(self) -> dict[str, str]:
        """The worker's versions (:func:`process_versions`) and its device."""
        return {**process_versions(), "device": str(self.device)}

    def _reranker(self, state: ModelState) -> Any:
        # consecutive calls of one step share the state: move the weights once, not once a call
        if state != self._state:
            self._current, self._state = self.pool.reranker(state), state
        return self._current

    def lengths(self, state: ModelState, work: Work, units: np.ndarray) -> np.ndarray:
        """The token length of each of ``units``, as ``state``'s re-ranker tokenizes it."""
        from ..threads import torch_threads

        with torch_threads(self.threads):
            return work.lengths(self._reranker(state), units)

    def score(
        self, state: ModelState, work: Work, plan: Plan, batches: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The units of some batches of the plan and their scores (a bi-encoder: embeddings), each
        batch scored as one forward pass with the weights of ``state``."""
        from ..threads import torch_threads

        with torch_threads(self.threads):
            reranker = self._reranker(state)
            rows = [plan.rows(b) for b in batches]
            return np.concatenate(rows), np.concatenate([score_batch(reranker, work, r) for r in rows])


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
        self.scoring = scoring
        self.device_type = device_type  # the device the step cache's keys name
        self.execution: ExecutionConfig = config.execution
        self.progress = progress
        self.expected = 0  # pairs the run's steps still to compute hold, as planned (see expect)
        self.scored = 0  # pairs scored so far, over all steps
        self.ray = import_ray()
        self.actors: list[Any] = []
        self.started_cluster = connect(self.ray, self.execution.address)
        try:
            count = worker_count(self.ray, self.execution)
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
    def _get(self, refs: Any) -> Any:
        """``ray.get``; a failure on a worker (its error, a worker that could not start) as one line."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayError as exc:
            raise worker_error(exc) from exc

    def _check_workers(self) -> None:
        refs = [actor.versions.remote() for actor in self.actors]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=PLACEMENT_TIMEOUT)
        if len(ready) < len(refs):  # more workers than the cluster can place: say so, never hang
            have = self.ray.cluster_resources()
            raise ConfigError(
                f"execution.workers {len(refs)}: only {len(ready)} Ray worker(s) started within "
                f"{PLACEMENT_TIMEOUT} s; each asks {self.execution.cpus_per_worker:g} CPU(s) and "
                f"{self.execution.gpus_per_worker:g} GPU(s), the cluster has {have.get('CPU', 0):g} CPU(s) "
                f"and {have.get('GPU', 0):g} GPU(s): ask for fewer workers, or add nodes"
            )
        reports = self._get(refs)
        check_versions(process_versions(), reports)
        for report in reports:  # the cache's keys name the device: the workers must score on it
            if report["device"].split(":")[0] != self.device_type:
                raise ConfigError(
                    f"scoring.device resolves to {self.device_type} here but to {report['device']} on the "
                    f"Ray worker on {report['host']}: set scoring.device (and execution.gpus_per_worker) "
                    "so that both agree"
                )
        announce(describe_workers(reports), self.progress)

    # -- a step ---------------------------------------------------------------------------------
    def expect(self, pairs: int) -> None:
        """The pairs of the steps still to compute, from the run's plan: the total of the one bar."""
        self.expected = pairs

    def rerank(
        self,
        state: ModelState,
        candidates: Run,
        corpus: Mapping[str, Mapping[str, str]],
        queries: Mapping[str, str],
        top_k: int,
        label: str,
    ) -> Run:
        """The run of one step, scored on the workers batch for batch as the local engine scores
        it (:mod:`.ray_plan`): the same run, bit for bit.

        The progress bar is one over the whole run: it counts the pairs of every step from where
        the last step left it, against the planned total (raised when a step holds more pairs
        than planned, e.g. the test run at an α chosen on dev)."""
        from ..rerankers import BiEncoderReranker, reranker_class, select_candidates

        selected, documents = select_candidates(candidates, corpus, queries, top_k)
        run: Run = {q: {} for q in candidates}
        if not selected:
            return run
        per_text = issubclass(reranker_class(self.scoring.of(state.role).kind), BiEncoderReranker)
        work = build_work(selected, documents, queries, per_text)
        work_ref = self.ray.put(work)
        plan = Plan.of(self._lengths(state, work_ref, work.units), self.scoring.batch_size, None)
        self.expected = max(self.expected, self.scored + len(selected))
        with progress_bar(
            self.expected, f"Ray, all steps · {label}", self.progress, completed=self.scored, transient=True
        ) as bar:
            values = self._scores(
                state, work_ref, plan, work.units, _PairCount(bar, len(selected), work.units)
            )
        self.scored += len(selected)
        scores = dot_products(values, work) if per_text else values
        for (qid, did), value in zip(selected, scores.tolist(), strict=True):
            run[qid][did] = value
        return run

    def _lengths(self, state: ModelState, work: Any, units: int) -> np.ndarray:
        """Every unit's token length, measured in one even slice per worker."""
        slices = np.array_split(np.arange(units), min(len(self.actors), units))
        calls = [a.lengths.remote(state, work, s) for a, s in zip(self.actors, slices, strict=False)]
        return np.concatenate(self._get(calls))

    def _scores(self, state: ModelState, work: Any, plan: Plan, units: int, count: _PairCount) -> np.ndarray:
        """Every unit's score: the plan's batches in chunks, longest first, each to a free worker."""
        per_chunk = max(1, len(plan) // (len(self.actors) * CHUNKS_PER_WORKER))
        chunks = deque(list(range(b, min(b + per_chunk, len(plan)))) for b in range(0, len(plan), per_chunk))
        plan_ref, idle, pending = self.ray.put(plan), list(self.actors), {}
        values: np.ndarray | None = None
        while chunks or pending:
            while idle and chunks:
                actor = idle.pop()
                pending[actor.score.remote(state, work, plan_ref, chunks.popleft())] = actor
            done, _ = self.ray.wait(list(pending), num_returns=1)
            idle.append(pending.pop(done[0]))
            rows, out = self._get(done[0])
            if values is None:
                values = np.zeros((units, *out.shape[1:]), dtype=out.dtype)
            values[rows] = out
            count.advance(len(rows))
        if values is None:
            raise RuntimeError(f"no batch of the plan of {units} units came back")
        return values

    def close(self) -> None:
        """Free the workers (and stop the cluster this engine started)."""
        if self.actors and self.scored:
            announce(f"Ray: {self.scored} pairs scored on {len(self.actors)} worker(s)", self.progress)
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self.started_cluster:
            self.ray.shutdown()


class _PairCount:
    """Advances the run's bar in pairs while a step's units come back (a bi-encoder's units are texts)."""

    def __init__(self, bar: Any, pairs: int, units: int) -> None:
        self.bar, self.pairs, self.units, self.done, self.shown = bar, pairs, units, 0, 0

    def advance(self, units: int) -> None:
        self.done += units
        shown = self.pairs * self.done // self.units
        self.bar.advance(shown - self.shown)
        self.shown = shown


__all__ = [
    "RayEngine",
    "Worker",
    "check_versions",
    "connect",
    "describe_workers",
    "import_ray",
    "process_versions",
    "unreachable_reason",
    "worker_count",
    "worker_error",
]
