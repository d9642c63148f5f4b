"""Read the unlabeled target corpus that a domain checkpoint is adapted on.

Accepted inputs (one path or several):

* a BEIR ``corpus.jsonl`` (``{"_id", "title", "text"}`` per line), or a BEIR dataset folder
  holding one;
* any JSONL of texts: one object per line with a string ``"text"`` (``"title"`` optional);
* plain ``.txt`` files, each one document, or a folder of ``.txt``/``.jsonl`` files
  (searched recursively, in sorted order).

A JSONL file may be gzip-compressed (``.jsonl.gz``) and may start with a byte-order mark: it is
read by :func:`taskrank.data.formats.read_jsonl`, line by line, so the sha256 recorded in the
model card is computed in the same pass (over the bytes as decompressed), and every error names
the file and line at fault.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.formats import read_jsonl
from ..errors import DataError

log = logging.getLogger(__name__)

#: File suffixes a corpus may consist of.
SUFFIXES = (".jsonl", ".txt", ".jsonl.gz")

PathLike = str | os.PathLike[str]


@dataclass
class CorpusTexts:
    """The documents of a corpus as plain strings, with what identifies the corpus.

    ``sha256`` covers every file's bytes (and, for several files, their names), so two corpora
    with one changed character get different fingerprints.
    """

    texts: list[str]
    files: list[Path]
    sha256: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def sources(self) -> list[str]:
        """The corpus files as strings, in reading order."""
        return [str(p) for p in self.files]

    @property
    def doc_count(self) -> int:
        """Number of documents read (those skipped for having no text excluded)."""
        return len(self.texts)


def _readable(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES)


def corpus_files(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """The files that ``paths`` (a file, a folder or a list of them) stand for, in reading order.

    A folder holding a ``corpus.jsonl`` is a BEIR dataset: only that file is read. Any other
    folder contributes its ``.jsonl`` and ``.txt`` files, recursively and sorted.

    >>> corpus_files("data/scifact")  # doctest: +SKIP
    [PosixPath('data/scifact/corpus.jsonl')]
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise DataError("no corpus given: pass a corpus.jsonl, a JSONL of texts, .txt files or a folder")
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            beir = next((b for b in (path / "corpus.jsonl", path / "corpus.jsonl.gz") if b.is_file()), None)
            if beir is not None:
                files.append(beir)
                continue
            found = sorted(p for p in path.rglob("*") if p.is_file() and _readable(p))
            if not found:
                raise DataError(f"corpus folder {path} holds no .jsonl or .txt files (nor .jsonl.gz)")
            files.extend(found)
        elif path.is_file():
            if not _readable(path):
                raise DataError(
                    f"corpus file {path} has an unsupported type {path.suffix!r}; "
                    f"valid: {', '.join(SUFFIXES)} (or a folder of them)"
                )
            files.append(path)
        else:
            raise DataError(f"corpus {path} does not exist")
    return files


def _jsonl_documents(file: Path, on_bytes: Callable[[bytes], object]) -> Iterator[tuple[int, str, str]]:
    """Yield ``(line number, document id, text)`` for each non-blank line of a JSONL file."""
    for number, obj in read_jsonl(file, on_bytes=on_bytes):
        if "text" not in obj:
            raise DataError(f"{file}:{number}: document has no 'text' key (keys: {sorted(obj)})")
        title, text = obj.get("title") or "", obj["text"]
        if not isinstance(text, str) or not isinstance(title, str):
            raise DataError(f"{file}:{number}: 'title' and 'text' must be strings")
        doc_id = str(obj.get("_id", obj.get("id", f"line {number}")))
        yield number, doc_id, f"{title} {text}".strip()


def _txt_document(file: Path, on_bytes: Callable[[bytes], object]) -> str:
    data = file.read_bytes()
    on_bytes(data)
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not valid UTF-8 at byte {exc.start} ({exc.reason})") from exc


def read_corpus(paths: PathLike | Sequence[PathLike], *, skip_empty: bool = False) -> CorpusTexts:
    """Read every document of a corpus into memory as ``title + " " + text``.

    Args:
        paths: a BEIR ``corpus.jsonl`` or dataset folder, a JSONL of ``{"text": ...}``, ``.txt``
            files (one document each), a folder of those, or a list of any of these.
        skip_empty: skip documents with no text (logged) instead of failing on the first one.

    Raises:
        DataError: a missing or unsupported file, bad JSON, a document with no text (naming the
            file, line and id), or a corpus with no documents at all.

    >>> corpus = read_corpus("data/scifact/corpus.jsonl")  # doctest: +SKIP
    >>> corpus.doc_count, corpus.sha256[:12]  # doctest: +SKIP
    (5183, '...')
    """
    files = corpus_files(paths)
    digest = hashlib.sha256()
    texts: list[str] = []
    skipped = 0
    for file in files:
        if len(files) > 1:
            digest.update(f"\0{file.name}\0".encode())
        if file.suffix.lower() == ".txt":
            documents: Iterator[tuple[str, str]] = iter([(str(file), _txt_document(file, digest.update))])
        else:
            documents = ((f"{file}:{n} (id {i!r})", t) for n, i, t in _jsonl_documents(file, digest.update))
        for where, text in documents:
            if not text:
                if not skip_empty:
                    raise DataError(f"{where}: document has no text; pass --skip-empty (skip_empty=True)")
                skipped += 1
                continue
            texts.append(text)
    if skipped:
        log.warning("skipped %d documents with no text", skipped)
    if not texts:
        where = str(files[0]) if len(files) == 1 else f"{len(files)} files ({files[0]}, ...)"
        raise DataError(f"corpus {where} holds no documents with text")
    return CorpusTexts(
        texts=texts,
        files=files,
        sha256=digest.hexdigest(),
        skipped=skipped,
    )
