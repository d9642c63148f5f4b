"""Task arithmetic on checkpoints: task vectors, layer-selective merges, in-place α sweeps.

    θ_out = θ_base + Σ αᵢ · (θ_finetunedᵢ − θ_pretrainedᵢ)

The paper's case is one vector with the ranker as base: θ_ranker + α·(θ_domain − θ_pretrained)
(Braga et al., "Investigating Task Arithmetic for Zero-Shot Information Retrieval", SIGIR 2025;
task vectors after Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023).

Everything is lazy: a :class:`TaskVector` is a linear combination of checkpoint pairs, and a
merge streams one tensor at a time from the inputs to the output shards.
"""

from __future__ import annotations

from .._lazy import lazy_exports
from ..vocabulary import DTYPES as DTYPE_NAMES
from ..vocabulary import MODES, VOCAB_POLICIES

# Imported on first use: the submodules need torch, the option lists above (the merge's words
# in taskrank.vocabulary: output dtypes, layer modes, vocabulary policies) do not.
_LAZY = {
    "align_keys": ".alignment",
    "resolve_keys": ".alignment",
    "tie_map": ".alignment",
    "DTYPES": ".merging",
    "merge": ".merging",
    "MergeReport": ".merge_report",
    "MergeResult": ".merge_report",
    "LayerSelection": ".selection",
    "layer_of": ".selection",
    "parse_layers": ".selection",
    "AlphaSweep": ".sweep",
    "TaskVector": ".vector",
}

__all__ = ["DTYPE_NAMES", "MODES", "VOCAB_POLICIES", *sorted(_LAZY)]


__getattr__ = lazy_exports(__name__, globals(), _LAZY)
