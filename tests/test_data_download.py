"""BEIR by name: download from a local HTTP server (never the internet), md5 check, retries, cache."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from _data_fixtures import make_beir
from taskrank.data import BEIR_DATASETS, BeirSpec, available_splits, download_beir, load_beir
from taskrank.errors import DataError


def _zip_of(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, f"toy/{path.relative_to(folder)}")  # the BEIR zips wrap files in {name}/
    return buffer.getvalue()


class _Server:
    """Serves /toy.zip from a queue of behaviours: 'good', 'corrupt', 'truncated', 'missing'."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.plan: list[str] = []
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                mode = server.plan.pop(0) if server.plan else "good"
                if mode == "missing" or self.path != "/toy.zip":
                    self.send_error(404)
                    return
                body = server.payload
                if mode == "corrupt":
                    body = body[:100] + bytes(b ^ 0xFF for b in body[100:200]) + body[200:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if mode == "truncated" else body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def toy_server(tmp_path: Path, monkeypatch) -> Iterator[_Server]:
    payload = _zip_of(make_beir(tmp_path / "src"))
    monkeypatch.setitem(
        BEIR_DATASETS, "toy", BeirSpec("toy", hashlib.md5(payload).hexdigest(), ("test", "train"))
    )
    server = _Server(payload)
    monkeypatch.setenv("TASKRANK_BEIR_URL", server.url)
    yield server
    server.close()


def test_download_verifies_and_caches(toy_server: _Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ds = load_beir("toy", split="test", cache_dir=cache, progress=True)
    assert ds.name == "toy" and set(ds.queries) == {"q1", "q2"} and len(ds.corpus) == 3
    assert toy_server.requests == 1
    assert not list(cache.glob("*.part"))  # the verified zip is not left behind
    again = load_beir("toy", split="train", cache_dir=cache)  # second use: from the cache
    assert again.queries == {"q3": "football"}
    assert toy_server.requests == 1
    assert available_splits("toy", cache_dir=cache) == ["test", "train"]


def test_corrupt_download_is_retried(toy_server: _Server, tmp_path: Path) -> None:
    toy_server.plan = ["corrupt"]
    root = download_beir("toy", tmp_path / "cache", retries=1, progress=False)
    assert (root / "corpus.jsonl").is_file() and toy_server.requests == 2


def test_truncated_download_is_retried(toy_server: _Server, tmp_path: Path) -> None:
    toy_server.plan = ["truncated"]
    root = download_beir("toy", tmp_path / "cache", retries=1, progress=False)
    assert (root / "queries.jsonl").is_file() and toy_server.requests == 2


def test_persistent_corruption_is_reported_and_nothing_is_used(toy_server: _Server, tmp_path: Path) -> None:
    toy_server.plan = ["corrupt", "corrupt"]
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"after 2 attempt\(s\): .*md5 \w+ does not match the published"):
        download_beir("toy", cache, retries=1, progress=False)
    assert not (cache / "toy").exists() and not list(cache.glob("toy.zip*"))
    toy_server.plan = ["truncated"]
    with pytest.raises(DataError, match=r"incomplete|broke off"):
        download_beir("toy", cache, retries=0, progress=False)
    assert not (cache / "toy").exists()


def test_unreachable_server_is_reported(toy_server: _Server, tmp_path: Path) -> None:
    toy_server.plan = ["missing", "missing"]
    with pytest.raises(DataError, match=r"cannot download http://127\.0\.0\.1:\d+/toy\.zip: HTTP Error 404"):
        download_beir("toy", tmp_path / "cache", retries=1, progress=False)


def test_unknown_split_of_a_named_dataset_fails_before_downloading(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TASKRANK_BEIR_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(
        DataError, match=r"'scifact': unknown split 'dev'; valid splits: train, test .*dev_split"
    ):
        load_beir("scifact", split="dev", cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_prefilled_cache_needs_no_server(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(BEIR_DATASETS, "toy", BeirSpec("toy", "0" * 32, ("test",)))
    monkeypatch.setenv("TASKRANK_BEIR_URL", "http://127.0.0.1:9")  # nothing listens there
    cache = tmp_path / "cache"
    make_beir(cache / "toy" / "toy")
    (cache / "toy" / ".taskrank-complete").write_text("0" * 32 + "\n", encoding="utf-8")
    assert load_beir("toy", cache_dir=cache).name == "toy"


def test_half_extracted_cache_is_not_used(toy_server: _Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    make_beir(cache / "toy")  # a folder without the completion marker, e.g. copied by hand mid-way
    (cache / "toy" / "corpus.jsonl").write_text("{broken\n", encoding="utf-8")
    ds = load_beir("toy", cache_dir=cache, progress=False)
    assert len(ds.corpus) == 3 and toy_server.requests == 1


def test_not_a_zip_is_reported(tmp_path: Path, monkeypatch) -> None:
    payload = b"<html>maintenance</html>"
    monkeypatch.setitem(BEIR_DATASETS, "toy", BeirSpec("toy", hashlib.md5(payload).hexdigest(), ("test",)))
    server = _Server(payload)
    try:
        with pytest.raises(DataError, match=r"toy\.zip\.part: not a valid zip archive"):
            download_beir("toy", tmp_path / "cache", base_url=server.url, progress=False)
    finally:
        server.close()
    assert not (tmp_path / "cache" / "toy").exists() and not list((tmp_path / "cache").iterdir())
