"""Every float tensor a merge writes is checked for NaN and Inf, merged or copied unchanged, whole
or in pieces, and the error names the tensor and the input it came from (issue 11, item 8)."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from taskrank.arithmetic import merge, merging
from taskrank.errors import MergeError

UNSELECTED = "encoder.block.1.layer.0.SelfAttention.q.weight"  # layer 1: outside layers=[0]
SELECTED = "encoder.block.0.layer.0.SelfAttention.q.weight"


def with_value(source: Path, folder: Path, tensor: str, index: int, value: float) -> Path:
    """A copy of the checkpoint ``source`` whose ``tensor`` holds ``value`` at flat ``index``."""
    shutil.copytree(source, folder)
    file = folder / "model.safetensors"
    tensors = load_file(str(file))
    tensors[tensor].view(-1)[index] = value
    save_file(tensors, str(file), metadata={"format": "pt"})
    return folder


def refused(tmp_path: Path, match: str, *args: object, **kwargs: object) -> None:
    """The merge into ``tmp_path/out`` fails with ``match``, and leaves nothing behind."""
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(MergeError, match=match) as caught:
        merge(*args, out=tmp_path / "out", **kwargs)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "output or temporary folder left behind"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_ranker_tensor_outside_the_selection(t5_trio, tmp_path, value) -> None:
    ranker = with_value(t5_trio["ranker"], tmp_path / "ranker", UNSELECTED, 5, value)
    bad = "NaN" if math.isnan(value) else "Inf"
    refused(
        tmp_path,
        f"tensor '{UNSELECTED}' would be copied into the merge with NaN/Inf "
        f"\\(the ranker {re.escape(str(ranker))} holds {bad}; not selected",
        ranker, t5_trio["domain"], t5_trio["pretrained"], 0.5, layers=[0],
    )  # fmt: skip


def test_non_finite_in_the_last_piece_of_a_tensor_read_in_pieces(t5_trio, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(merging, "SPAN", 100)  # shared.weight (198×32) in 64 pieces
    ranker = with_value(t5_trio["ranker"], tmp_path / "ranker", "shared.weight", 198 * 32 - 1, math.nan)
    refused(
        tmp_path, f"tensor 'shared.weight' .*the ranker {re.escape(str(ranker))} holds NaN",
        ranker, t5_trio["domain"], t5_trio["pretrained"], 0.5, layers=[0],
    )  # fmt: skip


def test_in_memory_merge_refuses_a_copied_non_finite_tensor(t5_trio, tmp_path) -> None:
    ranker = with_value(t5_trio["ranker"], tmp_path / "ranker", UNSELECTED, 0, math.nan)
    with pytest.raises(MergeError, match=f"tensor '{UNSELECTED}' would be copied .*holds NaN"):
        merge(ranker, t5_trio["domain"], t5_trio["pretrained"], 0.5, layers=[0])


def test_a_copied_tensor_that_overflows_the_output_dtype(t5_trio, tmp_path) -> None:
    ranker = with_value(t5_trio["ranker"], tmp_path / "ranker", UNSELECTED, 3, 1e6)  # float16 max: 65504
    refused(
        tmp_path, f"tensor '{UNSELECTED}' would be copied .*a value overflows float16",
        ranker, t5_trio["domain"], t5_trio["pretrained"], 0.5, layers=[0], dtype="float16",
    )  # fmt: skip
    merge(ranker, t5_trio["domain"], t5_trio["pretrained"], 0.5, layers=[0], out=tmp_path / "out32")


def test_a_merged_tensor_names_the_input_at_fault(t5_trio, tmp_path) -> None:
    ranker = with_value(t5_trio["ranker"], tmp_path / "ranker", SELECTED, 7, math.inf)
    refused(
        tmp_path, f"NaN/Inf in tensor '{SELECTED}' \\(the ranker {re.escape(str(ranker))} holds Inf\\)",
        ranker, t5_trio["domain"], t5_trio["pretrained"], 0.5, layers=[0],
    )  # fmt: skip
    pretrained = with_value(t5_trio["pretrained"], tmp_path / "pretrained", SELECTED, 7, math.nan)
    where = re.escape(str(pretrained))
    refused(
        tmp_path, f"NaN/Inf in tensor '{SELECTED}' \\(the domain/pretrained inputs hold NaN, in {where}\\)",
        t5_trio["ranker"], t5_trio["domain"], pretrained, 0.5, layers=[0],
    )  # fmt: skip


def test_finite_models_still_merge_bit_for_bit(t5_trio, tmp_path) -> None:
    """The checks change nothing for finite inputs: α = 0 is still the ranker, bit for bit."""
    result = merge(t5_trio["ranker"], t5_trio["domain"], t5_trio["pretrained"], 0.0, out=tmp_path / "out")
    merged = load_file(str(next(result.path.glob("*.safetensors"))))
    ranker = load_file(str(t5_trio["ranker"] / "model.safetensors"))
    assert merged.keys() == ranker.keys()
    assert all(torch.equal(merged[k], ranker[k]) for k in ranker)
