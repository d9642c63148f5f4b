"""Where taskrank keeps what it can always recompute (BEIR downloads, BM25 indexes, file hashes)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$TASKRANK_CACHE`` if set, else ``~/.cache/taskrank``."""
    root = os.environ.get("TASKRANK_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "taskrank"
