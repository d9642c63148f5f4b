"""Choice lists of the merge options (torch-free, so the CLI can show them without importing torch)."""

from __future__ import annotations

from typing import Literal

Mode = Literal["only", "except"]
VocabPolicy = Literal["strict", "common"]

#: layer-selection modes: the paper's "add" ablation is ``only``, its "remove" is ``except``
MODES: tuple[str, ...] = ("only", "except")
#: what to do when vocabularies differ in size
VOCAB_POLICIES: tuple[str, ...] = ("strict", "common")
#: output dtypes a merge can write
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")
