"""BEIR datasets: local folders, download by name into a cache, TREC/MIRACL-style sets, dev splits.

A BEIR folder holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{split}.tsv``
(Thakur et al., "BEIR: A Heterogeneous Benchmark for Zero-shot Evaluation of Information
Retrieval Models", NeurIPS 2021 Datasets and Benchmarks).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_dir
from ..errors import DataError
from ..paths import cache_root
from ..progress import progress_bar
from .formats import Corpus, PathLike, Qrels, Queries, load_corpus, load_queries, read_qrels

logger = logging.getLogger(__name__)

BEIR_BASE_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
"""Where the public BEIR zips live; override with ``TASKRANK_BEIR_URL`` or ``base_url=``."""


@dataclass(frozen=True)
class BeirSpec:
    """A downloadable BEIR dataset: its zip's published md5 and the splits it ships."""

    name: str
    md5: str
    splits: tuple[str, ...]


# md5 sums of the zips as published in the BEIR README (beir-cellar/beir)
BEIR_DATASETS: dict[str, BeirSpec] = {
    spec.name: spec
    for spec in (
        BeirSpec("msmarco", "444067daf65d982533ea17ebd59501e4", ("train", "dev", "test")),
        BeirSpec("trec-covid", "ce62140cb23feb9becf6270d0d1fe6d1", ("test",)),
        BeirSpec("nfcorpus", "a89dba18a62ef92f7d323ec890a0d38d", ("train", "dev", "test")),
        BeirSpec("nq", "d4d3d2e48787a744b6f6e691ff534307", ("test",)),
        BeirSpec("hotpotqa", "f412724f78b0d91183a0e86805e16114", ("train", "dev", "test")),
        BeirSpec("fiqa", "17918ed23cd04fb15047f73e6c3bd9d9", ("train", "dev", "test")),
        BeirSpec("arguana", "8ad3e3c2a5867cdced806d6503f29b99", ("test",)),
        BeirSpec("webis-touche2020", "46f650ba5a527fc69e0a6521c5a23563", ("test",)),
        BeirSpec("cqadupstack", "4e41456d7df8ee7760a7f866133bda78", ("test",)),
        BeirSpec("quora", "18fb154900ba42a600f84b839c173167", ("dev", "test")),
        BeirSpec("dbpedia-entity", "c2a39eb420a3164af735795df012ac2c", ("dev", "test")),
        BeirSpec("scidocs", "38121350fc3a4d2f48850f6aff52e4a9", ("test",)),
        BeirSpec("fever", "5a818580227bfb4b35bb6fa46d9b6c03", ("train", "dev", "test")),
        BeirSpec("climate-fever", "8b66f0a9126c521bae2bde127b4dc99d", ("test",)),
        BeirSpec("scifact", "5f7d1de60b170fc8027bb7898e2efca1", ("train", "test")),
    )
}

_COMPLETE = ".taskrank-complete"


@dataclass
class BeirDataset:
    """One split of a dataset: the whole corpus, the split's judged queries and their qrels."""

    corpus: Corpus
    queries: Queries
    qrels: Qrels
    name: str
    split: str
    path: Path | None = None
    notes: list[str] = field(default_factory=list)


def default_cache_dir() -> Path:
    """``$TASKRANK_CACHE/beir`` if set, else ``~/.cache/taskrank/beir``."""
    return cache_root() / "beir"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # an integrity check, not security
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, progress: bool) -> None:
    """Stream ``url`` into ``dest``; a short read (fewer bytes than Content-Length) is a DataError."""
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise DataError(f"cannot download {url}: {exc}") from exc
    with response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        description = f"download {Path(url).name}"
        with progress_bar(total, description, progress, download=True, transient=True) as bar:
            while True:
                try:
                    block = response.read(1 << 20)
                except (OSError, http.client.HTTPException) as exc:
                    raise DataError(f"download of {url} broke off after {received} bytes: {exc}") from exc
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.advance(len(block))
    if total is not None and received != total:
        raise DataError(f"download of {url} is incomplete: {received} of {total} bytes")


def _extract(archive: Path, out: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DataError(f"{archive}: member {bad} is corrupt")
            root = out.resolve()
            for member in zf.infolist():
                target = (out / member.filename).resolve()
                if target != root and root not in target.parents:
                    raise DataError(f"{archive}: member {member.filename!r} would extract outside {out}")
            zf.extractall(out)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive}: not a valid zip archive ({exc})") from exc


