"""Hub ids in an experiment, against a local fake of the Hugging Face cache (offline):
the dry run looks checkpoints up without fetching weights, and its cache keys match the run's."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest

from _experiment_fixtures import make_config, write_tiny_beir
from taskrank.errors import CheckpointError
from taskrank.experiment import plan_experiment, run_experiment

COMMITS = {"ranker": "1" * 40, "domain": "2" * 40, "pretrained": "3" * 40}


pytestmark = pytest.mark.usefixtures("one_thread")


def fake_hub(root: Path, trio: dict[str, Path], *, weights: bool) -> dict[str, str]:
    """A hub cache holding acme/<role> at a fixed commit; without ``weights`` only config.json."""
    refs = {}
    for role, src in trio.items():
        repo = root / f"models--acme--{role}"
        snapshot = repo / "snapshots" / COMMITS[role]
        snapshot.mkdir(parents=True)
        for file in src.iterdir():
            if weights or file.name == "config.json":
                shutil.copy(file, snapshot / file.name)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMITS[role])
        refs[role] = f"acme/{role}"
    return refs


@pytest.fixture
def hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_dry_run_looks_up_hub_checkpoints_without_weights(tmp_path, hub, t5_trio, tiny_words):
    refs = fake_hub(hub, t5_trio, weights=False)
    data = write_tiny_beir(tmp_path / "beir", tiny_words)
    systems = [
        {"name": "BM25", "type": "first-stage"},
        {"name": "TA", "type": "merge", "alpha": 0.5, "layers": "1"},
    ]
    config = make_config(data, {r: Path(v) for r, v in refs.items()}, tmp_path / "out", systems=systems)
    config.models.ranker, config.models.domain, config.models.pretrained = (
        refs["ranker"],
        refs["domain"],
        refs["pretrained"],
    )
    text = plan_experiment(config)
    assert f"ranker: hub, weights not downloaded yet (acme/ranker@{COMMITS['ranker']})" in text
    assert "model depth: 2 layers" in text
    assert not list(hub.rglob("*.safetensors"))


def test_unknown_hub_id_offline(tmp_path, hub, t5_trio, tiny_words):
    refs = fake_hub(hub, t5_trio, weights=False)
    data = write_tiny_beir(tmp_path / "beir", tiny_words)
    config = make_config(data, t5_trio, tmp_path / "out")
    config.models.ranker, config.models.domain, config.models.pretrained = (
        "acme/nothing",
        refs["domain"],
        refs["pretrained"],
    )
    with pytest.raises(CheckpointError, match=r"models\.ranker: cannot find hub checkpoint 'acme/nothing'"):
        plan_experiment(config)


def test_dry_run_keys_match_the_run(tmp_path, hub, t5_trio, tiny_words):
    refs = fake_hub(hub, t5_trio, weights=True)
    data = write_tiny_beir(tmp_path / "beir", tiny_words)
    systems = [{"name": "BM25", "type": "first-stage"}, {"name": "ranker", "type": "ranker"}]
    config = make_config(data, t5_trio, tmp_path / "out", systems=systems)
    config.models.ranker, config.models.domain, config.models.pretrained = (
        refs["ranker"],
        refs["domain"],
        refs["pretrained"],
    )
    result = run_experiment(config, progress=False)
    assert result.stats["model_loads"] == ["ranker"]
    text = plan_experiment(config)
    assert "total: 0 step(s) to run" in text, text
