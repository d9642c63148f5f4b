"""Task arithmetic on checkpoints: task vectors, layer-selective merges, in-place α sweeps.

    θ_out = θ_base + Σ αᵢ · (θ_finetunedᵢ − θ_pretrainedᵢ)

The paper's case is one vector with the ranker as base: θ_ranker + α·(θ_domain − θ_pretrained)
(Braga et al., "Investigating Task Arithmetic for Zero-Shot Information Retrieval", SIGIR 2025;
task vectors after Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023).

Everything is lazy: a :class:`TaskVector` is a linear combination of checkpoint pairs, and a
merge streams one tensor at a time from the inputs to the output shards.
"""

from .alignment import align_keys, base_prefix, resolve_keys, tie_map
from .merge import DTYPES, merge
from .report import MergeReport, MergeResult
from .selection import MODES, LayerSelection, layer_of, parse_layers
from .sweep import AlphaSweep
from .vector import VOCAB_POLICIES, TaskVector

__all__ = [
    "DTYPES",
    "MODES",
    "VOCAB_POLICIES",
    "AlphaSweep",
    "LayerSelection",
    "MergeReport",
    "MergeResult",
    "TaskVector",
    "align_keys",
    "base_prefix",
    "layer_of",
    "merge",
    "parse_layers",
    "resolve_keys",
    "tie_map",
]