def download_beir(
    name: str,
    cache_dir: PathLike | None = None,
    *,
    base_url: str | None = None,
    retries: int = 1,
    progress: bool = True,
) -> Path:
    """Download and unpack the public BEIR zip of ``name`` once; return the dataset folder.

    The zip's md5 is checked against the published sum; a partial or corrupt download is
    deleted and fetched again up to ``retries`` more times, then reported. The unpacked folder
    only appears (atomically) after a verified download, so a half-finished one is never used.

    >>> folder = download_beir("scifact")  # doctest: +SKIP
    """
    spec = _spec(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache / spec.name
    if (final / _COMPLETE).is_file():
        return _dataset_root(final)
    base = (base_url or os.environ.get("TASKRANK_BEIR_URL") or BEIR_BASE_URL).rstrip("/")
    url = f"{base}/{spec.name}.zip"
    cache.mkdir(parents=True, exist_ok=True)
    part = cache / f"{spec.name}.zip.part"
    problem = ""
    for attempt in range(retries + 1):
        part.unlink(missing_ok=True)
        try:
            _fetch(url, part, progress)
        except DataError as exc:
            problem = str(exc)
            logger.warning("attempt %d of %d: %s", attempt + 1, retries + 1, problem)
            continue
        digest = _md5(part)
        if digest != spec.md5:
            problem = (
                f"{url}: md5 {digest} does not match the published {spec.md5} (partial or corrupt download)"
            )
            logger.warning("attempt %d of %d: %s", attempt + 1, retries + 1, problem)
            continue
        try:
            with atomic_dir(final, overwrite=True) as tmp:
                _extract(part, tmp)
                (tmp / _COMPLETE).write_text(f"{spec.md5}\n", encoding="utf-8")
        finally:
            part.unlink(missing_ok=True)
        return _dataset_root(final)
    part.unlink(missing_ok=True)
    raise DataError(
        f"could not download BEIR dataset {spec.name!r} after {retries + 1} attempt(s): {problem}"
    )


def _spec(name: str) -> BeirSpec:
    spec = BEIR_DATASETS.get(name.lower())
    if spec is None:
        raise DataError(
            f"unknown BEIR dataset {name!r} (not a local folder either); "
            f"valid names: {', '.join(sorted(BEIR_DATASETS))}"
        )
    return spec


def _dataset_root(folder: Path) -> Path:
    """The folder holding ``corpus.jsonl`` (the zips wrap everything in a ``{name}/`` folder)."""
    if (folder / "corpus.jsonl").is_file() or (folder / "corpus.jsonl.gz").is_file():
        return folder
    candidates = sorted({p.parent for p in folder.glob("*/corpus.jsonl*")})
    if len(candidates) == 1:
        return candidates[0]
    nested = sorted({p.parent for p in folder.glob("*/*/corpus.jsonl*")})
    if len(candidates) > 1 or nested:
        names = ", ".join(str(p) for p in (candidates or nested)[:5])
        raise DataError(f"{folder} holds several datasets (e.g. CQADupStack's forums); load one of: {names}")
    raise DataError(f"{folder}: no corpus.jsonl found (not a BEIR folder)")


def resolve_dataset(
    path_or_name: PathLike, cache_dir: PathLike | None = None, *, progress: bool = True
) -> Path:
    """A local BEIR folder as is, or a BEIR name downloaded into the cache.

    >>> resolve_dataset("scifact")  # doctest: +SKIP
    PosixPath('/home/me/.cache/taskrank/beir/scifact/scifact')
    """
    path = Path(path_or_name)
    if path.is_dir():
        return _dataset_root(path)
    if path.exists():
        raise DataError(
            f"{path} is a file; a BEIR dataset is a folder with corpus.jsonl, queries.jsonl, qrels/"
        )
    return download_beir(str(path_or_name), cache_dir, progress=progress)


def available_splits(path_or_name: PathLike, cache_dir: PathLike | None = None) -> list[str]:
    """The splits a dataset has qrels for.

    >>> available_splits("scifact")  # doctest: +SKIP
    ['test', 'train']
    """
    root = resolve_dataset(path_or_name, cache_dir)
    return sorted(p.name.removesuffix(".tsv") for p in (root / "qrels").glob("*.tsv"))


def _first_existing(root: Path, *names: str) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: missing {names[0]}")


def restrict_to_judged(
    queries: Queries, qrels: Qrels, corpus: Corpus | None = None, *, source: str = "qrels"
) -> tuple[Queries, Qrels, list[str]]:
    """Keep only queries that have judgments; drop (with a warning and a count) judgments of
    queries that do not exist. Judged documents missing from the corpus are counted, not dropped
    (they still count in the ideal ranking of nDCG and in recall)."""
    notes: list[str] = []
    unknown = [qid for qid in qrels if qid not in queries]
    if unknown:
        msg = (
            f"{source}: {len(unknown)} judged query id(s) are not in the queries "
            f"and were excluded (e.g. {unknown[0]!r})"
        )
        logger.warning(msg)
        notes.append(msg)
    kept_qrels = {qid: judged for qid, judged in qrels.items() if qid in queries}
    if not kept_qrels:
        raise DataError(f"{source}: none of the judged queries exist in the queries file")
    kept_queries = {qid: queries[qid] for qid in kept_qrels}
    if corpus is not None:
        missing = sum(1 for judged in kept_qrels.values() for doc in judged if doc not in corpus)
        if missing:
            msg = f"{source}: {missing} judgment(s) name documents that are not in the corpus"
            logger.warning(msg)
            notes.append(msg)
    return kept_queries, kept_qrels, notes


def load_beir(
    path_or_name: PathLike,
    split: str = "test",
    cache_dir: PathLike | None = None,
    *,
    progress: bool = True,
    corpus: Corpus | None = None,
) -> BeirDataset:
    """Load one split of a BEIR dataset from a local folder, or by name (downloaded once into
    ``cache_dir``, default ``~/.cache/taskrank/beir``).

    ``.queries`` holds only the split's judged queries, in the order of the qrels file.
    ``corpus``: the dataset's corpus when already loaded (for another split), so that a second
    split does not parse ``corpus.jsonl`` again.

    >>> ds = load_beir("scifact", split="test")  # doctest: +SKIP
    >>> len(ds.queries), len(ds.corpus)  # doctest: +SKIP
    (300, 5183)
    """
    spec = BEIR_DATASETS.get(str(path_or_name).lower())
    if spec is not None and not Path(path_or_name).is_dir() and split not in spec.splits:
        # fail before a download that could not serve the split anyway
        hint = " (for a dev set without a dev split use dev_split())" if split == "dev" else ""
        raise DataError(
            f"BEIR dataset {spec.name!r}: unknown split {split!r}; "
            f"valid splits: {', '.join(spec.splits)}{hint}"
        )
    root = resolve_dataset(path_or_name, cache_dir, progress=progress)
    qrels_file = root / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        valid = sorted(p.name.removesuffix(".tsv") for p in (root / "qrels").glob("*.tsv"))
        hint = " (for a dev set without a dev split use dev_split())" if split == "dev" else ""
        raise DataError(f"{root}: unknown split {split!r}; valid splits: {', '.join(valid) or 'none'}{hint}")
    if corpus is None:
        corpus = load_corpus(_first_existing(root, "corpus.jsonl", "corpus.jsonl.gz"))
    all_queries = load_queries(_first_existing(root, "queries.jsonl", "queries.jsonl.gz"), format="jsonl")
    queries, qrels, notes = restrict_to_judged(
        all_queries, read_qrels(qrels_file), corpus, source=str(qrels_file)
    )
    return BeirDataset(corpus, queries, qrels, name=root.name, split=split, path=root, notes=notes)


def load_trec_dataset(
    corpus: PathLike, queries: PathLike, qrels: PathLike, *, name: str | None = None, split: str = "test"
) -> BeirDataset:
    """A dataset from a JSONL corpus plus TREC/TSV topics and TREC qrels (MIRACL style, whose
    qrels hold graded positives and explicit negatives, label 0).

    >>> ds = load_trec_dataset("corpus.jsonl.gz", "topics.tsv", "qrels.tsv")  # doctest: +SKIP
    """
    docs = load_corpus(corpus)
    kept_queries, kept_qrels, notes = restrict_to_judged(
        load_queries(queries), read_qrels(qrels), docs, source=str(qrels)
    )
    return BeirDataset(
        docs, kept_queries, kept_qrels, name=name or Path(corpus).parent.name, split=split, notes=notes
    )


def dev_split(
    path_or_name: PathLike, *, fraction: float = 0.2, cache_dir: PathLike | None = None, progress: bool = True
) -> BeirDataset:
    """The dev set the paper tunes on: the dataset's ``dev`` split when it has one (NFCorpus);
    otherwise the first ``fraction`` of its ``train`` queries, in qrels order (SciFact: 20%).
    A dataset with neither has no dev set (the paper then fixes fusion weights at 0.5/0.5).

    >>> dev = dev_split("scifact")  # doctest: +SKIP
    >>> dev.split  # doctest: +SKIP
    'train[:20%]'
    """
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"dev fraction must be in (0, 1], got {fraction}")
    root = resolve_dataset(path_or_name, cache_dir, progress=progress)
    splits = available_splits(root)
    if "dev" in splits:
        return load_beir(root, "dev")
    if "train" not in splits:
        raise DataError(
            f"{root}: no dev set (neither a dev nor a train split; splits: {', '.join(splits) or 'none'}); "
            "use fixed fusion weights instead of tuning"
        )
    return first_fraction(load_beir(root, "train"), fraction)


def first_fraction(dataset: BeirDataset, fraction: float) -> BeirDataset:
    """The first ``fraction`` of a split's queries, in qrels order: the paper's dev rule for
    datasets without a dev split (SciFact: the first 20% of train)."""
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"dev fraction must be in (0, 1], got {fraction}")
    count = max(1, int(len(dataset.queries) * fraction))
    chosen = list(dataset.queries)[:count]
    percent = f"{fraction * 100:g}%"
    return BeirDataset(
        dataset.corpus,
        {qid: dataset.queries[qid] for qid in chosen},
        {qid: dataset.qrels[qid] for qid in chosen},
        name=dataset.name,
        split=f"{dataset.split}[:{percent}]",
        path=dataset.path,
        notes=[
            *dataset.notes,
            f"dev set = first {count} of {len(dataset.queries)} {dataset.split} queries ({percent})",
        ],
    )
