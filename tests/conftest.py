"""Session fixtures: tiny models of the real architectures, built offline (no network, ever)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# taskrank's own cache (file hashes, BM25 indexes, downloads) goes to a fresh folder, never ~/.cache
os.environ.setdefault("TASKRANK_CACHE", tempfile.mkdtemp(prefix="taskrank-test-cache-"))

from taskrank.tiny import build_tiny, derive_checkpoint

WORDS = [
    "cell",
    "protein",
    "gene",
    "cancer",
    "virus",
    "patient",
    "treatment",
    "clinical",
    "trial",
    "dose",
    "drug",
    "immune",
    "search",
    "engine",
    "web",
    "page",
    "news",
    "sport",
    "football",
    "music",
    "film",
    "city",
    "weather",
    "market",
    "price",
    "river",
    "mountain",
    "ocean",
    "forest",
    "history",
    "war",
    "king",
    "law",
    "court",
    "contract",
]


def _trio(
    root: Path, pretrained_arch: str, ranker_arch: str, domain_arch: str, **ranker_kw
) -> dict[str, Path]:
    pretrained = build_tiny(pretrained_arch, root / "pretrained", words=WORDS, seed=0)
    ranker = derive_checkpoint(
        pretrained, root / "ranker", architecture=ranker_arch, noise=0.05, seed=1, **ranker_kw
    )
    domain = derive_checkpoint(pretrained, root / "domain", architecture=domain_arch, noise=0.05, seed=2)
    return {"pretrained": pretrained, "ranker": ranker, "domain": domain}


@pytest.fixture(scope="session")
def t5_trio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """monoT5-style trio: t5 pretrained, ranker and domain fine-tunes (T5ForConditionalGeneration)."""
    arch = "T5ForConditionalGeneration"
    return _trio(tmp_path_factory.mktemp("t5"), arch, arch, arch)


@pytest.fixture(scope="session")
def bert_trio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Cross-encoder trio: BertModel pretrained (no prefix), BertForSequenceClassification ranker
    (``bert.`` prefix + classifier), BertForMaskedLM domain (``bert.`` prefix + MLM head)."""
    return _trio(
        tmp_path_factory.mktemp("bert"),
        "BertModel",
        "BertForSequenceClassification",
        "BertForMaskedLM",
        num_labels=1,
    )


@pytest.fixture(scope="session")
def llama_trio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Query-likelihood trio: Llama-style causal LMs."""
    arch = "LlamaForCausalLM"
    return _trio(tmp_path_factory.mktemp("llama"), arch, arch, arch)


@pytest.fixture(scope="session")
def tiny_words() -> tuple[str, ...]:
    return WORDS


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module: tiny models run faster so on the two shared cores of CI
    (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def _module_cluster():
    """Stops the Ray cluster of a test module's :func:`cluster` when the module ends."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def cluster(_module_cluster):
    """The Ray tests' local cluster: 2 CPUs, no dashboard, started by the tests themselves, and
    started again where a test before stopped it (the address tests do), so that a test never
    runs on a cluster that taskrank started with the machine's CPUs."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray
