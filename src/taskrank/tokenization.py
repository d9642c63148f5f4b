"""Small facts about tokenizers that several parts of taskrank need."""

from __future__ import annotations

from typing import Any

from .errors import ModelError


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special token ids a tokenizer puts before and after a single text
    (``[CLS]``/``[SEP]`` for BERT, ``[], [</s>]`` for T5, ``<s>`` for Llama).

    Found by encoding one probe word with and without special tokens, so it follows the
    tokenizer's own template whatever its class.
    """
    probe = "a"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare) :])
    raise ModelError(f"cannot locate the text inside the special-token template of tokenizer {tokenizer!r}")
