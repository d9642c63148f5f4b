"""Checks that run before any heavy work: the data and checkpoints exist, layer indices exist in
the model, the scoring family fits each checkpoint, and the results folder is ours to write
(:mod:`taskrank.experiment.folder`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..config import AblationSystem, ExperimentConfig, MergeSystem, SweepSystem, parse_layers
from ..errors import CheckpointError, ConfigError, DataError
from .cache import FingerprintMemo, texts_digest
from .folder import check_output as check_output  # re-exported: the output check is a preflight check

log = logging.getLogger(__name__)

#: config keys that hold a model's number of transformer layers, in order of preference
DEPTH_KEYS = ("num_layers", "num_decoder_layers", "num_hidden_layers", "n_layer", "n_layers")


@dataclass
class Split:
    """The queries and judgments of one split, with a digest of the query texts."""

    role: str  # "test" or "dev"
    label: str  # the dataset's split, e.g. "test" or "train[:20%]"
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    digest: str = ""
    #: documents shown in place of the corpus's own for this split (the pseudo-queries' sources
    #: without the text the queries were cut from); None: the corpus as it is
    documents: dict[str, dict[str, str]] | None = None

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = texts_digest(self.queries)


@dataclass
class Data:
    """The corpus and the splits of an experiment."""

    name: str
    corpus: dict[str, dict[str, str]]
    corpus_digest: str
    test: Split
    dev: Split | None
    notes: list[str] = field(default_factory=list)


def load_data(config: ExperimentConfig, *, progress: bool = True) -> Data:
    """Load the test split and the dev queries the config names (a :class:`DataError` when absent)."""
    from ..data.beir import first_fraction, load_beir
    from ..retrieval import corpus_fingerprint

    spec = config.dataset
    try:
        test = load_beir(spec.path, spec.split, spec.cache_dir, progress=progress)
    except DataError as exc:
        raise DataError(f"dataset.path {spec.path!r}: {exc}") from exc
    notes = list(test.notes)
    dev = None
    if spec.dev is not None:
        try:
            full = load_beir(
                test.path or spec.path, spec.dev.split, spec.cache_dir, progress=progress, corpus=test.corpus
            )
        except DataError as exc:
            raise DataError(f"dataset.dev.split {spec.dev.split!r}: {exc}") from exc
        if spec.dev.fraction is not None:
            # the paper's rule for SciFact: the first 20% of the train queries, in qrels order
            full = first_fraction(full, spec.dev.fraction)
            notes.append(full.notes[-1])
        queries, qrels, label = full.queries, full.qrels, full.split
        overlap = sorted(set(queries) & set(test.queries))
        if overlap:
            raise DataError(
                f"dev and test queries overlap ({len(overlap)} ids, e.g. {overlap[0]!r}); "
                "tuning on test queries would leak: choose another dataset.dev"
            )
        dev = Split("dev", label, queries, qrels)
    name = spec.name or test.name
    return Data(
        name=name,
        corpus=test.corpus,
        corpus_digest=corpus_fingerprint(test.corpus),
        test=Split("test", spec.split, test.queries, test.qrels),
        dev=dev,
        notes=notes,
    )


@dataclass
class Checkpoints:
    """Resolved checkpoint directories and their fingerprints, by role."""

    paths: dict[str, Path]
    fingerprints: dict[str, str]
    depth: int | None
    not_downloaded: list[str] = field(default_factory=list)  # roles only looked up on the hub


def _read_config(path: Path) -> dict[str, object]:
    file = path / "config.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no config.json") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file} is unreadable: {exc}") from exc


def model_depth(config: Mapping[str, object]) -> int | None:
    """Number of transformer layers of a model config (the deeper stack of an encoder-decoder).

    >>> model_depth({"num_layers": 12, "num_decoder_layers": 12})
    12
    """
    values = [value for value in (config.get(k) for k in DEPTH_KEYS) if isinstance(value, int)]
    return max(values) if values else None


def _roles(config: ExperimentConfig) -> list[str]:
    types = {s.type for s in config.systems}
    roles = []
    if types & {"ranker", "merge", "sweep", "ablation"}:
        roles.append("ranker")
    if types & {"merge", "sweep", "ablation"}:
        roles += ["domain", "pretrained"]
    elif "domain" in types:
        roles.append("domain")
    return roles


def _hub_config_only(ref: str, revision: str | None) -> tuple[Path, str]:
    """The hub snapshot folder holding just ``config.json`` (fetched or cached) and the
    checkpoint's fingerprint ``org/name@commit``, without downloading any weights."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    from ..checkpoints.layout import in_hub_cache

    try:
        snapshot = Path(hf_hub_download(ref, "config.json", revision=revision)).parent
    except HFValidationError as exc:
        raise CheckpointError(
            f"checkpoint {ref!r} is neither an existing directory nor a valid hub id"
        ) from exc
    except OSError as exc:  # not found, gated, offline without a cached copy, network errors
        raise CheckpointError(
            f"cannot find hub checkpoint {ref!r} (revision {revision or 'main'}): {exc}"
        ) from exc
    hub = in_hub_cache(snapshot)
    if hub is None:
        raise CheckpointError(f"hub checkpoint {ref!r} resolved outside the hub cache ({snapshot})")
    return snapshot, f"{hub[0]}@{hub[1]}"


