"""taskrank.data: BEIR folders, TREC files, dev-split rules and every bad input."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from _data_fixtures import make_beir, write_jsonl
from taskrank.data import (
    dev_split,
    doc_text,
    load_beir,
    load_corpus,
    load_queries,
    load_trec_dataset,
    ranked,
    read_qrels,
    read_run,
    write_qrels,
    write_run,
)
from taskrank.errors import DataError


def test_doc_text_joins_title_and_text() -> None:
    assert doc_text({"title": "Aspirin", "text": "reduces fever"}) == "Aspirin reduces fever"
    assert doc_text({"title": "", "text": "only text"}) == "only text"
    assert doc_text({"text": "no title key"}) == "no title key"


def test_load_beir_local_folder_keeps_only_split_queries(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "toy")
    ds = load_beir(root, split="test")
    assert ds.name == "toy" and ds.split == "test"
    assert set(ds.corpus) == {"d1", "d2", "d3"}
    assert ds.corpus["d1"] == {"title": "Aspirin", "text": "aspirin reduces fever and pain"}
    assert ds.queries == {"q1": "aspirin fever", "q2": "virus cell"}
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    train = load_beir(root, split="train")
    assert train.queries == {"q3": "football"}


def test_load_beir_finds_folder_nested_like_the_zips(tmp_path: Path) -> None:
    make_beir(tmp_path / "outer" / "toy")
    assert load_beir(tmp_path / "outer").name == "toy"


def test_folder_of_several_datasets_is_not_guessed(tmp_path: Path) -> None:
    make_beir(tmp_path / "cqadupstack" / "cqadupstack" / "android")
    make_beir(tmp_path / "cqadupstack" / "cqadupstack" / "gis")
    with pytest.raises(DataError, match=r"holds several datasets .*android.*gis"):
        load_beir(tmp_path / "cqadupstack")
    assert load_beir(tmp_path / "cqadupstack" / "cqadupstack" / "gis").name == "gis"
    with pytest.raises(DataError, match=r"no corpus\.jsonl found \(not a BEIR folder\)"):
        load_beir(tmp_path / "cqadupstack" / "cqadupstack" / "gis" / "qrels")


def test_unknown_split_lists_valid_ones(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "toy")
    with pytest.raises(DataError, match=r"unknown split 'validation'; valid splits: test, train"):
        load_beir(root, split="validation")


def test_unknown_dataset_name_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown BEIR dataset 'scifactt'.*nfcorpus.*scifact"):
        load_beir("scifactt", cache_dir=tmp_path)


def test_qrels_of_unknown_queries_are_excluded_with_a_count(tmp_path: Path, caplog) -> None:
    root = make_beir(
        tmp_path / "toy",
        qrels={"test": [("q1", "d1", 1), ("ghost", "d2", 1), ("ghost2", "d3", 1), ("ghost2", "d1", 1)]},
    )
    with caplog.at_level(logging.WARNING, logger="taskrank.data"):
        ds = load_beir(root)
    assert ds.qrels == {"q1": {"d1": 1}}
    assert "2 judged query id(s) are not in the queries and were excluded" in caplog.text
    assert any("2 judged query id(s)" in note for note in ds.notes)


def test_byte_order_mark_and_crlf_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"_id": "d1", "text": "a"}\r\n{"_id": "d2", "text": "b"}\r\n')
    assert list(load_corpus(path)) == ["d1", "d2"]


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: malformed JSON"):
        load_corpus(path)


def test_jsonl_record_without_id_or_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "text": "ok"}, {"title": "x", "text": "y"}])
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: record has no id field"):
        load_corpus(path)
    path = write_jsonl(tmp_path / "c2.jsonl", [{"_id": "d1", "title": "no text"}])
    with pytest.raises(DataError, match=r"c2\.jsonl:1: record has no 'text' field"):
        load_corpus(path)


def test_duplicate_document_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}])
    with pytest.raises(
        DataError, match=r"corpus\.jsonl:2: duplicate document id 'd1' \(first seen on line 1\)"
    ):
        load_corpus(path)


def test_duplicate_query_id_jsonl_and_tsv(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q", "text": "a"}, {"_id": "q", "text": "b"}])
    with pytest.raises(DataError, match=r"queries\.jsonl:2: duplicate query id 'q'"):
        load_queries(path)
    tsv = tmp_path / "topics.tsv"
    tsv.write_text("1\tfirst\n2\tsecond\n1\tagain\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"topics\.tsv:3: duplicate query id '1' \(first seen on line 1\)"):
        load_queries(tsv)


def test_empty_corpus(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"corpus\.jsonl: the corpus is empty"):
        load_corpus(path)


def test_non_utf8_bytes_name_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        load_corpus(path)
    qrels = tmp_path / "qrels.txt"
    qrels.write_bytes(b"q1 0 d\xff 1\n")
    with pytest.raises(DataError, match=r"qrels\.txt:1: not valid UTF-8"):
        read_qrels(qrels)


def test_malformed_tsv_qrels_line(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.tsv:3: expected 'qid iter docid rel'.*got 2 fields"):
        read_qrels(path)
    path.write_text("q1\td1\thigh\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.tsv:1: relevance must be an integer, got 'high'"):
        read_qrels(path)


def test_conflicting_duplicate_judgment(tmp_path: Path) -> None:
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 d1 1\nq1 0 d1 2\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"qrels\.txt:2: query 'q1' document 'd1' judged 2 here but 1 on line 1"
    ):
        read_qrels(path)


def test_trec_and_beir_qrels_with_graded_and_negative_labels(tmp_path: Path) -> None:
    trec = tmp_path / "qrels.trec"
    trec.write_text("q1 0 d1 2\nq1 0 d2 0\nq2 Q0 d3 -1\n", encoding="utf-8")
    assert read_qrels(trec) == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": -1}}
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\n", encoding="utf-8")
    assert read_qrels(beir) == {"q1": {"d1": 2}}


def test_run_roundtrip_and_trec_tie_order(tmp_path: Path) -> None:
    run = {"q1": {"a": 1.0, "b": 1.0, "c": 3.5, "d": 0.1 + 0.2}, "q2": {"x": -2.0}}
    path = tmp_path / "run.trec"
    write_run(run, path, tag="bm25")
    lines = path.read_text(encoding="utf-8").splitlines()
    # score descending; the tie between a and b broken by doc id descending, as trec_eval does
    assert [line.split()[2] for line in lines[:4]] == ["c", "b", "a", "d"]
    assert lines[0] == "q1 Q0 c 1 3.5 bm25"
    assert read_run(path) == run  # scores round-trip exactly
    assert ranked({"a": 1.0, "b": 1.0}) == [("b", 1.0), ("a", 1.0)]


def test_write_run_refuses_bad_ids_and_scores_without_leaving_a_file(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    with pytest.raises(DataError, match=r"document id 'has space'"):
        write_run({"q1": {"has space": 1.0}}, path)
    with pytest.raises(DataError, match=r"query 'q1' document 'd' is not finite"):
        write_run({"q1": {"d": float("nan")}}, path)
    with pytest.raises(DataError, match=r"run tag"):
        write_run({"q1": {"d": 1.0}}, path, tag="two words")
    assert list(tmp_path.iterdir()) == []


def test_read_run_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 x t\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"run\.trec:2: score must be a number, got 'x'"):
        read_run(path)
    path.write_text("q1 Q0 d1 1 2.0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"run\.trec:1: expected 6 fields"):
        read_run(path)
    path.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"run\.trec:2: document 'd1' appears twice for query 'q1'"):
        read_run(path)
    path.write_text("q1 Q0 d1 1 inf t\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"run\.trec:1: score is not finite"):
        read_run(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.trec: no such file"):
        read_run(tmp_path / "nope.trec")


def test_qrels_roundtrip(tmp_path: Path) -> None:
    qrels = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    write_qrels(qrels, tmp_path / "q.txt")
    assert (tmp_path / "q.txt").read_text().splitlines()[0] == "q1 0 d1 2"
    assert read_qrels(tmp_path / "q.txt") == qrels


def test_trec_topics_tsv_and_sgml(tmp_path: Path) -> None:
    tsv = tmp_path / "topics.miracl-fr-dev.tsv"
    tsv.write_text("1\tQui a écrit Les Misérables ?\n7\tcapitale\tde la France\n", encoding="utf-8")
    assert load_queries(tsv) == {"1": "Qui a écrit Les Misérables ?", "7": "capitale\tde la France"}
    sgml = tmp_path / "topics.txt"
    sgml.write_text(
        "<top>\n<num> Number: 301\n<title> International Organized Crime\n\n<desc> Description:\nx\n</top>\n"
        "<top>\n<num> Number: 302\n<title> Poliomyelitis and Post-Polio\n<desc> x\n</top>\n",
        encoding="utf-8",
    )
    assert load_queries(sgml) == {
        "301": "International Organized Crime",
        "302": "Poliomyelitis and Post-Polio",
    }
    with pytest.raises(DataError, match=r"unknown queries format 'xml'; valid: auto, jsonl, tsv, trec"):
        load_queries(sgml, format="xml")


def test_trec_topics_with_closing_tags_and_xml(tmp_path: Path) -> None:
    closed = tmp_path / "topics.closed.txt"
    closed.write_text("<top><num>7</num><title>heart attack</title><desc>x</desc></top>\n", encoding="utf-8")
    assert load_queries(closed) == {"7": "heart attack"}
    xml = tmp_path / "topics-rnd5.xml"
    xml.write_text(
        '<topics>\n<topic number="1">\n<query>coronavirus origin</query>\n<question>?</question>\n</topic>\n'
        '<topic number="2">\n<query>coronavirus response to weather</query>\n</topic>\n</topics>\n',
        encoding="utf-8",
    )
    assert load_queries(xml) == {"1": "coronavirus origin", "2": "coronavirus response to weather"}
    bad = tmp_path / "topics.bad.txt"
    bad.write_text("<top>\n<title> no number\n</top>\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"topics\.bad\.txt:1: <top> block without <num> or <title>"):
        load_queries(bad)


def test_miracl_style_dataset_gz_corpus_and_negatives(tmp_path: Path, caplog) -> None:
    corpus = tmp_path / "corpus.jsonl.gz"
    with gzip.open(corpus, "wt", encoding="utf-8") as handle:
        for doc_id, title, text in [
            ("1#0", "Paris", "Paris est la capitale"),
            ("2#0", "Lyon", "Lyon est une ville"),
        ]:
            handle.write(json.dumps({"docid": doc_id, "title": title, "text": text}) + "\n")
    topics = tmp_path / "topics.tsv"
    topics.write_text("10\tcapitale de la France\n11\tsans jugement\n", encoding="utf-8")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("10\tQ0\t1#0\t1\n10\tQ0\t2#0\t0\n99\tQ0\t2#0\t1\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        ds = load_trec_dataset(corpus, topics, qrels, name="miracl-fr", split="dev")
    assert ds.corpus["1#0"]["title"] == "Paris"
    assert ds.queries == {"10": "capitale de la France"}  # query 11 has no judgments: excluded
    assert ds.qrels == {"10": {"1#0": 1, "2#0": 0}}  # explicit negative kept
    assert "1 judged query id(s)" in caplog.text


def test_corpus_from_a_folder_of_shards(tmp_path: Path) -> None:
    shards = tmp_path / "corpus"
    write_jsonl(shards / "docs-0.jsonl", [{"docid": "a", "title": "A", "text": "first"}])
    with gzip.open(shards / "docs-1.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"docid": "b", "title": "B", "text": "second"}) + "\n")
    (shards / "README.txt").write_text("not a shard")
    assert load_corpus(shards) == {
        "a": {"title": "A", "text": "first"},
        "b": {"title": "B", "text": "second"},
    }
    write_jsonl(shards / "docs-2.jsonl", [{"docid": "a", "text": "again"}])
    with pytest.raises(
        DataError, match=r"docs-2\.jsonl:1: duplicate document id 'a' \(first seen at docs-0\.jsonl:1\)"
    ):
        load_corpus(shards)
    with pytest.raises(DataError, match=r"no \*\.jsonl or \*\.jsonl\.gz corpus files"):
        load_corpus(tmp_path / "corpus" / ".." / "corpus" / "..")


def test_dev_split_uses_dev_when_present(tmp_path: Path) -> None:
    root = make_beir(
        tmp_path / "nfc",
        qrels={"test": [("q1", "d1", 1)], "dev": [("q2", "d2", 1)], "train": [("q3", "d3", 1)]},
    )
    dev = dev_split(root)
    assert dev.split == "dev"
    assert dev.queries == {"q2": "virus cell"}


def test_dev_split_takes_first_20_percent_of_train_in_qrels_order(tmp_path: Path) -> None:
    queries = {f"t{i}": f"query {i}" for i in range(10)}
    order = [
        "t7",
        "t2",
        "t9",
        "t0",
        "t1",
        "t3",
        "t4",
        "t5",
        "t6",
        "t8",
    ]  # qrels order differs from file order
    root = make_beir(
        tmp_path / "scifact",
        docs={"d1": ("", "text one"), "d2": ("", "text two")},
        queries=queries,
        qrels={"test": [("t5", "d1", 1)], "train": [(q, "d1", 1) for q in order]},
    )
    dev = dev_split(root)
    assert list(dev.queries) == ["t7", "t2"]
    assert set(dev.qrels) == {"t7", "t2"}
    assert dev.split == "train[:20%]"
    assert list(dev_split(root, fraction=0.5).queries) == order[:5]


def test_dev_split_without_dev_or_train(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "covid", qrels={"test": [("q1", "d1", 1)]})
    with pytest.raises(DataError, match=r"no dev set .*splits: test"):
        dev_split(root)
    with pytest.raises(DataError, match=r"dev fraction must be in \(0, 1\]"):
        dev_split(root, fraction=0)


def test_second_split_reuses_a_loaded_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskrank.data import beir

    root = make_beir(tmp_path / "nfc", qrels={"test": [("q1", "d1", 1)], "dev": [("q2", "d2", 1)]})
    test = load_beir(root, "test")
    monkeypatch.setattr(beir, "load_corpus", lambda *a, **k: pytest.fail("corpus parsed a second time"))
    dev = load_beir(root, "dev", corpus=test.corpus)
    assert dev.corpus is test.corpus and dev.queries == {"q2": "virus cell"}
