"""Readers and writers of the on-disk formats: BEIR JSONL, TREC runs, qrels and topics.

Every reader reports a bad line as ``file:line: what is wrong`` (a :class:`DataError`),
decodes strictly as UTF-8, refuses duplicate ids and ids holding whitespace (which a TREC run
could not hold: they fail when read, not after the scoring), and accepts gzip-compressed files
(``*.gz``) transparently, as MIRACL ships its corpus that way.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ..atomic import atomic_file
from ..errors import ConfigError, DataError

logger = logging.getLogger(__name__)

Corpus = dict[str, dict[str, str]]
"""doc id -> {"title": ..., "text": ...}"""
Queries = dict[str, str]
"""query id -> query text"""
Qrels = dict[str, dict[str, int]]
"""query id -> doc id -> graded relevance (may be 0 or negative for explicit negatives)"""
Run = dict[str, dict[str, float]]
"""query id -> doc id -> score (higher is better)"""

PathLike = str | os.PathLike[str]

# keys under which the id of a JSONL record is found, in order of preference (BEIR, MIRACL, others)
_ID_KEYS = ("_id", "docid", "id", "query_id", "doc_id")


def doc_text(doc: Mapping[str, str]) -> str:
    """The text a model sees for a document: ``title + " " + text``, stripped (as in BEIR).

    >>> doc_text({"title": "Aspirin", "text": "reduces fever."})
    'Aspirin reduces fever.'
    """
    return (f"{doc.get('title') or ''} {doc.get('text') or ''}").strip()


def read_lines(
    path: PathLike, *, on_bytes: Callable[[bytes], object] | None = None
) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line without its newline)`` of a text file, gzip-compressed when its
    name ends in ``.gz``; a UTF-8 byte-order mark on the first line is dropped.

    Bytes that are not UTF-8, or a file that cannot be read, are a :class:`DataError` naming the
    file (and line). ``on_bytes``, when given, is called with every line's raw bytes as read
    (after decompression), such as a hash's ``update`` that fingerprints the file in the same pass.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if on_bytes is not None:
                    on_bytes(raw)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{path}:{number}: not valid UTF-8 "
                        f"(byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                    ) from exc
                if number == 1:
                    line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not content
                yield number, line.rstrip("\r\n")
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc


def read_jsonl(
    path: PathLike, *, on_bytes: Callable[[bytes], object] | None = None
) -> Iterator[tuple[int, dict[str, object]]]:
    """Yield ``(line number, object)`` for each non-blank line of a JSONL file (``.gz`` too).

    A line that is not JSON, or not a JSON object, is a :class:`DataError` naming the file and
    line. ``on_bytes`` is as in :func:`read_lines`.

    >>> for number, record in read_jsonl("scifact/corpus.jsonl.gz"):  # doctest: +SKIP
    ...     print(number, record["_id"])
    """
    for number, line in read_lines(path, on_bytes=on_bytes):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def _record_id(path: Path, number: int, record: dict) -> str:
    for key in _ID_KEYS:
        if key in record:
            value = record[key]
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
                return _checked_id(path, number, str(value))
            raise DataError(f"{path}:{number}: id field {key!r} must be a non-empty string, got {value!r}")
    raise DataError(f"{path}:{number}: record has no id field (expected one of {', '.join(_ID_KEYS)})")


def _checked_id(path: Path, number: int, value: str, what: str = "id") -> str:
    """``value``, refused when it holds whitespace (a space, tab or newline): TREC runs and qrels
    separate their fields by whitespace, so such an id could never be written or read back."""
    if any(ch.isspace() for ch in value):
        raise DataError(
            f"{path}:{number}: {what} {value!r} contains whitespace, which TREC runs and qrels cannot "
            "hold; rename it"
        )
    return value


def _string_field(path: Path, number: int, record: dict, key: str, required: bool) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise DataError(f"{path}:{number}: record has no {key!r} field")
        return ""
    if not isinstance(value, str):
        raise DataError(f"{path}:{number}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def load_corpus(path: PathLike) -> Corpus:
    """Read a JSONL corpus (BEIR ``corpus.jsonl`` or MIRACL-style, optionally ``.gz``), or a
    folder of such shards (``*.jsonl``/``*.jsonl.gz``, read in name order, as MIRACL ships them).

    Each line is an object with an id (``_id``, ``docid`` or ``id``), a ``text`` and an
    optional ``title``. Duplicate ids (also across shards) and an empty corpus are errors.

    >>> corpus = load_corpus("scifact/corpus.jsonl")  # doctest: +SKIP
    >>> corpus["4983"]["title"]  # doctest: +SKIP
    """
    source = Path(path)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
        if not files:
            raise DataError(f"{source}: no *.jsonl or *.jsonl.gz corpus files in this folder")
    else:
        files = [source]
    corpus: Corpus = {}
    first_seen: dict[str, str] = {}
    for file in files:
        for number, record in read_jsonl(file):
            doc_id = _record_id(file, number, record)
            if doc_id in corpus:
                raise DataError(
                    f"{file}:{number}: duplicate document id {doc_id!r} (first seen {first_seen[doc_id]})"
                )
            corpus[doc_id] = {
                "title": _string_field(file, number, record, "title", required=False),
                "text": _string_field(file, number, record, "text", required=True),
            }
            first_seen[doc_id] = f"on line {number}" if len(files) == 1 else f"at {file.name}:{number}"
    if not corpus:
        raise DataError(f"{source}: the corpus is empty (no documents)")
    return corpus


_TOP_RE = re.compile(r"<top>(.*?)</top>", re.DOTALL | re.IGNORECASE)
_NUM_RE = re.compile(r"<num>\s*(?:Number:)?\s*([^\s<]+)", re.IGNORECASE)
_TITLE_RE = re.compile(r"<title>\s*(?:Topic:)?(.*?)(?=</?\w+>|\Z)", re.DOTALL | re.IGNORECASE)
_XML_TOPIC_RE = re.compile(r"<topic\s+number=\"([^\"]+)\"[^>]*>(.*?)</topic>", re.DOTALL | re.IGNORECASE)
_XML_QUERY_RE = re.compile(r"<(?:query|title)>(.*?)</(?:query|title)>", re.DOTALL | re.IGNORECASE)


def load_queries(path: PathLike, format: str = "auto") -> Queries:
    """Read queries: BEIR JSONL (``_id``/``text``), TSV topics (``qid<TAB>text``, as MIRACL
    ships them) or TREC SGML/XML topics (``<top><num>…<title>…``; the title is the query).

    ``format`` is ``"auto"`` (by extension and content), ``"jsonl"``, ``"tsv"`` or ``"trec"``.

    >>> queries = load_queries("topics.miracl-v1.0-fr-dev.tsv")  # doctest: +SKIP
    """
    file = Path(path)
    formats = ("auto", "jsonl", "tsv", "trec")
    if format not in formats:
        raise DataError(f"unknown queries format {format!r}; valid: {', '.join(formats)}")
    if format == "auto":
        name = file.name.lower().removesuffix(".gz")
        if name.endswith((".jsonl", ".json")):
            format = "jsonl"
        elif name.endswith(".tsv"):
            format = "tsv"
        else:
            head = next((line for _, line in read_lines(file) if line.strip()), "")
            format = "trec" if head.lstrip().lower().startswith(("<top", "<topics", "<?xml")) else "tsv"
    if format == "jsonl":
        return _queries_jsonl(file)
    if format == "tsv":
        return _queries_tsv(file)
    return _queries_trec(file)


def _add_query(
    queries: Queries, first_line: dict[str, int], file: Path, number: int, qid: str, text: str
) -> None:
    if qid in queries:
        raise DataError(f"{file}:{number}: duplicate query id {qid!r} (first seen on line {first_line[qid]})")
    queries[qid] = text
    first_line[qid] = number


def _queries_jsonl(file: Path) -> Queries:
    queries: Queries = {}
    first_line: dict[str, int] = {}
    for number, record in read_jsonl(file):
        qid = _record_id(file, number, record)
        key = "text" if "text" in record else "query" if "query" in record else "text"
        _add_query(queries, first_line, file, number, qid, _string_field(file, number, record, key, True))
    if not queries:
        raise DataError(f"{file}: no queries")
    return queries


def _queries_tsv(file: Path) -> Queries:
    queries: Queries = {}
    first_line: dict[str, int] = {}
    for number, line in read_lines(file):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip():
            raise DataError(f"{file}:{number}: expected 'query id<TAB>query text', got {line[:80]!r}")
        qid = _checked_id(file, number, parts[0].strip(), "query id")
        _add_query(queries, first_line, file, number, qid, "\t".join(parts[1:]).strip())
    if not queries:
        raise DataError(f"{file}: no queries")
    return queries


def _queries_trec(file: Path) -> Queries:
    text = "\n".join(line for _, line in read_lines(file))
    queries: Queries = {}
    first_line: dict[str, int] = {}
    for match in _TOP_RE.finditer(text):
        body = match.group(1)
        number = text.count("\n", 0, match.start()) + 1
        num = _NUM_RE.search(body)
        title = _TITLE_RE.search(body)
        if num is None or title is None:
            raise DataError(f"{file}:{number}: <top> block without <num> or <title>")
        _add_query(queries, first_line, file, number, num.group(1), " ".join(title.group(1).split()))
    for match in _XML_TOPIC_RE.finditer(text):
        number = text.count("\n", 0, match.start()) + 1
        query = _XML_QUERY_RE.search(match.group(2))
        if query is None:
            raise DataError(f"{file}:{number}: <topic> without <query> or <title>")
        qid = _checked_id(file, number, match.group(1).strip(), "query id")
        _add_query(queries, first_line, file, number, qid, " ".join(query.group(1).split()))
    if not queries:
        raise DataError(f"{file}: no TREC topics found (expected <top>…</top> or <topic number=…> blocks)")
    return queries


def _parse_int(file: Path, number: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        try:
            as_float = float(value)
        except ValueError:
            raise DataError(f"{file}:{number}: {what} must be an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise DataError(f"{file}:{number}: {what} must be an integer, got {value!r}") from None
        return int(as_float)


_QRELS_HEADERS = {"query-id", "query_id", "qid", "query"}


def read_qrels(path: PathLike) -> Qrels:
    """Read relevance judgments: TREC (``qid iter docid rel``) or BEIR TSV (``query-id corpus-id score``
    with its header line). Graded and negative labels are kept as they are.

    The same (query, document) pair judged twice with different labels is an error.

    >>> qrels = read_qrels("scifact/qrels/test.tsv")  # doctest: +SKIP
    """
    file = Path(path)
    qrels: Qrels = {}
    seen: dict[tuple[str, str], int] = {}
    for number, line in read_lines(file):
        parts = _fields(file, number, line, (3, 4))
        if not parts:
            continue
        if (
            number == 1
            and len(parts) == 3
            and parts[0].lower() in _QRELS_HEADERS
            and not _is_number(parts[2])
        ):
            continue  # BEIR header: query-id corpus-id score
        if len(parts) == 4:
            qid, _, doc_id, label = parts
        elif len(parts) == 3:
            qid, doc_id, label = parts
        else:
            raise DataError(
                f"{file}:{number}: expected 'qid iter docid rel' (TREC) or 'qid docid rel' (BEIR), "
                f"got {len(parts)} fields: {line[:80]!r}"
            )
        rel = _parse_int(file, number, label, "relevance")
        judged = qrels.setdefault(qid, {})
        if doc_id in judged and judged[doc_id] != rel:
            raise DataError(
                f"{file}:{number}: query {qid!r} document {doc_id!r} judged {rel} here "
                f"but {judged[doc_id]} on line {seen[(qid, doc_id)]}"
            )
        judged[doc_id] = rel
        seen.setdefault((qid, doc_id), number)
    if not qrels:
        raise DataError(f"{file}: no judgments")
    return qrels


def _fields(file: Path, number: int, line: str, counts: tuple[int, ...]) -> list[str]:
    """The whitespace-separated fields of a qrels or run line. A tab-separated line whose tab
    fields are as many as the format wants, but hold spaces, carries ids with spaces: splitting it
    on all whitespace would shift its columns silently, so it is refused, naming the id."""
    parts = line.split()
    if "\t" in line:
        cells = [cell.strip() for cell in line.strip().split("\t")]
        if len(cells) in counts and len(cells) != len(parts):
            spaced = next((cell for cell in cells if any(ch.isspace() for ch in cell)), None)
            if spaced is not None:
                _checked_id(file, number, spaced)
    return parts


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_run(path: PathLike) -> Run:
    """Read a TREC run (``qid Q0 docid rank score tag``); any other first-stage system
    (Pyserini, Elasticsearch) that writes this format can stand in for BM25.

    Duplicate (query, document) pairs and non-finite scores are errors.

    >>> run = read_run("bm25.trec")  # doctest: +SKIP
    """
    file = Path(path)
    run: Run = {}
    for number, line in read_lines(file):
        parts = _fields(file, number, line, (6,))
        if not parts:
            continue
        if len(parts) != 6:
            raise DataError(
                f"{file}:{number}: expected 6 fields 'qid Q0 docid rank score tag', "
                f"got {len(parts)}: {line[:80]!r}"
            )
        qid, _, doc_id, _, score_text, _ = parts
        try:
            score = float(score_text)
        except ValueError:
            raise DataError(f"{file}:{number}: score must be a number, got {score_text!r}") from None
        if not math.isfinite(score):
            raise DataError(f"{file}:{number}: score is not finite ({score_text})")
        scores = run.setdefault(qid, {})
        if doc_id in scores:
            raise DataError(f"{file}:{number}: document {doc_id!r} appears twice for query {qid!r}")
        scores[doc_id] = score
    if not run:
        raise DataError(f"{file}: the run is empty")
    return run


def ranked(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """Documents in the order trec_eval ranks them: score descending, ties by doc id descending.

    This is trec_eval's own comparison (``comp_sim_docno`` in ``form_res_rels.c``: higher
    ``sim`` first, then ``strcmp(docno2, docno1)``); the rank column of a run file plays no part.
    Every ordering and every top-k cut in taskrank goes through this function (see
    :func:`top_k`), so the documents re-ranked, fused, evaluated and written are the same ones.

    >>> ranked({"a": 1.0, "b": 1.0, "c": 2.0})
    [('c', 2.0), ('b', 1.0), ('a', 1.0)]
    """
    return sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)


def top_k(run: Mapping[str, Mapping[str, float]], k: int | None) -> Run:
    """Each query's ``k`` best documents, in trec_eval's order (:func:`ranked`); all of them
    when ``k`` is None. A tie that straddles the cutoff keeps the larger doc ids, as trec_eval
    would rank them. The one top-k cut of taskrank: the re-ranker's candidates, the first stage
    a re-ranked run is fused with, ``taskrank fuse --depth`` and the runner's first stage.

    >>> top_k({"q1": {"a": 1.0, "b": 1.0, "c": 2.0}}, 2)
    {'q1': {'c': 2.0, 'b': 1.0}}
    """
    if k is None:
        return {qid: dict(ranked(scores)) for qid, scores in run.items()}
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"top-k cutoff must be an integer >= 1, got {k!r}")
    return {qid: dict(ranked(scores)[:k]) for qid, scores in run.items()}


def write_run(run: Mapping[str, Mapping[str, float]], path: PathLike, tag: str = "taskrank") -> None:
    """Write ``run`` atomically in TREC format, each query ranked as trec_eval would rank it.

    >>> write_run({"q1": {"d1": 2.0, "d2": 1.0}}, "run.trec")  # doctest: +SKIP
    """
    if not tag or any(ch.isspace() for ch in tag):
        raise DataError(f"run tag must be a non-empty word without spaces, got {tag!r}")
    with atomic_file(path) as handle:
        for qid, scores in run.items():
            _check_id(qid, "query", path)
            for rank, (doc_id, score) in enumerate(ranked(scores), start=1):
                _check_id(doc_id, "document", path)
                value = float(score)
                if not math.isfinite(value):
                    raise DataError(
                        f"{path}: score of query {qid!r} document {doc_id!r} is not finite ({value})"
                    )
                handle.write(f"{qid} Q0 {doc_id} {rank} {value!r} {tag}\n")


def write_qrels(qrels: Mapping[str, Mapping[str, int]], path: PathLike) -> None:
    """Write ``qrels`` atomically in TREC format (``qid 0 docid rel``).

    >>> write_qrels({"q1": {"d1": 1}}, "qrels.txt")  # doctest: +SKIP
    """
    with atomic_file(path) as handle:
        for qid, judged in qrels.items():
            _check_id(qid, "query", path)
            for doc_id, rel in judged.items():
                _check_id(doc_id, "document", path)
                handle.write(f"{qid} 0 {doc_id} {int(rel)}\n")


def _check_id(value: str, what: str, path: PathLike) -> None:
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise DataError(
            f"{path}: {what} id {value!r} cannot be written in TREC format (empty or contains spaces)"
        )