def resolve_checkpoints(
    config: ExperimentConfig, memo: FingerprintMemo, *, download: bool = True
) -> Checkpoints:
    """Resolve every checkpoint the systems need and check layers and scoring families.

    With ``download=False`` (the dry run) a hub checkpoint is only looked up: its config is
    fetched (or read from the cache) and its fingerprint taken from the commit, no weights move.
    """
    from ..checkpoints.resolve import looks_local, resolve_checkpoint

    models = config.models
    if models is None:
        return Checkpoints({}, {}, None)
    paths: dict[str, Path] = {}
    hub_only: dict[str, str] = {}
    for role in _roles(config):
        ref = getattr(models, role)
        revision = models.revisions.get(role)
        try:
            if download or Path(ref).expanduser().exists() or looks_local(ref):
                paths[role] = resolve_checkpoint(ref, revision)
            else:
                paths[role], hub_only[role] = _hub_config_only(ref, revision)
        except CheckpointError as exc:
            raise CheckpointError(f"models.{role}: {exc}") from exc
    depth = None
    if "ranker" in paths:
        ranker_config = _read_config(paths["ranker"])
        depth = model_depth(ranker_config)
        _check_layers(config, depth, models.ranker)
        _check_family(models.kind, paths["ranker"], f"models.ranker {models.ranker!r}")
    if "domain" in paths and any(s.type == "domain" for s in config.systems):
        kind = models.domain_kind or models.kind
        _check_family(kind, paths["domain"], f"models.domain {models.domain!r} (as a re-ranker)")
    fingerprints = {role: hub_only.get(role) or memo.fingerprint(path) for role, path in paths.items()}
    return Checkpoints(paths, fingerprints, depth, sorted(hub_only))


def _check_layers(config: ExperimentConfig, depth: int | None, ranker: str) -> None:
    for i, system in enumerate(config.systems):
        if not isinstance(system, MergeSystem | SweepSystem | AblationSystem):
            continue
        layers = parse_layers(system.layers)
        if layers is None:
            continue
        if depth is None:
            raise ConfigError(
                f"systems[{i}] ({system.name!r}) selects layers, but the config of {ranker!r} gives no "
                f"number of layers (none of {', '.join(DEPTH_KEYS)})"
            )
        past = [layer for layer in layers if layer >= depth]
        if past:
            raise ConfigError(
                f"systems[{i}] ({system.name!r}): layer {past[0]} is past the model's depth: "
                f"{ranker!r} has {depth} layers (0-{depth - 1})"
            )


def _check_family(kind: str, path: Path, label: str) -> None:
    """The scoring family fits the checkpoint (reads only its config)."""
    from transformers import AutoConfig

    from ..rerankers import reranker_class

    cls = reranker_class(kind)
    try:
        model_config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{label}: cannot read its config ({exc})") from exc
    cls.check_family(list(getattr(model_config, "architectures", None) or []), model_config, label)


def ablation_layers(system: AblationSystem, depth: int | None) -> list[int]:
    """The layers an ablation visits: its own list, or every layer of the model."""
    layers = parse_layers(system.layers)
    if layers is not None:
        return layers
    if depth is None:
        raise ConfigError(f"ablation {system.name!r}: the model's number of layers is unknown; list 'layers'")
    return list(range(depth))
