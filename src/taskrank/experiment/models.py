"""Model states of an experiment and the pool that loads each model at most once.

All ranker-family states (the ranker alone, merges at any α, layer selections) share one loaded
ranker whose weights :class:`taskrank.arithmetic.AlphaSweep` moves in place. Every model is
scored with the experiment's :class:`Scoring`, resolved once from the ranker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import DomainSystem, ExperimentConfig, parse_layers
from ..errors import ConfigError
from .preflight import Checkpoints

if TYPE_CHECKING:
    import torch

    from ..arithmetic import AlphaSweep
    from ..rerankers import Reranker, ScoringSettings

log = logging.getLogger(__name__)

#: A step's inputs as they are hashed into its key (JSON values).
Inputs = dict[str, object]


@dataclass(frozen=True)
class ModelState:
    """Which weights score: the ranker, θ_ranker + α·τ on some layers, or the domain model."""

    role: str  # "ranker", "merge" or "domain"
    alpha: float = 0.0
    layers: tuple[int, ...] | None = None
    mode: str = "only"

    @staticmethod
    def merged(
        alpha: float, layers: str | int | Sequence[int] | None = None, mode: str = "only"
    ) -> ModelState:
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


@dataclass(frozen=True)
class Scoring:
    """The scoring settings of an experiment, resolved once and used for every system.

    ``main`` holds the maximum input length and the family options, read from the ranker (the
    model the experiment is about; the domain model when no system needs the ranker), with
    ``scoring.max_length`` and ``models.options`` taking precedence. The domain model's row is
    scored with ``main`` too, so that α = 1 with ranker = pretrained equals it exactly, whatever
    files the domain folder holds (a folder made by ``taskrank adapt`` has no sentence-transformers
    config). Only a domain model scored as another family (``models.domain_kind``) has settings of
    its own, ``domain``, with the same maximum input length.
    """

    main: ScoringSettings
    domain: ScoringSettings | None
    max_length_from: str  # "scoring.max_length", "the ranker's sentence_bert_config.json", …
    dtype: str  # resolved: "float32" or "bfloat16", never "auto" (the cache keys hold it)
    batch_size: int
    top_k: int
    dtype_reason: str = "the default"  # "the default", "as asked", "auto: the CPU has amx_bf16", …
    quantize: str = "none"  # "none" or "int8" (scoring.quantize)
    #: with int8: the versions its scores depend on, (("nncf", "3.4.0"), ("openvino", "2026.4.1"))
    quantize_versions: tuple[tuple[str, str], ...] = ()

    def describe_quantize(self) -> str:
        """``"int8 (OpenVINO 2026.4.1, NNCF 3.4.0)"``; ``"none"`` without quantisation."""
        from ..rerankers.quantize import describe_quantize

        if self.quantize == "none":
            return "none"
        return describe_quantize(self.quantize, dict(self.quantize_versions))

    def of(self, role: str) -> ScoringSettings:
        """The settings ``role`` ("ranker", "merge" or "domain") is scored with."""
        return self.domain if role == "domain" and self.domain is not None else self.main

    def to_dict(self) -> dict[str, object]:
        """The settings as the results state them (``results.json`` ``scoring``)."""
        out: dict[str, object] = {
            "kind": self.main.kind,
            "max_length": self.main.max_length,
            "max_length_from": self.max_length_from,
            "options": dict(sorted(self.main.options.items())),
            "dtype": self.dtype,
            "dtype_reason": self.dtype_reason,
            **({"quantize": self.describe_quantize()} if self.quantize != "none" else {}),
            "batch_size": self.batch_size,
            "top_k": self.top_k,
        }
        if self.domain is not None:
            out["domain"] = {"kind": self.domain.kind, "options": dict(sorted(self.domain.options.items()))}
        out["description"] = self.describe()
        return out

    def describe(self) -> str:
        """One line: ``bi-encoder, max length 256 (the ranker's sentence_bert_config.json), …``."""
        text = f"{self.main.kind}, {self.main.describe(self.max_length_from)}"
        # the reason only where auto chose: a dtype given, or the default, reads as it always did
        why = f" ({self.dtype_reason})" if self.dtype_reason.startswith("auto") else ""
        text += f", dtype {self.dtype}{why}"
        if self.quantize != "none":
            text += f", {self.describe_quantize()}"
        text += f", batch size {self.batch_size}, top {self.top_k}"
        if self.domain is not None:
            text += f"; the domain model as {self.domain.kind}, {self.domain.describe(self.max_length_from)}"
        return text


def resolve_scoring(
    config: ExperimentConfig, checkpoints: Checkpoints, device: torch.device | None = None
) -> Scoring | None:
    """The experiment's :class:`Scoring`, read from the checkpoints' config and JSON files (no
    weights); ``None`` when nothing is re-ranked. Unknown options, a family that does not fit
    or a ``max_length`` past the model's positions are errors here, before any scoring.
    ``scoring.dtype: auto`` is resolved for ``device`` (the CPU when ``None``)."""
    from ..rerankers import scoring_settings
    from ..rerankers.quantize import backend_versions, choose_scoring_dtype

    models = config.models
    if models is None or not checkpoints.paths:
        return None
    scoring = config.scoring

    def settings(role: str, kind: str, max_length: int | None) -> ScoringSettings:
        options = models.options if kind == models.kind else {}
        if role in checkpoints.not_downloaded:  # the dry run: the hub's small files, no weights
            ref: Any = getattr(models, role)
            return scoring_settings(
                ref, kind, max_length=max_length, revision=models.revisions.get(role), **options
            )
        return scoring_settings(checkpoints.paths[role], kind, max_length=max_length, **options)

    domain_kind = models.domain_kind or models.kind
    role = "ranker" if "ranker" in checkpoints.paths else "domain"
    main = settings(role, models.kind if role == "ranker" else domain_kind, scoring.max_length)
    domain = None
    if domain_kind != main.kind and any(isinstance(s, DomainSystem) for s in config.systems):
        domain = settings("domain", domain_kind, main.max_length)
    if scoring.max_length is not None:
        origin = "scoring.max_length"
    elif main.max_length_from == "the default":
        origin = "the default"
    else:
        origin = f"the {role}'s {main.max_length_from}"
    try:
        dtype = choose_scoring_dtype(scoring.dtype, scoring.quantize, device)
    except ConfigError as exc:  # float16 on the CPU: say which setting asked for it
        raise ConfigError(f"scoring.dtype: {exc}") from None
    versions: tuple[tuple[str, str], ...] = ()
    if scoring.quantize != "none":
        if device is not None and device.type != "cpu":
            raise ConfigError(
                f"scoring.quantize {scoring.quantize} runs on the CPU only; scoring.device "
                f"{scoring.device!r} chose {device} (set scoring.device: cpu, or quantize none)"
            )
        versions = tuple(sorted(backend_versions(scoring.quantize).items()))
    return Scoring(
        main,
        domain,
        origin,
        dtype.name,
        scoring.batch_size,
        scoring.top_k,
        dtype_reason=dtype.reason,
        quantize=scoring.quantize,
        quantize_versions=versions,
    )


def model_inputs(state: ModelState, config: ExperimentConfig, checkpoints: Checkpoints, dtype: str) -> Inputs:
    """The weights of ``state``, as the checkpoints' fingerprints and the merge settings (the
    ``model`` of a re-ranking step's key)."""
    fp = checkpoints.fingerprints
    if state.role == "domain":
        return {"domain": fp["domain"]}
    if state.role == "ranker":
        return {"ranker": fp["ranker"]}
    merged: Inputs = {
        "ranker": fp["ranker"],
        "domain": fp["domain"],
        "pretrained": fp["pretrained"],
        "alpha": state.alpha,
        "layers": list(state.layers) if state.layers is not None else None,
        "mode": state.mode,
        "vocab_policy": config.trio().vocab_policy,
    }
    if dtype != "float32":
        # a merge scored in bfloat16 is now made from the ranker's float32 tensors (it was made
        # from their bfloat16 rounding): new keys for these values only, float32 keys unchanged
        merged["originals"] = "float32"
    return merged


def ir_inputs(
    state: ModelState, config: ExperimentConfig, checkpoints: Checkpoints, scoring: Scoring
) -> Inputs:
    """What the compressed OpenVINO model of ``state`` depends on (the key of its folder in the
    IR cache): the weights (:func:`model_inputs`), the family and tokenizer it was traced with,
    the quantisation, the versions of OpenVINO and NNCF, and the step cache's version (raised when
    taskrank's computation of a step, a merge included, changes: the IR of the weights merged the
    old way must not be served to the new keys)."""
    from ..rerankers.quantize import IR_FORMAT, WEIGHTS
    from . import cache

    return {
        "model": model_inputs(state, config, checkpoints, scoring.dtype),
        "cache_version": cache.CACHE_VERSION,
        "kind": scoring.of(state.role).kind,
        "tokenizer": None if state.role == "domain" else config.trio().tokenizer,
        "quantize": scoring.quantize,
        "weights": WEIGHTS,
        "versions": dict(scoring.quantize_versions),
        "format": IR_FORMAT,
    }


class ModelPool:
    """Loads each model at most once and moves the ranker between α states in place. With
    ``scoring.quantize`` the torch model stays the one the α sweep moves, and each state scores
    through the int8 model of its weights, read from the IR cache (``<cache_dir>/openvino``) or
    converted and cached there; one compiled model is held at a time."""

    def __init__(
        self,
        config: ExperimentConfig,
        checkpoints: Checkpoints,
        scoring: Scoring,
        device: torch.device | None,
        progress: bool,
    ) -> None:
        self.config = config
        self.checkpoints = checkpoints
        self.scoring = scoring
        self.device = device
        self.progress = progress
        self.loads: list[str] = []
        self._ranker: Reranker | None = None
        self._domain: Reranker | None = None
        self._sweep: AlphaSweep | None = None
        self._int8: tuple[ModelState, Reranker] | None = None  # the compiled model of one state
        #: with scoring.quantize: per model state made, what its int8 model took and where it came from
        self.conversions: list[dict[str, Any]] = []

    def _load(self, role: str, settings: ScoringSettings, tokenizer: str | None) -> Reranker:
        from ..rerankers import load_reranker

        scoring = self.config.scoring
        log.info("loading the %s model %s", role, self.checkpoints.paths[role])
        self.loads.append(role)
        return load_reranker(
            str(self.checkpoints.paths[role]),
            settings.kind,
            tokenizer=tokenizer,
            device=self.device,
            dtype=self.scoring.dtype,  # resolved once for the run ("auto" is never passed on)
            batch_size=scoring.batch_size,
            max_length=settings.max_length,
            **settings.options,
        )

    def reranker(self, state: ModelState) -> Reranker:
        """A re-ranker whose model holds the weights of ``state`` (with ``scoring.quantize``: the
        int8 model of these weights, read from the IR cache or converted and cached)."""
        reranker = self._torch(state)
        if self.scoring.quantize == "none":
            return reranker
        if self._int8 is not None and self._int8[0] == state:
            return self._int8[1]
        from ..progress import announce
        from ..rerankers.quantize import IRCache, quantized_copy
        from .cache import digest

        self._int8 = None  # the previous state's compiled model goes first
        inputs = ir_inputs(state, self.config, self.checkpoints, self.scoring)
        cache = IRCache(self.config.cache_path() / "openvino" / digest(inputs)[:32], inputs)
        quantized = quantized_copy(reranker, self.scoring.quantize, cache=cache)
        model: Any = quantized.model
        self.conversions.append(
            {
                "model": state.label(),
                "seconds": round(model.convert_seconds, 3),
                "from_cache": model.from_cache,
            }
        )
        how = "read from the cache and compiled" if model.from_cache else "converted, compressed and compiled"
        announce(f"int8 model of the {state.label()}: {how} in {model.convert_seconds:.1f} s", self.progress)
        self._int8 = (state, quantized)
        return quantized

    def _torch(self, state: ModelState) -> Reranker:
        """The torch re-ranker, its weights moved to ``state``'s."""
        models = self.config.trio()
        if state.role == "domain":
            if self._domain is None:
                self._domain = self._load("domain", self.scoring.of("domain"), None)
            return self._domain
        self.release_domain()
        if self._ranker is None:
            self._ranker = self._load("ranker", self.scoring.of("ranker"), models.tokenizer)
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
            # a model scored in a lower precision moves between α values from the ranker's float32
            # tensors, as stored: each α is θ_ranker + α·τ in float32, cast once, as a merge would be
            originals = self.checkpoints.paths["ranker"] if self.scoring.dtype != "float32" else None
            self._sweep = AlphaSweep(
                self._ranker.model, vector, vector_device="cpu", progress=self.progress, originals=originals
            )
        layers = list(state.layers) if state.layers is not None else None
        self._sweep.set_alpha(state.alpha, layers=layers, mode=state.mode)
        return self._ranker

    def release_domain(self) -> None:
        """Free the domain model (before the ranker is loaded, so both never share the device)."""
        if self._domain is not None:
            self._domain = None
            if self._int8 is not None and self._int8[0].role == "domain":
                self._int8 = None
            _free_device_memory()

    def close(self) -> None:
        self._ranker = self._domain = self._sweep = self._int8 = None
        _free_device_memory()


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
