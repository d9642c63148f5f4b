"""`taskrank run`: the thin CLI over the runner (dry run, errors as one line and exit code 2)."""

from __future__ import annotations

import pytest
import yaml

from _cli import run_cli as cli
from _experiment_fixtures import config_dict, write_tiny_beir


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny_words):
    return write_tiny_beir(tmp_path_factory.mktemp("beir") / "tiny", tiny_words)


def write(tmp_path, data) -> str:
    file = tmp_path / "exp.yaml"
    file.write_text(yaml.safe_dump(data, allow_unicode=True))
    return str(file)


def small(tiny_data, t5_trio, out):
    data = config_dict(tiny_data, t5_trio, out)
    data["systems"] = [{"name": "BM25", "type": "first-stage"}, {"name": "ranker", "type": "ranker"}]
    return data


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, tiny_data, t5_trio, monkeypatch, capsys):
    file = write(tmp_path, small(tiny_data, t5_trio, tmp_path / "out"))
    code, out, err = cli(monkeypatch, capsys, "run", file, "--dry-run")
    assert code == 0, err
    assert "systems:\n  - BM25 (first-stage)\n  - ranker (ranker)" in out
    assert "to run  rerank ranker: ranker on test" in out
    assert not (tmp_path / "out").exists()


def test_run_prints_the_table_and_the_report_path(tmp_path, tiny_data, t5_trio, monkeypatch, capsys):
    file = write(tmp_path, small(tiny_data, t5_trio, tmp_path / "out"))
    code, out, err = cli(monkeypatch, capsys, "run", file, "--no-progress")
    assert code == 0, err
    heads = "nDCG@10 (fused) | P@10 (fused) | nDCG@10 (model alone) | P@10 (model alone)"
    assert out.startswith(f"| system | {heads} | details |")
    assert f"report: {tmp_path / 'out' / 'report.md'}" in out
    # a different experiment in the same folder is refused, then replaced with --overwrite
    data = small(tiny_data, t5_trio, tmp_path / "out")
    data["metrics"] = ["ndcg@10"]
    file = write(tmp_path, data)
    code, out, err = cli(monkeypatch, capsys, "run", file, "--no-progress")
    assert code == 2 and "holds a different experiment ('tiny experiment'" in err
    code, out, err = cli(monkeypatch, capsys, "run", file, "--no-progress", "--overwrite")
    assert code == 0, err
    assert out.startswith("| system | nDCG@10 (fused) | nDCG@10 (model alone) | details |")


def test_misspelt_key_is_one_line_and_exit_code_2(tmp_path, tiny_data, t5_trio, monkeypatch, capsys):
    data = small(tiny_data, t5_trio, tmp_path / "out")
    data["systems"][1]["alpah"] = 0.3
    code, _, err = cli(monkeypatch, capsys, "run", write(tmp_path, data))
    assert code == 2
    assert "systems[1].alpah: unknown key (valid keys: name, type)" in err
    assert "Traceback" not in err


def test_missing_config_file(tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml does not exist" in err
