"""The experiment config: validation, error paths with lines, paper recipes, docs in sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from _experiment_fixtures import config_error as error_of
from _experiment_fixtures import with_changes
from taskrank.config import (
    ALPHA_RANGE,
    AblationSystem,
    ExperimentConfig,
    MergeSystem,
    SweepSystem,
    dump_config,
    load_config,
    parse_config,
    parse_layers,
    schema_markdown,
)
from taskrank.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs" / "paper").glob("*.yaml"))

BASE = {
    "name": "unit",
    "output": "out",
    "dataset": {"path": "data/x", "dev": {"split": "dev"}},
    "models": {"ranker": "r", "domain": "d", "pretrained": "p", "kind": "monot5"},
    "systems": [
        {"name": "BM25", "type": "first-stage"},
        {"name": "ranker", "type": "ranker"},
        {"name": "TA", "type": "merge", "alpha": 0.5},
    ],
}


def cfg(**changes) -> dict:
    return with_changes(BASE, **changes)


def test_minimal_config_fills_defaults():
    config = parse_config(BASE)
    assert config.first_stage.kind == "bm25" and config.first_stage.k == 100
    assert config.fusion.method == "tuned"
    assert config.metrics == ["ndcg@10", "p@10", "ndcg@3", "recall@100", "map@100"]
    assert config.baselines() == ["BM25", "ranker"]
    assert config.cache_path() == Path("out") / "cache"
    assert isinstance(config.systems[2], MergeSystem)


def test_sweep_defaults_to_alpha_zero_to_one():
    config = parse_config(cfg(systems=[{"name": "s", "type": "sweep"}]))
    sweep = config.systems[0]
    assert isinstance(sweep, SweepSystem)
    assert sweep.alphas == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        ((), "ouptut", "ouptut: unknown key"),
        (("dataset",), "spilt", "dataset.spilt: unknown key"),
        (("models",), "knd", "models.knd: unknown key (valid keys: domain, domain_kind, kind, options"),
        (("fusion",), "wieghts", "fusion.wieghts: unknown key"),
    ],
)
def test_unknown_key_names_its_path(path, key, expected):
    data = cfg()
    node = data
    for part in path:
        node = node.setdefault(part, {})
    node[key] = 1
    assert expected in error_of(data)


def test_unknown_key_in_a_system_lists_that_system_type_keys():
    data = cfg()
    data["systems"][2]["alpah"] = 0.7
    message = error_of(data)
    assert "systems[2].alpah: unknown key (valid keys: alpha, layers, mode, name, type)" in message


def test_error_message_gives_the_yaml_line(tmp_path):
    text = (
        "name: unit\noutput: out\ndataset:\n  path: data/x\nmodels: {ranker: r, domain: d, pretrained: p, "
        "kind: monot5}\nsystems:\n  - name: BM25\n    type: first-stage\n  - name: TA\n    type: merge\n"
        "    alpha: 7\n"
    )
    file = tmp_path / "exp.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=r"exp\.yaml:11: systems\[1\]\.alpha: alpha 7\.0 is out of range"):
        load_config(file)


@pytest.mark.parametrize("alpha", [ALPHA_RANGE[1] + 0.5, ALPHA_RANGE[0] - 1, float("nan"), float("inf")])
def test_alpha_out_of_range(alpha):
    data = cfg()
    data["systems"][2]["alpha"] = alpha
    assert "systems[2].alpha: alpha" in error_of(data)


def test_alpha_out_of_range_in_a_sweep_and_repeats():
    assert "out of range" in error_of(cfg(systems=[{"name": "s", "type": "sweep", "alphas": [0.1, 9]}]))
    assert "repeat" in error_of(cfg(systems=[{"name": "s", "type": "sweep", "alphas": [0.1, 0.1]}]))
    assert "at least one" in error_of(cfg(systems=[{"name": "s", "type": "sweep", "alphas": []}]))


def test_negative_alpha_within_range_is_allowed():
    data = cfg()
    data["systems"][2]["alpha"] = -0.5
    assert parse_config(data).systems[2].alpha == -0.5


def test_duplicate_system_names():
    data = cfg()
    data["systems"][2]["name"] = "BM25"
    message = error_of(data)
    assert "systems[0] and systems[2] are both named 'BM25'" in message


def test_unknown_and_missing_system_type():
    assert "unknown system type; valid types: first-stage, ranker" in error_of(
        cfg(systems=[{"name": "x", "type": "bogus"}])
    )
    assert "a system needs a 'type'" in error_of(cfg(systems=[{"name": "x"}]))


def test_missing_required_keys():
    data = cfg()
    del data["dataset"]
    assert "dataset: required key is missing" in error_of(data)
    data = cfg()
    del data["models"]["kind"]
    assert "models.kind: required key is missing" in error_of(data)


def test_models_required_when_a_system_reranks():
    data = cfg()
    del data["models"]
    assert "section 'models' is required" in error_of(data)
    only_bm25 = cfg(systems=[{"name": "BM25", "type": "first-stage"}])
    del only_bm25["models"]
    assert parse_config(only_bm25).models is None


def test_bad_kind_metric_device_and_weights():
    data = cfg()
    data["models"]["kind"] = "monoT5"
    assert "models.kind" in error_of(data)
    assert "metrics: Value error" not in error_of(cfg(metrics=["ndcg@10", "bleu"]))
    assert "metric 'bleu' is not like" in error_of(cfg(metrics=["ndcg@10", "bleu"]))
    assert "device 'gpu'" in error_of(cfg(scoring={"device": "gpu"}))
    assert "fusion weights" in error_of(cfg(fusion={"method": "fixed", "weights": [0, 0]}))
    assert "fusion weights" in error_of(cfg(fusion={"method": "fixed", "weights": [-1, 2]}))


def test_top_k_cannot_exceed_candidates():
    message = error_of(cfg(first_stage={"k": 50}, scoring={"top_k": 100}))
    assert "scoring.top_k (100) exceeds first_stage.k (50)" in message


def test_sweep_on_dev_needs_a_dev_set():
    data = cfg(systems=[{"name": "sweep", "type": "sweep"}])
    del data["dataset"]["dev"]
    assert "picks α on dev, but dataset.dev is not set" in error_of(data)
    data["systems"][0]["select_on"] = "test"
    assert parse_config(data).systems[0].select_on == "test"


def test_run_first_stage_needs_files():
    assert "needs the key 'run'" in error_of(cfg(first_stage={"kind": "run"}))
    assert "needs 'dev_run' too" in error_of(cfg(first_stage={"kind": "run", "run": "x.trec"}))
    assert "only used with kind: run" in error_of(cfg(first_stage={"run": "x.trec"}))


def test_baselines_must_name_systems():
    assert "unknown systems ['BM52']" in error_of(cfg(significance={"baselines": ["BM52"]}))


def test_a_baseline_named_twice_is_refused():
    assert "names 'BM25' twice" in error_of(cfg(significance={"baselines": ["BM25", "ranker", "BM25"]}))


def test_a_layer_ablation_cannot_be_a_baseline():
    systems = [*BASE["systems"], {"name": "layers", "type": "ablation", "alpha": 0.5, "layers": [0]}]
    message = error_of(cfg(systems=systems, significance={"baselines": ["BM25", "layers"]}))
    assert "layer ablation 'layers'" in message and "no row" in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0-2,5", [0, 1, 2, 5]),
        ("3", [3]),
        (4, [4]),
        ([2, 0, 2], [0, 2]),
        (None, None),
        (" 1 - 2 , 7 ", [1, 2, 7]),
    ],
)
def test_parse_layers(spec, expected):
    assert parse_layers(spec) == expected


@pytest.mark.parametrize("spec", ["3-1", "a", "1,,2", [-1], [], [True], "-2"])
def test_parse_layers_rejects(spec):
    with pytest.raises(ValueError):
        parse_layers(spec)


def test_bad_layer_selection_is_a_config_error():
    data = cfg()
    data["systems"][2]["layers"] = "5-2"
    assert "systems[2].layers: layer range '5-2' runs backwards" in error_of(data)
    data["systems"][2]["layers"] = "0-3"
    assert parse_config(data).systems[2].layers == "0-3"


def test_ablation_modes():
    config = parse_config(cfg(systems=[{"name": "abl", "type": "ablation", "alpha": 0.7}]))
    assert isinstance(config.systems[0], AblationSystem)
    assert config.systems[0].modes == ["only", "except"]
    assert "distinct" in error_of(cfg(systems=[{"name": "a", "type": "ablation", "alpha": 1, "modes": []}]))


def test_bad_system_name():
    assert "must not contain slashes" in error_of(cfg(systems=[{"name": "a/b", "type": "first-stage"}]))


def test_yaml_problems(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_config(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsystems: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_config(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: x\noutput: a\nname: y\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: line 3: key 'name' repeats \(first on line 1\)"):
        load_config(dup)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(empty)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping, got list"):
        load_config(listy)


def test_dump_round_trips():
    config = parse_config(BASE)
    import yaml

    again = parse_config(yaml.safe_load(dump_config(config)))
    assert again == config
    assert again.fingerprint() == config.fingerprint()


def test_fingerprint_ignores_output_and_device_but_not_alpha():
    config = parse_config(BASE)
    moved = parse_config(
        cfg(
            output="elsewhere",
            scoring={"device": "cpu", "batch_size": 3},
            report={"latex": True, "plots": False},
        )
    )
    assert moved.fingerprint() == config.fingerprint()
    data = cfg()
    data["systems"][2]["alpha"] = 0.6
    assert parse_config(data).fingerprint() != config.fingerprint()


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_paper_recipe_validates(recipe):
    config = load_config(recipe)
    text = recipe.read_text()
    assert re.search(r"^# Expected", text, re.M), f"{recipe.name} lacks the paper's expected figures"
    assert re.search(r"^# Resources: .*GPU", text, re.M), f"{recipe.name} lacks the GPU memory/time note"
    assert config.models is not None
    names = [s.name for s in config.systems]
    assert names[0] == "BM25" and any(s.type == "ranker" for s in config.systems)
    assert any(s.type in ("merge", "sweep") for s in config.systems)


def test_paper_recipes_cover_the_paper():
    stems = {r.stem for r in RECIPES}
    for needed in (
        "scifact-t5-base",
        "nfcorpus-t5-base",
        "trec-covid-t5-base",
        "scidocs-t5-base",
        "scifact-rankinggpt-llama2",
        "scifact-roberta-biencoder",
        "miracl-fr-mt5",
        "miracl-es-mt5",
        "miracl-en-mt5",
        "germanquad-mt5",
    ):
        assert needed in stems


def test_paper_recipe_options_are_valid_for_their_kind():
    rerankers = pytest.importorskip("taskrank.rerankers")
    for recipe in RECIPES:
        config = load_config(recipe)
        assert config.models is not None
        valid = set(rerankers.reranker_class(config.models.kind).options)
        assert set(config.models.options) <= valid, f"{recipe.name}: {set(config.models.options) - valid}"


def test_docs_config_page_matches_the_schema():
    page = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert schema_markdown() in page, (
        "docs/config.md is stale: run `python -m taskrank.config > docs/config.md`"
    )


def test_every_schema_key_is_documented():
    text = schema_markdown()
    for key in ExperimentConfig.model_fields:
        assert f"| `{key}` |" in text


def test_the_config_reads_its_choices_from_the_vocabulary():
    import typing

    from taskrank import config, vocabulary

    assert config.ALPHA_RANGE == vocabulary.ALPHA_RANGE and config.KINDS == vocabulary.KINDS
    tests, corrections = config.SIGNIFICANCE_TESTS, config.CORRECTIONS
    assert tests == tuple(vocabulary.SIGNIFICANCE_TESTS) == typing.get_args(vocabulary.SignificanceTest)
    assert corrections == tuple(vocabulary.CORRECTIONS) == typing.get_args(vocabulary.Correction)
