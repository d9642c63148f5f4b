"""Model states of an experiment and the pool that loads each model at most once.

All ranker-family states (the ranker alone, merges at any α, layer selections) share one loaded
ranker whose weights :class:`taskrank.arithmetic.AlphaSweep` moves in place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import ExperimentConfig, parse_layers
from .preflight import Checkpoints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelState:
    """Which weights score: the ranker, θ_ranker + α·τ on some layers, or the domain model."""

    role: str  # "ranker", "merge" or "domain"
    alpha: float = 0.0
    layers: tuple[int, ...] | None = None
    mode: str = "only"

    @staticmethod
    def merged(alpha: float, layers: Any = None, mode: str = "only") -> ModelState:
        """θ_ranker + α·τ; α = 0 is the ranker itself (AlphaSweep restores it bit for bit)."""
        if alpha == 0:
            return ModelState("ranker")
        parsed = parse_layers(layers)
        return ModelState("merge", float(alpha), tuple(parsed) if parsed is not None else None, mode)

    def label(self) -> str:
        if self.role != "merge":
            return self.role
        where = "" if self.layers is None else f", {self.mode} layers {','.join(map(str, self.layers))}"
        return f"α={self.alpha:g}{where}"


class ModelPool:
    """Loads each model at most once and moves the ranker between α states in place."""

    def __init__(
        self, config: ExperimentConfig, checkpoints: Checkpoints, device: Any, progress: bool
    ) -> None:
        self.config = config
        self.checkpoints = checkpoints
        self.device = device
        self.progress = progress
        self.loads: list[str] = []
        self._ranker: Any = None
        self._domain: Any = None
        self._sweep: Any = None

    def _load(self, role: str, kind: str, options: Mapping[str, Any], tokenizer: Any) -> Any:
        from ..rerankers import load_reranker

        scoring = self.config.scoring
        log.info("loading the %s model %s", role, self.checkpoints.paths[role])
        self.loads.append(role)
        return load_reranker(
            str(self.checkpoints.paths[role]),
            kind,
            tokenizer=tokenizer,
            device=self.device,
            dtype=scoring.dtype,
            batch_size=scoring.batch_size,
            max_length=scoring.max_length,
            **options,
        )

    def reranker(self, state: ModelState) -> Any:
        """A re-ranker whose model holds the weights of ``state``."""
        models = self.config.trio()
        if state.role == "domain":
            if self._domain is None:
                kind = models.domain_kind or models.kind
                options = models.options if kind == models.kind else {}
                self._domain = self._load("domain", kind, options, None)
            return self._domain
        self.release_domain()
        if self._ranker is None:
            self._ranker = self._load("ranker", models.kind, models.options, models.tokenizer)
        if state.role == "ranker":
            if self._sweep is not None:
                self._sweep.set_alpha(0.0)
            return self._ranker
        if self._sweep is None:
            from ..arithmetic import AlphaSweep, TaskVector

            vector = TaskVector.from_checkpoints(
                self.checkpoints.paths["domain"],
                self.checkpoints.paths["pretrained"],
                vocab_policy=models.vocab_policy,
            )
            self._sweep = AlphaSweep(self._ranker.model, vector, vector_device="cpu", progress=self.progress)
        layers = list(state.layers) if state.layers is not None else None
        self._sweep.set_alpha(state.alpha, layers=layers, mode=state.mode)
        return self._ranker

    def release_domain(self) -> None:
        """Free the domain model (before the ranker is loaded, so both never share the device)."""
        if self._domain is not None:
            self._domain = None
            _free_device_memory()

    def close(self) -> None:
        self._ranker = self._domain = self._sweep = None
        _free_device_memory()


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
