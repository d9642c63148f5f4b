"""Aligning tensor names across checkpoints: base prefixes and tied weights."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol


class KeyedWeights(Protocol):
    """What key alignment reads of a set of weights: its tensor names and its config."""

    config: dict[str, Any]

    def keys(self) -> list[str]: ...


def _prefix_candidates(keys: Iterable[str]) -> list[str]:
    # One- and two-component prefixes: ``bert.``, ``model.``, ``0.auto_model.`` (sentence-transformers).
    found: set[str] = set()
    for k in keys:
        parts = k.split(".")
        if len(parts) > 1:
            found.add(parts[0] + ".")
        if len(parts) > 2:
            found.add(parts[0] + "." + parts[1] + ".")
    return ["", *sorted(found)]


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix) :] if prefix and key.startswith(prefix) else key


def _best_prefixes(ref_keys: Sequence[str], other_keys: Sequence[str]) -> tuple[str, str]:
    best: tuple[int, int, str, str] = (-1, 0, "", "")
    other_variants = {po: {_strip(k, po) for k in other_keys} for po in _prefix_candidates(other_keys)}
    for pr in _prefix_candidates(ref_keys):
        ref_stripped = {_strip(k, pr) for k in ref_keys}
        for po, other_stripped in other_variants.items():
            candidate = (len(ref_stripped & other_stripped), -(len(pr) + len(po)), pr, po)
            if candidate[:2] > best[:2]:
                best = candidate
    return best[2], best[3]


def align_keys(ref_keys: Sequence[str], other_keys: Sequence[str]) -> dict[str, str]:
    """Map names of ``ref_keys`` to names of ``other_keys`` after removing a base prefix.

    The base prefix of each side (``bert.``, ``roberta.``, ``model.`` …) is found from the
    names themselves: the pair of prefixes that makes the most names agree wins (the
    shortest on a tie). A cross-encoder's ``bert.encoder.layer.0…`` thus meets a plain
    encoder's ``encoder.layer.0…``; heads present on one side only stay unmatched.
    """
    return _name_alignment(ref_keys, other_keys)[0]


def _name_alignment(
    ref_keys: Sequence[str], other_keys: Sequence[str]
) -> tuple[dict[str, str], str, str, dict[str, str]]:
    """(mapping, ref prefix, other prefix, other's names without its prefix → full name)."""
    pr, po = _best_prefixes(ref_keys, other_keys)
    lookup = {_strip(k, po): k for k in other_keys}
    mapping = {k: lookup[_strip(k, pr)] for k in ref_keys if _strip(k, pr) in lookup}
    return mapping, pr, po, lookup


def tie_map(config: Mapping[str, Any]) -> dict[str, str]:
    """Tied parameters of a checkpoint's architecture (target → source), from transformers'
    own ``_tied_weights_keys``; empty when the config unties word embeddings."""
    if not config or not config.get("tie_word_embeddings", True):
        return {}
    archs = config.get("architectures") or []
    if not archs:
        return {}
    import transformers

    cls = getattr(transformers, archs[0], None)
    mapping = getattr(cls, "_tied_weights_keys", None)
    if isinstance(mapping, Mapping):
        return {str(k): str(v) for k, v in mapping.items() if re.fullmatch(r"[\w.]+", f"{k}{v}")}
    return {}


def _tie_groups(config: Mapping[str, Any]) -> list[set[str]]:
    groups: dict[str, set[str]] = {}
    for target, source in tie_map(config).items():
        groups.setdefault(source, {source}).add(target)
    return list(groups.values())


def resolve_keys(ref: KeyedWeights, other: KeyedWeights) -> dict[str, str]:
    """Align the tensors of ``ref`` with those of ``other``: by name after removing the base
    prefix, then through tied aliases (a weight stored as ``shared.weight`` on one side and
    ``encoder.embed_tokens.weight`` on the other, as T5 checkpoints do)."""
    ref_keys = ref.keys()
    mapping, pr, po, lookup = _name_alignment(ref_keys, other.keys())
    missing = [k for k in ref_keys if k not in mapping]
    if not missing:
        return mapping
    groups = [
        {_strip(g, p) for g in group for p in (pr, po)}
        for group in _tie_groups(ref.config) + _tie_groups(other.config)
    ]
    for key in missing:
        canon = _strip(key, pr)
        for group in groups:
            if canon not in group:
                continue
            hit = next((lookup[m] for m in sorted(group) if m in lookup), None)
            if hit is not None:
                mapping[key] = hit
                break
    return mapping
