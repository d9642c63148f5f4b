"""One word, one place: the vocabulary module, the device resolver, and everything that reads them."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest
import torch

from taskrank import devices, vocabulary
from taskrank.errors import ConfigError, ModelError


def test_vocabulary_needs_neither_torch_nor_numpy():
    code = "import sys, taskrank.vocabulary; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("literal", "names"),
    [
        # the only lists written twice (a Literal for the config, a dict of descriptions)
        (vocabulary.SignificanceTest, tuple(vocabulary.SIGNIFICANCE_TESTS)),
        (vocabulary.Correction, tuple(vocabulary.CORRECTIONS)),
    ],
)
def test_each_type_and_its_list_name_the_same_choices(literal, names):
    assert typing.get_args(literal) == tuple(names)


def test_trainable_kinds_and_training_dtypes_are_within_the_general_lists():
    assert set(vocabulary.TRAINABLE_KINDS) <= set(vocabulary.KINDS)
    assert set(vocabulary.TRAINING_DTYPES) - {"auto"} <= set(vocabulary.DTYPES)
    assert set(vocabulary.DTYPE_ALIASES.values()) <= set(vocabulary.DTYPES)


def test_registries_implement_exactly_the_vocabulary():
    from taskrank import config
    from taskrank.evaluation import significance
    from taskrank.rerankers import REGISTRY

    assert tuple(REGISTRY) == vocabulary.KINDS
    assert tuple(significance.TEST_FUNCTIONS) == tuple(vocabulary.SIGNIFICANCE_TESTS)
    assert tuple(significance.CORRECTION_FUNCTIONS) == tuple(vocabulary.CORRECTIONS)
    assert config.KINDS == vocabulary.KINDS


@pytest.mark.parametrize(
    ("name", "expected"),
    [("nDCG@10", ("ndcg", 10)), ("P@5", ("p", 5)), ("R@100", ("recall", 100)), ("ap", ("map", None))],
)
def test_metric_grammar(name, expected):
    assert vocabulary.parse_metric(name) == expected


@pytest.mark.parametrize("name", ["bleu@10", "ndcg@", "@10"])
def test_metric_grammar_refuses_with_the_valid_families(name):
    with pytest.raises(ConfigError, match="ndcg@k"):
        vocabulary.parse_metric(name)


def test_metric_cutoff_must_be_positive():
    with pytest.raises(ConfigError, match="the cutoff must be >= 1"):
        vocabulary.parse_metric("ndcg@0")


def test_dtype_aliases_and_refusal():
    assert vocabulary.canonical_dtype("BF16") == "bfloat16"
    with pytest.raises(ConfigError, match="unknown dtype 'int4'; valid: float32, bfloat16, float16"):
        vocabulary.canonical_dtype("int4")


def test_auto_device_order_is_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("cuda")


def test_devices_that_are_not_there_or_not_devices_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match="CUDA is not available"):
        devices.resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        devices.resolve_device("gpu")


def test_dtype_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert devices.resolve_dtype(None, cpu) is None
    assert devices.resolve_dtype("fp32", cpu) is torch.float32
    assert devices.resolve_dtype(torch.bfloat16, cpu) is torch.bfloat16
    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: None)  # a CPU without AMX or avx512_bf16
    assert devices.resolve_dtype("auto", cpu) is torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devices.resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    with pytest.raises(ConfigError, match="float16 is not supported on the CPU"):
        devices.resolve_dtype("half", cpu)


def test_one_device_resolver_everywhere():
    from taskrank import adapt, rerankers

    assert rerankers.resolve_device is devices.resolve_device
    assert adapt.resolve_device is devices.resolve_device
    assert rerankers.resolve_dtype is devices.resolve_dtype
