"""Reading the unlabeled corpus of `taskrank adapt`: formats, fingerprints and every bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from taskrank.adapt import corpus_files, read_corpus
from taskrank.errors import DataError


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_beir_corpus_joins_title_and_text_and_hashes_the_bytes(tmp_path: Path) -> None:
    file = _jsonl(
        tmp_path / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Gene therapy", "text": "A trial of dose."},
            {"_id": "d2", "title": "", "text": "  Only text.  "},
            {"_id": "d3", "title": "Only title", "text": ""},
        ],
    )
    corpus = read_corpus(file)
    assert corpus.texts == ["Gene therapy A trial of dose.", "Only text.", "Only title"]
    assert corpus.doc_count == 3
    assert corpus.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert corpus.files == [file]


def test_beir_folder_reads_only_its_corpus_jsonl(tmp_path: Path) -> None:
    _jsonl(tmp_path / "corpus.jsonl", [{"_id": "1", "text": "cell"}])
    _jsonl(tmp_path / "queries.jsonl", [{"_id": "q", "text": "not a document"}])
    assert corpus_files(tmp_path) == [tmp_path / "corpus.jsonl"]
    assert read_corpus(tmp_path).texts == ["cell"]


def test_jsonl_of_texts_skips_blank_lines(tmp_path: Path) -> None:
    file = tmp_path / "texts.jsonl"
    file.write_text('{"text": "first"}\n\n   \n{"text": "second"}\n', encoding="utf-8")
    assert read_corpus(file).texts == ["first", "second"]


def test_gzip_and_byte_order_mark_are_read_like_plain_jsonl(tmp_path: Path) -> None:
    import gzip

    rows = [{"_id": "d1", "title": "Gene", "text": "therapy"}, {"_id": "d2", "text": "dose"}]
    for folder in ("plain", "packed", "shards"):
        (tmp_path / folder).mkdir()
    plain = _jsonl(tmp_path / "plain" / "corpus.jsonl", rows)
    packed = tmp_path / "packed" / "corpus.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    marked = tmp_path / "marked.jsonl"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    expected = ["Gene therapy", "dose"]
    gz = read_corpus(packed)
    assert gz.texts == expected and gz.files == [packed]
    # the fingerprint covers the text, so the compressed corpus has the plain one's
    assert gz.sha256 == read_corpus(plain).sha256
    assert read_corpus(marked).texts == expected
    # a BEIR folder whose corpus is compressed, and a folder holding a compressed shard
    assert corpus_files(packed.parent) == [packed]
    (tmp_path / "shards" / "part-0.jsonl.gz").write_bytes(packed.read_bytes())
    assert read_corpus(tmp_path / "shards").texts == expected


def test_folder_of_text_files_is_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("third document\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first document", encoding="utf-8")
    (tmp_path / "a2.jsonl").write_text('{"text": "second document"}\n', encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    corpus = read_corpus(tmp_path)
    assert corpus.texts == ["first document", "second document", "third document"]
    assert [p.name for p in corpus.files] == ["a.txt", "a2.jsonl", "z.txt"]


def test_list_of_paths_and_changed_content_changes_the_sha256(tmp_path: Path) -> None:
    one = tmp_path / "one.txt"
    two = tmp_path / "two.txt"
    one.write_text("alpha", encoding="utf-8")
    two.write_text("beta", encoding="utf-8")
    before = read_corpus([one, two])
    assert before.texts == ["alpha", "beta"]
    two.write_text("betb", encoding="utf-8")
    after = read_corpus([one, two])
    assert after.sha256 != before.sha256
    # the same bytes split differently across files is another corpus
    three = tmp_path / "three.txt"
    three.write_text("alphabetb", encoding="utf-8")
    assert read_corpus(three).sha256 != after.sha256


def test_empty_corpus_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "corpus.jsonl"
    file.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"corpus\.jsonl holds no documents"):
        read_corpus(file)


def test_document_without_text_names_file_line_and_id(tmp_path: Path) -> None:
    file = _jsonl(
        tmp_path / "corpus.jsonl", [{"_id": "ok", "text": "fine"}, {"_id": "d7", "title": " ", "text": ""}]
    )
    with pytest.raises(DataError, match=r"corpus\.jsonl:2 \(id 'd7'\): document has no text"):
        read_corpus(file)


def test_skip_empty_counts_the_skipped_documents(tmp_path: Path) -> None:
    file = _jsonl(tmp_path / "corpus.jsonl", [{"text": ""}, {"text": "kept"}, {"title": "", "text": " "}])
    corpus = read_corpus(file, skip_empty=True)
    assert corpus.texts == ["kept"]
    assert corpus.skipped == 2


def test_only_empty_documents_is_an_empty_corpus_even_when_skipping(tmp_path: Path) -> None:
    file = _jsonl(tmp_path / "corpus.jsonl", [{"text": ""}])
    with pytest.raises(DataError, match="holds no documents"):
        read_corpus(file, skip_empty=True)


def test_empty_text_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("words", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.txt: document has no text"):
        read_corpus(tmp_path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "cell"', r"texts\.jsonl:2: malformed JSON"),
        ('["cell"]', r"texts\.jsonl:2: expected a JSON object, got list"),
        ('{"body": "cell"}', r"texts\.jsonl:2: document has no 'text' key \(keys: \['body'\]\)"),
        ('{"text": 5}', r"texts\.jsonl:2: 'title' and 'text' must be strings"),
        ('{"title": ["x"], "text": "y"}', r"texts\.jsonl:2: 'title' and 'text' must be strings"),
    ],
)
def test_malformed_jsonl_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    file = tmp_path / "texts.jsonl"
    file.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_corpus(file)


def test_invalid_utf8_is_named(tmp_path: Path) -> None:
    file = tmp_path / "texts.jsonl"
    file.write_bytes(b'{"text": "fine"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"texts\.jsonl:2: not valid UTF-8"):
        read_corpus(file)
    txt = tmp_path / "bad.txt"
    txt.write_bytes(b"ok \xff")
    with pytest.raises(DataError, match=r"bad\.txt: not valid UTF-8 at byte 3"):
        read_corpus(txt)


def test_missing_unsupported_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothing\.jsonl does not exist"):
        read_corpus(tmp_path / "nothing.jsonl")
    csv = tmp_path / "corpus.csv"
    csv.write_text("id,text\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"corpus\.csv has an unsupported type '\.csv'; valid: \.jsonl, \.txt"
    ):
        read_corpus(csv)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"folder .*empty holds no \.jsonl or \.txt files"):
        read_corpus(empty)
    with pytest.raises(DataError, match="no corpus given"):
        read_corpus([])
